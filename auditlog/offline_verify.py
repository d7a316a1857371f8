"""Offline verification of exported or archived events against signed integrity digests,
with no database: only the event files (NDJSON from ``GET /api/v1/logs/export?format=ndjson``
or the Parquet datasets under ``exports/``/``archive/``), the digest documents and the public
key(s).

For each event the verifier renders the hashed fields exactly as PostgreSQL's
``audit_canonical_fields`` does (``jsonb_text`` below reproduces jsonb's text form), then
recomputes the chain link with ``auditlog.chain.link_hash``. It checks that consecutive
events link, that each digest is signed by a known key and chains to the one before it, and
that the events a digest covers end in its ``head_hash`` and number its ``count``. Every
problem names the event (tenant, seq, id, file) or the digest file it was found in.

What it cannot see: an erased (redacted) field verifies only through the digest kept for it,
and the API's export carries no ``redacted`` column, so a redacted event is reported as not
matching its hash; and a tenant's *newest* digests removed together leave no trace in the
files that remain (compare with the ``integrity_digests`` table or the S3 listing).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from auditlog.chain import link_hash
from auditlog.digests import (
    GENESIS_DIGEST_HASH,
    SIGNED_FIELDS,
    key_id,
    load_public_key,
    message_of,
    signature_valid,
)
from auditlog.events import RECORD_FIELDS, format_time

JSON_FIELDS = frozenset({"before_state", "after_state", "metadata"})
TIME_FIELDS = frozenset({"created_at", "occurred_at"})
EVENT_SUFFIXES = (".ndjson", ".jsonl", ".parquet")


# --- PostgreSQL's renderings ----------------------------------------------------------------


def jsonb_text(value: Any) -> str:
    """``value::jsonb::text`` for a value read back from it: keys by length then bytes,
    ``", "`` and ``": "`` separators, numbers in positional notation (jsonb keeps numerics,
    which never print an exponent), strings escaped as PostgreSQL's ``escape_json`` does
    (which is what ``json.dumps(..., ensure_ascii=False)`` does)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # repr is the shortest text that reads back as this float, i.e. the digits the
        # platform stored (its JSON came from Python); jsonb printed them positionally.
        return format(Decimal(repr(value)), "f")
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(jsonb_text(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        items = (f"{json.dumps(k, ensure_ascii=False)}: {jsonb_text(value[k])}" for k in keys)
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _time_text(value: Any) -> str:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_time(moment)


def rendered_fields(record: Mapping[str, Any], *, json_as_text: bool) -> list[str | None]:
    """An exported record's hashed fields as ``audit_canonical_fields`` renders them.
    ``json_as_text``: the JSON columns hold JSON text (Parquet) rather than values (NDJSON)."""
    out: list[str | None] = []
    for name in RECORD_FIELDS:
        value = record.get(name)
        if value is None:
            out.append(None)
        elif name in TIME_FIELDS:
            out.append(_time_text(value))
        elif name in JSON_FIELDS:
            out.append(jsonb_text(json.loads(value) if json_as_text else value))
        else:
            out.append(str(value))
    return out


# --- reading inputs -------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedEvent:
    tenant_id: str
    seq: int
    id: str
    prev_hash: bytes
    hash: bytes
    rendered: list[str | None]
    redacted: dict[str, str] | None
    source: str


def _files(paths: Iterable[Path], suffixes: tuple[str, ...]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes)
        else:
            yield path


def _event(record: Mapping[str, Any], source: str, *, json_as_text: bool) -> ExportedEvent:
    redacted = record.get("redacted")
    if isinstance(redacted, str):
        redacted = json.loads(redacted)
    return ExportedEvent(
        tenant_id=str(record["tenant_id"]),
        seq=int(record["seq"]),
        id=str(record["id"]),
        prev_hash=bytes.fromhex(str(record["prev_hash"])),
        hash=bytes.fromhex(str(record["hash"])),
        rendered=rendered_fields(record, json_as_text=json_as_text),
        redacted=redacted or None,
        source=source,
    )


def read_events(paths: Iterable[Path]) -> Iterator[ExportedEvent]:
    """Events from NDJSON and Parquet files (directories are searched for both)."""
    for path in _files(paths, EVENT_SUFFIXES):
        if path.suffix == ".parquet":
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches():
                for record in batch.to_pylist():
                    yield _event(record, str(path), json_as_text=True)
        else:
            # Records end at "\n" only: U+2028 and friends may stand unescaped in JSON text.
            with path.open(encoding="utf-8", newline="\n") as lines:
                for number, line in enumerate(lines, 1):
                    if line.strip():
                        yield _event(json.loads(line), f"{path}:{number}", json_as_text=False)


@dataclass(frozen=True)
class DigestFile:
    fields: dict[str, Any]
    signature: bytes
    source: str

    @property
    def tenant_id(self) -> str:
        return str(self.fields["tenant_id"])

    @property
    def from_seq(self) -> int:
        return int(self.fields["from_seq"])

    @property
    def to_seq(self) -> int:
        return int(self.fields["to_seq"])

    def digest_hash(self) -> bytes:
        return hashlib.sha256(message_of(self.fields)).digest()


def read_digests(paths: Iterable[Path]) -> tuple[list[DigestFile], list[Problem]]:
    found: list[DigestFile] = []
    problems: list[Problem] = []
    for path in _files(paths, (".json",)):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            missing = [name for name in SIGNED_FIELDS if name not in doc]
            if missing:
                raise ValueError(f"lacks {', '.join(missing)}")
            signature = base64.b64decode(doc["signature"], validate=True)
        except (ValueError, KeyError, binascii.Error) as exc:
            problems.append(
                Problem("digest", None, f"not a digest document: {exc}", file=str(path))
            )
            continue
        found.append(DigestFile({n: doc[n] for n in SIGNED_FIELDS}, signature, str(path)))
    return found, problems


def read_public_keys(paths: Iterable[Path]) -> dict[str, Ed25519PublicKey]:
    keys = [load_public_key(path.read_text()) for path in _files(paths, (".pem", ".pub"))]
    return {key_id(k): k for k in keys}


# --- the report -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: str  # "event" or "digest"
    tenant_id: str | None
    reason: str
    seq: int | None = None
    event_id: str | None = None
    file: str | None = None


@dataclass
class OfflineReport:
    events_checked: int = 0
    digests_checked: int = 0
    digests_fully_covered: int = 0
    events_outside_digests: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events_checked": self.events_checked,
            "digests_checked": self.digests_checked,
            "digests_fully_covered": self.digests_fully_covered,
            "events_outside_digests": self.events_outside_digests,
            "problems": [
                {k: v for k, v in asdict(p).items() if v is not None} for p in self.problems
            ],
            "notes": self.notes,
        }


# --- verification ---------------------------------------------------------------------------


def _check_events(
    tenant: str, events: list[ExportedEvent], report: OfflineReport
) -> dict[int, ExportedEvent]:
    """Each event's hash and its link to the event before (when that one is present)."""
    by_seq: dict[int, ExportedEvent] = {}
    for event in sorted(events, key=lambda e: e.seq):
        report.events_checked += 1
        if event.seq in by_seq:
            report.problems.append(
                Problem("event", tenant, "seq appears twice", event.seq, event.id, event.source)
            )
            continue
        by_seq[event.seq] = event
        if link_hash(event.prev_hash, event.rendered, event.seq, event.redacted) != event.hash:
            report.problems.append(
                Problem(
                    "event",
                    tenant,
                    "fields do not match the event's hash (the event was altered)",
                    event.seq,
                    event.id,
                    event.source,
                )
            )
        before = by_seq.get(event.seq - 1)
        if before is not None and before.hash != event.prev_hash:
            report.problems.append(
                Problem(
                    "event",
                    tenant,
                    f"prev_hash does not match the hash of seq {before.seq} ({before.id})",
                    event.seq,
                    event.id,
                    event.source,
                )
            )
    return by_seq


def _signed_digests(
    digests: list[DigestFile], keys: Mapping[str, Ed25519PublicKey], report: OfflineReport
) -> list[DigestFile]:
    valid: list[DigestFile] = []
    for digest in digests:
        report.digests_checked += 1
        key = keys.get(str(digest.fields["key_id"]))
        if key is None:
            reason = f"signed with key {digest.fields['key_id']}, which is not among the given keys"
        elif not signature_valid(digest.fields, digest.signature, key):
            reason = "signature does not match its fields (the digest was altered)"
        else:
            valid.append(digest)
            continue
        report.problems.append(Problem("digest", digest.tenant_id, reason, file=digest.source))
    return valid


def _check_digest_chain(tenant: str, digests: list[DigestFile], report: OfflineReport) -> None:
    first = digests[0]
    if bytes.fromhex(str(first.fields["prev_digest_hash"])) != GENESIS_DIGEST_HASH:
        report.notes.append(
            f"tenant {tenant}: the first digest given ({first.source}) follows an earlier one "
            "that was not given; checked from there"
        )
    for before, after in pairwise(digests):
        linked = bytes.fromhex(str(after.fields["prev_digest_hash"])) == before.digest_hash()
        if not linked or after.from_seq != before.to_seq + 1:
            report.problems.append(
                Problem(
                    "digest",
                    tenant,
                    f"does not chain to the digest of {before.fields['day']} ({before.source}): "
                    "a digest between them is missing, or one of them was altered",
                    file=after.source,
                )
            )


def _check_coverage(
    tenant: str,
    digests: list[DigestFile],
    by_seq: Mapping[int, ExportedEvent],
    report: OfflineReport,
) -> None:
    covered: set[int] = set()
    previous: DigestFile | None = None
    for digest in digests:
        span = range(digest.from_seq, digest.to_seq + 1)
        present = [s for s in span if s in by_seq]
        covered.update(present)
        head = by_seq.get(digest.to_seq)
        if head is not None and head.hash.hex() != digest.fields["head_hash"]:
            report.problems.append(
                Problem(
                    "digest",
                    tenant,
                    f"head_hash differs from the hash of seq {digest.to_seq} ({head.id}, "
                    f"{head.source}): the events up to it were altered",
                    seq=digest.to_seq,
                    file=digest.source,
                )
            )
        if len(present) == len(span):
            report.digests_fully_covered += 1
            if int(digest.fields["count"]) != len(span):
                report.problems.append(
                    Problem(
                        "digest",
                        tenant,
                        f"count {digest.fields['count']} but {len(span)} events in its range",
                        file=digest.source,
                    )
                )
            first = by_seq[digest.from_seq]
            if (
                previous is not None
                and previous.to_seq == digest.from_seq - 1
                and first.prev_hash.hex() != previous.fields["head_hash"]
            ):
                report.problems.append(
                    Problem(
                        "event",
                        tenant,
                        f"prev_hash does not match the head_hash of the digest of "
                        f"{previous.fields['day']}",
                        first.seq,
                        first.id,
                        first.source,
                    )
                )
        elif present:
            missing = len(span) - len(present)
            report.notes.append(
                f"tenant {tenant}: {digest.source} covers seq {digest.from_seq}..{digest.to_seq}; "
                f"{missing} of them are not in the given events"
            )
        previous = digest
    report.events_outside_digests += len(set(by_seq) - covered)


def verify_offline(
    events: Iterable[ExportedEvent],
    digests: list[DigestFile],
    keys: Mapping[str, Ed25519PublicKey],
    report: OfflineReport | None = None,
) -> OfflineReport:
    report = report or OfflineReport()
    events_by_tenant: dict[str, list[ExportedEvent]] = defaultdict(list)
    for event in events:
        events_by_tenant[event.tenant_id].append(event)
    digests_by_tenant: dict[str, list[DigestFile]] = defaultdict(list)
    for digest in _signed_digests(digests, keys, report):
        digests_by_tenant[digest.tenant_id].append(digest)
    for tenant in sorted(set(events_by_tenant) | set(digests_by_tenant)):
        by_seq = _check_events(tenant, events_by_tenant.get(tenant, []), report)
        chain = sorted(digests_by_tenant.get(tenant, []), key=lambda d: (d.from_seq, d.to_seq))
        if chain:
            _check_digest_chain(tenant, chain, report)
            _check_coverage(tenant, chain, by_seq, report)
        else:
            report.events_outside_digests += len(by_seq)
    return report


def verify_files(
    event_paths: Iterable[Path], digest_paths: Iterable[Path], key_paths: Iterable[Path]
) -> OfflineReport:
    """The CLI's entry point: read everything, verify, report."""
    digests, problems = read_digests(digest_paths)
    report = OfflineReport(problems=problems)
    return verify_offline(read_events(event_paths), digests, read_public_keys(key_paths), report)
