import pytest

from auditlog.search_query import QuerySyntaxError, parse_query


def test_free_text_and_qualifiers_are_separated() -> None:
    parsed = parse_query(
        'invoice "credit note" -draft action:DELETE,update severity>=ERROR resource:db'
    )
    assert parsed.text == 'invoice "credit note" -draft'
    assert parsed.clauses == [
        {"terms": {"action_type": ["DELETE", "UPDATE"]}},
        {"range": {"severity_rank": {"gte": 2}}},
        {
            "bool": {
                "should": [{"term": {"resource_type": "db"}}, {"term": {"resource_id": "db"}}],
                "minimum_should_match": 1,
            }
        },
    ]


def test_dates_mean_whole_days_and_instants_mean_instants() -> None:
    day = parse_query("created:2024-05-01").clauses[0]["range"]["created_at"]
    assert day == {"gte": "2024-05-01T00:00:00.000000Z", "lt": "2024-05-02T00:00:00.000000Z"}
    after = parse_query("created>2024-05-01").clauses[0]["range"]["created_at"]
    assert after == {"gte": "2024-05-02T00:00:00.000000Z"}
    instant = parse_query("occurred<2024-05-01T12:00:00+02:00").clauses[0]["range"]["occurred_at"]
    assert instant == {"lt": "2024-05-01T10:00:00.000000Z"}


def test_json_paths_users_and_networks() -> None:
    parsed = parse_query(
        'metadata.request.path:"/a b" user:6f0c5a52-93a1-4a39-9a4e-2f0f0c1d2e3f ip:10.1.2.3'
    )
    assert parsed.clauses == [
        {"term": {"metadata.request.path": "/a b"}},
        {"term": {"user_id": "6f0c5a52-93a1-4a39-9a4e-2f0f0c1d2e3f"}},
        {"term": {"ip_address": "10.1.2.3/32"}},
    ]
    assert parsed.text == ""


@pytest.mark.parametrize(
    ("q", "message"),
    [
        ("colour:red", "unknown qualifier 'colour'"),
        ("action:ERASE", "action: unknown ERASE"),
        ("severity>=LOUD", "severity: unknown"),
        ("user:bob", "not a UUID"),
        ("ip:999.1.1.1", "not an address"),
        ("created>=yesterday", "created_at"),
        ('"unbalanced', "unbalanced"),
        ("resource>x", "only takes ':'"),
        ("x" * 1001, "longer than"),
    ],
)
def test_bad_syntax_names_the_problem(q: str, message: str) -> None:
    with pytest.raises(QuerySyntaxError, match=message):
        parse_query(q)
