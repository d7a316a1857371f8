package dev.auditlog.opensearch;

import java.util.Collection;

import org.opensearch.common.settings.Settings;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

/**
 * A {@link Node} that loads plugins from the classpath instead of from
 * {@code $path.home/modules} and {@code $path.home/plugins} (the same pattern as
 * the security plugin's test {@code PluginAwareNode} and the test framework's MockNode).
 */
final class DevNode extends Node {

    DevNode(Settings settings, Collection<Class<? extends Plugin>> classpathPlugins) {
        super(
            InternalSettingsPreparer.prepareEnvironment(settings, java.util.Collections.emptyMap(), null, () -> "audit-dev-node"),
            classpathPlugins,
            // forbidPrivateIndexSettings: true, as for a production node
            true
        );
    }
}
