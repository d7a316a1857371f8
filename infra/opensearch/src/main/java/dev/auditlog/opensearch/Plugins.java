package dev.auditlog.opensearch;

import java.util.List;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.index.mapper.MapperExtrasPlugin;
import org.opensearch.index.reindex.ReindexPlugin;
import org.opensearch.painless.PainlessPlugin;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/** The modules loaded from the classpath (a real distribution loads these from $OPENSEARCH_HOME/modules). */
final class Plugins {

    private Plugins() {}

    static final List<Class<? extends Plugin>> CLASSPATH_PLUGINS = List.of(
        Netty4Plugin.class,          // transport-netty4: real HTTP (REST) + transport over Netty 4
        CommonAnalysisPlugin.class,  // analysis-common: lowercase/asciifolding filters, pattern, ngram, normalizers, ...
        PainlessPlugin.class,        // lang-painless: script queries, scripted updates, runtime sort/aggs scripts
        ReindexPlugin.class,         // reindex: _reindex, _delete_by_query, _update_by_query
        MapperExtrasPlugin.class     // mapper-extras: scaled_float, rank_feature(s), search_as_you_type, token_count
    );
}
