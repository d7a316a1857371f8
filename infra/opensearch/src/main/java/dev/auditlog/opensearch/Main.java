package dev.auditlog.opensearch;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.Version;
import org.opensearch.cluster.health.ClusterHealthStatus;
import org.opensearch.common.settings.Settings;
import org.opensearch.common.unit.TimeValue;
import org.opensearch.core.common.transport.TransportAddress;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

/**
 * Starts a single-node OpenSearch for local development and CI.
 *
 * <pre>
 * java -Xms512m -Xmx1g -cp 'target/lib/*:target/classes' dev.auditlog.opensearch.Main \
 *     [--data-dir DIR] [--http-port PORT] [--transport-port PORT] [-E key=value ...]
 * </pre>
 *
 * Defaults can also come from system properties {@code audit.opensearch.dataDir},
 * {@code audit.opensearch.httpPort}, {@code audit.opensearch.transportPort}.
 * Prints {@code OPENSEARCH_READY ...} on stdout once the HTTP port accepts requests;
 * exits cleanly on SIGTERM/SIGINT.
 */
public final class Main {

    private Main() {}

    public static void main(String[] args) throws Exception {
        String dataDir = System.getProperty(
            "audit.opensearch.dataDir",
            Path.of(System.getProperty("java.io.tmpdir"), "audit-dev-opensearch").toString()
        );
        int httpPort = Integer.parseInt(System.getProperty("audit.opensearch.httpPort", "9200"));
        Integer transportPort = null;
        if (System.getProperty("audit.opensearch.transportPort") != null) {
            transportPort = Integer.parseInt(System.getProperty("audit.opensearch.transportPort"));
        }
        Map<String, String> extra = new LinkedHashMap<>();

        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("-h") || a.equals("--help")) {
                usage();
                return;
            } else if (a.equals("--data-dir")) {
                dataDir = need(args, ++i, a);
            } else if (a.startsWith("--data-dir=")) {
                dataDir = a.substring("--data-dir=".length());
            } else if (a.equals("--http-port")) {
                httpPort = Integer.parseInt(need(args, ++i, a));
            } else if (a.startsWith("--http-port=")) {
                httpPort = Integer.parseInt(a.substring("--http-port=".length()));
            } else if (a.equals("--transport-port")) {
                transportPort = Integer.parseInt(need(args, ++i, a));
            } else if (a.startsWith("--transport-port=")) {
                transportPort = Integer.parseInt(a.substring("--transport-port=".length()));
            } else if (a.equals("-E")) {
                putSetting(extra, need(args, ++i, a));
            } else if (a.startsWith("-E")) {
                putSetting(extra, a.substring(2));
            } else {
                System.err.println("unknown argument: " + a);
                usage();
                System.exit(2);
            }
        }
        if (transportPort == null) {
            transportPort = httpPort + 100;
        }

        Path home = Path.of(dataDir).toAbsolutePath().normalize();
        Path data = home.resolve("data");
        Path logs = home.resolve("logs");
        for (Path p : List.of(home, data, logs, home.resolve("config"), home.resolve("plugins"), home.resolve("modules"))) {
            Files.createDirectories(p);
        }

        Settings.Builder settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", data.toString())
            .put("path.logs", logs.toString())
            .put("cluster.name", "audit-dev")
            .put("node.name", "audit-dev-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", transportPort)
            .put("discovery.type", "single-node")
            // dev/CI disks may be nearly full: never block allocation or set indices read-only
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            // one node: replicas can never be assigned, so default to 0 to keep health green
            .put("cluster.default_number_of_replicas", 0) // see also the cluster-settings update after start()
            .put("action.auto_create_index", true)
            // modest caches for a 1 GiB heap
            .put("indices.queries.cache.size", "5%")
            .put("indices.fielddata.cache.size", "10%");
        extra.forEach(settings::put);

        List<Class<? extends Plugin>> plugins = new ArrayList<>(Plugins.CLASSPATH_PLUGINS);

        long t0 = System.nanoTime();
        Node node = new DevNode(settings.build(), plugins);
        CountDownLatch stopped = new CountDownLatch(1);
        Thread hook = new Thread(() -> {
            System.out.println("OPENSEARCH_STOPPING");
            System.out.flush();
            try {
                node.close();
                if (!node.awaitClose(30, TimeUnit.SECONDS)) {
                    System.err.println("node did not close within 30s");
                }
            } catch (IOException | InterruptedException e) {
                e.printStackTrace();
            } finally {
                System.out.println("OPENSEARCH_STOPPED");
                System.out.flush();
                stopped.countDown();
            }
        }, "opensearch-shutdown");
        Runtime.getRuntime().addShutdownHook(hook);

        ClusterHealthStatus health;
        try {
            node.start();
            // cluster.default_number_of_replicas is only honoured as a cluster (persistent) setting, not as a
            // node setting, so apply it through the API; 0 replicas keeps a one-node cluster green.
            String replicas = extra.getOrDefault("cluster.default_number_of_replicas", "0");
            node.client().admin().cluster().prepareUpdateSettings()
                .setPersistentSettings(Settings.builder().put("cluster.default_number_of_replicas", replicas))
                .get(TimeValue.timeValueSeconds(30));
            // on a restart with existing indices, wait until their primaries are recovered
            health = node.client().admin().cluster().prepareHealth()
                .setWaitForYellowStatus()
                .setTimeout(TimeValue.timeValueSeconds(60))
                .get()
                .getStatus();
        } catch (Throwable t) {
            System.err.println("OPENSEARCH_FAILED " + t);
            t.printStackTrace();
            Runtime.getRuntime().removeShutdownHook(hook);
            try {
                node.close();
            } catch (Throwable ignored) {
                // already failing
            }
            System.exit(1);
            return;
        }

        TransportAddress http = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress();
        long ms = (System.nanoTime() - t0) / 1_000_000;
        System.out.println(
            "OPENSEARCH_READY url=http://" + http.getAddress() + ":" + http.getPort()
                + " version=" + Version.CURRENT + " cluster=audit-dev health=" + health.name().toLowerCase(java.util.Locale.ROOT)
                + " data=" + home + " startup_ms=" + ms
        );
        System.out.flush();

        // OpenSearch's own threads are daemons: keep the JVM alive until the shutdown hook ran.
        stopped.await();
    }

    private static void putSetting(Map<String, String> extra, String kv) {
        int eq = kv.indexOf('=');
        if (eq <= 0) {
            throw new IllegalArgumentException("expected -E key=value, got: " + kv);
        }
        extra.put(kv.substring(0, eq), kv.substring(eq + 1));
    }

    private static String need(String[] args, int i, String opt) {
        if (i >= args.length) {
            throw new IllegalArgumentException(opt + " needs a value");
        }
        return args[i];
    }

    private static void usage() {
        System.out.println(
            "usage: dev.auditlog.opensearch.Main [--data-dir DIR (java.io.tmpdir/audit-dev-opensearch)] [--http-port PORT (9200)]"
                + " [--transport-port PORT (http+100)] [-E setting=value ...]"
        );
    }
}
