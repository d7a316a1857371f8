package auditlog.elasticmq;

/**
 * Thin wrapper around {@code org.elasticmq.server.Main}.
 *
 * <p>ElasticMQ's own Main lets startup failures (most importantly "Address already in
 * use" on the SQS port) escape from the main thread while Pekko's non-daemon threads keep
 * the JVM alive with no listener. A supervisor polling the port could then be answered by
 * whatever else holds it. This launcher exits with status 1 instead, so a failed start is
 * visible as a dead process.
 *
 * <p>All configuration is ElasticMQ's: {@code -Dconfig.file=...} plus optional system
 * property overrides (see README.md).
 */
public final class Launcher {
    private Launcher() {}

    public static void main(String[] args) {
        try {
            org.elasticmq.server.Main.main(args);
        } catch (Throwable t) {
            System.err.println("elasticmq: startup failed: " + t);
            t.printStackTrace();
            System.err.flush();
            Runtime.getRuntime().halt(1);
        }
    }
}
