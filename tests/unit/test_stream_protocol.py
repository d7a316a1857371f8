"""The live tail's pure logic: parameters, filters, close reasons, per-socket buffers."""

from __future__ import annotations

import json
import uuid

import pytest

from api.stream.hub import LiveEvent, Subscriber
from api.stream.protocol import (
    MAX_REASON_BYTES,
    CloseCode,
    StreamRefused,
    close_reason,
    event_message,
    heartbeat_message,
    matches,
    parse_request,
)

TENANT = uuid.uuid4()


def live(seq: int, tenant: uuid.UUID = TENANT) -> LiveEvent:
    return LiveEvent(tenant, seq, "CREATE", "INFO", "doc", f'{{"seq": {seq}}}'.encode())


def refused(args: dict[str, list[str]]) -> StreamRefused:
    with pytest.raises(StreamRefused) as info:
        parse_request(args)
    return info.value


def test_no_parameters_means_live_from_now_unfiltered() -> None:
    wanted = parse_request({})
    assert wanted.since_seq is None
    assert matches(wanted.filters, "DELETE", "CRITICAL", "anything")


def test_filters_and_since_seq_are_read() -> None:
    wanted = parse_request(
        {
            "since_seq": ["42"],
            "action_type": ["DELETE,UPDATE"],
            "min_severity": ["ERROR"],
            "resource_type": ["invoice"],
            "token": ["t"],
        }
    )
    assert wanted.since_seq == 42
    assert matches(wanted.filters, "DELETE", "CRITICAL", "invoice")
    assert matches(wanted.filters, "UPDATE", "ERROR", "invoice")
    assert not matches(wanted.filters, "CREATE", "CRITICAL", "invoice")
    assert not matches(wanted.filters, "DELETE", "WARNING", "invoice")
    assert not matches(wanted.filters, "DELETE", "ERROR", "doc")


def test_exact_severities_combine_with_the_minimum() -> None:
    wanted = parse_request({"severity": ["INFO", "CRITICAL"], "min_severity": ["WARNING"]})
    assert wanted.filters.severities == ["CRITICAL"]


def test_tenant_id_is_a_policy_refusal() -> None:
    problem = refused({"tenant_id": [str(TENANT)]})
    assert problem.code == CloseCode.POLICY == 1008
    assert "tenant_id" in problem.reason


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"since_seq": ["-1"]}, "since_seq"),
        ({"since_seq": ["1.5"]}, "since_seq"),
        ({"since_seq": ["١٢"]}, "since_seq"),  # Arabic-Indic digits are not accepted
        ({"since_seq": [str(2**63)]}, "since_seq"),
        ({"since_seq": ["9" * 5000]}, "since_seq"),  # past int()'s digit limit
        ({"since_seq": ["1_0"]}, "since_seq"),
        ({"since_seq": ["1", "2"]}, "since_seq"),
        ({"min_severity": ["LOUD"]}, "min_severity"),
        ({"severity": ["LOUD"]}, "severity"),
        ({"action_type": ["EXPLODE"]}, "action_type"),
        ({"resource_type": ["x" * 300]}, "resource_type"),
        ({"limit": ["5"]}, "limit"),
    ],
)
def test_a_bad_parameter_is_named_in_a_4400_reason(args: dict[str, list[str]], field: str) -> None:
    problem = refused(args)
    assert problem.code == CloseCode.BAD_PARAMETER == 4400
    assert problem.reason.startswith(f"{field}: ")
    assert len(problem.reason.encode()) <= MAX_REASON_BYTES


def test_close_reasons_fit_a_control_frame_without_splitting_characters() -> None:
    assert close_reason("short") == "short"
    cut = close_reason("é" * 200)
    assert len(cut.encode()) <= MAX_REASON_BYTES
    assert cut.endswith("...")
    assert set(cut[:-3]) == {"é"}


def test_an_event_with_an_integer_past_64_bits_is_sent_exactly() -> None:
    """Events keep such integers exact (PostgreSQL's jsonb does); orjson cannot write them.
    Once, one such event failed every backlog of its tenant's sockets, and the hub's
    listener with it (other tenants' sockets too)."""
    message = event_message({"seq": 1, "metadata": {"n": 2**64, "s": "\ud800"}})
    assert json.loads(message) == {
        "type": "event",
        "seq": 1,
        "metadata": {"n": 2**64, "s": "\ud800"},
    }
    message.encode("utf-8")  # a lone surrogate goes as an escape, not as a broken character


def test_heartbeat_names_the_last_seq() -> None:
    beat = json.loads(heartbeat_message(17))
    assert (beat["type"], beat["last_seq"]) == ("heartbeat", 17)


def test_a_subscriber_hands_over_what_was_offered_in_order() -> None:
    subscriber = Subscriber(TENANT, max_buffered=10)
    for seq in (1, 2, 3):
        subscriber.offer(live(seq))
    assert [e.seq for e in subscriber.take(0)] == [1, 2, 3]
    assert subscriber.take(0) == []


def test_a_subscriber_ignores_other_tenants() -> None:
    subscriber = Subscriber(TENANT, max_buffered=10)
    subscriber.offer(live(1, tenant=uuid.uuid4()))
    assert subscriber.take(0) == []


def test_an_overflow_drops_the_buffer_until_the_session_resumes_it() -> None:
    subscriber = Subscriber(TENANT, max_buffered=2)
    for seq in (1, 2, 3):
        subscriber.offer(live(seq))
    assert subscriber.lagging
    assert subscriber.take(0) == []  # dropped: the events are in PostgreSQL
    subscriber.offer(live(4))  # not buffered while lagging
    assert subscriber.resume_after_lag()
    assert not subscriber.resume_after_lag()
    subscriber.offer(live(5))
    assert [e.seq for e in subscriber.take(0)] == [5]


def test_the_buffer_never_holds_more_than_its_bound() -> None:
    subscriber = Subscriber(TENANT, max_buffered=3)
    sizes = []
    for seq in range(1, 100):
        subscriber.offer(live(seq))
        sizes.append(subscriber.buffered)
    assert max(sizes) == 3
    assert subscriber.buffered == 0
