#!/usr/bin/env python3
"""Smoke test for a running dev node (stdlib only).

usage: python3 infra/opensearch/smoke_test.py [http://127.0.0.1:9200]

Creates an index template and a throw-away index `smoke-audit-*`, exercises the
features the audit log platform relies on, deletes what it created, and exits
non-zero on the first failed check.
"""
import json
import sys
import urllib.error
import urllib.request

BASE = (sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:9200").rstrip("/")
INDEX = "smoke-audit-2026.11"
passed = 0


def req(method, path, body=None, ndjson=False, ok=(200, 201)):
    data = None
    headers = {}
    if body is not None:
        if ndjson:
            data = ("\n".join(json.dumps(line) for line in body) + "\n").encode()
            headers["Content-Type"] = "application/x-ndjson"
        else:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
    r = urllib.request.Request(BASE + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            status, payload = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, payload = e.code, e.read()
    out = json.loads(payload) if payload else {}
    if ok and status not in ok:
        raise AssertionError(f"{method} {path} -> {status}: {payload[:500]!r}")
    return status, out


def check(name, cond, detail=""):
    global passed
    if not cond:
        print(f"FAIL {name} {detail}")
        sys.exit(1)
    passed += 1
    print(f"ok   {name}")


def ids(resp):
    return sorted(h["_id"] for h in resp["hits"]["hits"])


def search(body, path=f"/{INDEX}/_search"):
    return req("POST", path, body)[1]


_, root = req("GET", "/")
check("version 2.19.6", root["version"]["number"] == "2.19.6", root["version"])

req("DELETE", "/smoke-audit-*", ok=None)
_, r = req("PUT", "/_index_template/smoke-audit", {
    "index_patterns": ["smoke-audit-*"],
    "template": {
        "settings": {
            "number_of_shards": 1,
            "analysis": {
                "normalizer": {"lc": {"type": "custom", "filter": ["lowercase", "asciifolding"]}},
                "analyzer": {"msg": {"type": "custom", "tokenizer": "standard",
                                     "filter": ["word_delimiter_graph", "lowercase"]}},
            },
        },
        "mappings": {
            "_routing": {"required": True},
            "properties": {
                "tenant_id": {"type": "keyword"},
                "actor": {"type": "keyword", "normalizer": "lc"},
                "action": {"type": "keyword"},
                "message": {"type": "text", "analyzer": "standard",
                            "fields": {"parts": {"type": "text", "analyzer": "msg"}}},
                "source_ip": {"type": "ip"},
                "ts": {"type": "date"},
                "attrs": {"type": "flat_object"},
                "risk": {"type": "scaled_float", "scaling_factor": 100},
            },
        },
    },
})
check("index template", r.get("acknowledged") is True)

req("PUT", f"/{INDEX}/_doc/e1?routing=t1&refresh=true", {
    "tenant_id": "t1", "actor": "Alice@Example.COM", "action": "user.login",
    "message": "User alice logged in from VPN", "source_ip": "10.1.2.3",
    "ts": "2026-11-27T10:00:00Z", "attrs": {"device": {"os": "linux"}, "mfa": "true"}, "risk": 0.25})
req("PUT", f"/{INDEX}/_doc/e2?routing=t2&refresh=true", {
    "tenant_id": "t2", "actor": "bob", "action": "doc.delete",
    "message": "Deleted document quarterly-report", "source_ip": "2001:db8::1",
    "ts": "2026-11-27T11:00:00Z", "attrs": {"doc": {"id": "42"}}, "risk": 0.9})
status, _ = req("PUT", f"/{INDEX}/_doc/e3", {"tenant_id": "t1"}, ok=None)
check("_routing required is enforced", status == 400, status)

_, settings = req("GET", f"/{INDEX}/_settings")
check("0 replicas by default", settings[INDEX]["settings"]["index"]["number_of_replicas"] == "0")

_, r = req("POST", "/_bulk?refresh=true", [
    {"index": {"_index": INDEX, "_id": "b1", "routing": "t1"}},
    {"tenant_id": "t1", "actor": "carol", "action": "user.logout", "message": "logout",
     "source_ip": "10.1.2.4", "ts": "2026-11-27T12:00:00Z", "attrs": {"device": {"os": "macos"}}},
    {"index": {"_index": INDEX, "_id": "b2", "routing": "t1"}},
    {"tenant_id": "t1", "actor": "dave", "action": "user.login", "message": "login-failed wrongPassword",
     "source_ip": "192.168.0.9", "ts": "2026-11-27T13:00:00Z"},
], ndjson=True)
check("_bulk", r["errors"] is False and len(r["items"]) == 2)

r = search({"query": {"bool": {"filter": [{"term": {"tenant_id": "t1"}}],
                               "must": [{"match": {"message": "logged"}}]}}}, f"/{INDEX}/_search?routing=t1")
check("match query (routed)", ids(r) == ["e1"], ids(r))
check("match query (custom analyzer)", ids(search({"query": {"match": {"message.parts": "password"}}})) == ["b2"])
check("term query", ids(search({"query": {"term": {"action": "user.login"}}})) == ["b2", "e1"])
check("term on normalized keyword", ids(search({"query": {"term": {"actor": "ALICE@example.com"}}})) == ["e1"])
check("ip CIDR (v4)", ids(search({"query": {"term": {"source_ip": "10.1.0.0/16"}}})) == ["b1", "e1"])
check("ip CIDR (v6)", ids(search({"query": {"term": {"source_ip": "2001:db8::/32"}}})) == ["e2"])
check("flat_object dotted path", ids(search({"query": {"term": {"attrs.device.os": "linux"}}})) == ["e1"])
check("flat_object root", ids(search({"query": {"match": {"attrs": "macos"}}})) == ["b1"])
check("scaled_float range (mapper-extras)", ids(search({"query": {"range": {"risk": {"gte": 0.5}}}})) == ["e2"])

r = search({"size": 0, "aggs": {"t": {"terms": {"field": "tenant_id"}}}})
check("terms aggregation", {b["key"]: b["doc_count"] for b in r["aggregations"]["t"]["buckets"]} == {"t1": 3, "t2": 1})

_, r = req("POST", "/_analyze", {"analyzer": "standard", "text": "User Alice-Smith logged IN"})
check("standard analyzer", [t["token"] for t in r["tokens"]] == ["user", "alice", "smith", "logged", "in"])
_, r = req("POST", "/_analyze", {"tokenizer": "keyword", "filter": ["lowercase", "asciifolding"], "text": "Ålice@Example.COM"})
check("keyword tokenizer + lowercase/asciifolding (analysis-common)", [t["token"] for t in r["tokens"]] == ["alice@example.com"])
_, r = req("POST", f"/{INDEX}/_analyze", {"normalizer": "lc", "text": "Ålice@Example.COM"})
check("custom normalizer", [t["token"] for t in r["tokens"]] == ["alice@example.com"])

r = search({"query": {"script": {"script": {"source": "doc['tenant_id'].value == params.t", "params": {"t": "t2"}}}}})
check("painless script query", ids(r) == ["e2"])
_, r = req("POST", f"/{INDEX}/_delete_by_query?routing=t2&refresh=true", {"query": {"term": {"tenant_id": "t2"}}})
check("_delete_by_query (reindex)", r["deleted"] == 1, r)
_, r = req("GET", f"/{INDEX}/_count")
check("count after delete", r["count"] == 3, r)

req("DELETE", f"/{INDEX}")
req("DELETE", "/_index_template/smoke-audit")
print(f"{passed} passed, 0 failed")
