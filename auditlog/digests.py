"""Signed integrity digests: per tenant and UTC day, a small document that pins the tenant's
hash chain so an exported or archived range can be checked offline, without the database.

A digest says: the tenant's events ``from_seq``..``to_seq`` (``count`` of them) end in the
chain head ``head_hash``, and the tenant's previous digest hashed to ``prev_digest_hash``
(32 zero bytes for the first). Its *message* is the compact JSON of those fields with sorted
keys; ``digest_hash`` is SHA-256 of the message, and the message is signed with Ed25519.
Because each digest commits to the previous one's hash, dropping or editing a digest in the
middle of a tenant's sequence breaks the next link; editing one breaks its signature.

Ranges follow seq (commit order), not created_at: a day's digest covers every event after
the previous digest up to the highest seq accepted before the day ended (see
``digest_range_end`` in ``store/digests.sql``). Ranges are therefore contiguous and cover each
event exactly once, even when an event of the day is drained after its digest was made.

Keys: ``DIGEST_SIGNING_KEY`` holds the private key (base64 of the 32-byte seed, or PKCS#8
PEM). ``key_id`` (16 hex digits of SHA-256 of the raw public key) names the key in each
digest, so keys can be rotated and verifiers hold several public keys.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import date
from importlib.resources import files
from typing import TYPE_CHECKING, Any, LiteralString

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditlog.parquet_dataset import day_bounds
from auditlog.store.queries import parse_named_sql
from auditlog.verify import verify_tenant_chain

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

DIGEST_VERSION = 1
GENESIS_DIGEST_HASH = bytes(32)
DIGESTS_PREFIX = "digests"
PUBLIC_KEYS_PREFIX = f"{DIGESTS_PREFIX}/public-keys"
# The fields the signature covers, in the document as in the message.
SIGNED_FIELDS = (
    "version",
    "tenant_id",
    "day",
    "from_seq",
    "to_seq",
    "count",
    "head_hash",
    "prev_digest_hash",
    "key_id",
)

_QUERIES: dict[str, LiteralString] = {}


def _sql(name: str) -> LiteralString:
    if not _QUERIES:
        text = files("auditlog.store").joinpath("digests.sql").read_text(encoding="utf-8")
        _QUERIES.update(parse_named_sql(text))
    return _QUERIES[name]


class DigestKeyError(ValueError):
    """The configured signing key or a given public key cannot be read."""


# --- keys -----------------------------------------------------------------------------------


def load_signing_key(text: str) -> Ed25519PrivateKey:
    """The Ed25519 private key from ``DIGEST_SIGNING_KEY``: PKCS#8 PEM, or base64 of the
    32-byte seed (what the local stack generates)."""
    text = text.strip()
    if not text:
        raise DigestKeyError("DIGEST_SIGNING_KEY is not set (see README: integrity digests)")
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise DigestKeyError("DIGEST_SIGNING_KEY is a PEM key, but not an Ed25519 one")
        return key
    try:
        seed = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise DigestKeyError("DIGEST_SIGNING_KEY is neither PEM nor base64") from None
    if len(seed) != 32:
        raise DigestKeyError(f"DIGEST_SIGNING_KEY decodes to {len(seed)} bytes, not 32")
    return Ed25519PrivateKey.from_private_bytes(seed)


def load_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key as PEM (SubjectPublicKeyInfo; lines before it, such as the
    ``# key_id`` comment ``auditlog digest-public-key`` prints, are skipped) or base64 of its
    32 raw bytes."""
    text = text.strip()
    if "-----BEGIN" in text:
        key = serialization.load_pem_public_key(text[text.index("-----BEGIN") :].encode())
        if not isinstance(key, Ed25519PublicKey):
            raise DigestKeyError("the public key is PEM, but not an Ed25519 key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError):
        raise DigestKeyError("a public key must be PEM or base64 of 32 bytes") from None


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


# --- the document ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Digest:
    tenant_id: uuid.UUID
    day: date
    from_seq: int
    to_seq: int
    count: int
    head_hash: bytes
    prev_digest_hash: bytes
    key_id: str

    def fields(self) -> dict[str, Any]:
        return {
            "version": DIGEST_VERSION,
            "tenant_id": str(self.tenant_id),
            "day": self.day.isoformat(),
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
            "count": self.count,
            "head_hash": self.head_hash.hex(),
            "prev_digest_hash": self.prev_digest_hash.hex(),
            "key_id": self.key_id,
        }

    def message(self) -> bytes:
        """The bytes that are hashed and signed."""
        return message_of(self.fields())

    def digest_hash(self) -> bytes:
        return hashlib.sha256(self.message()).digest()


def message_of(fields: dict[str, Any]) -> bytes:
    signed = {name: fields[name] for name in SIGNED_FIELDS}
    return json.dumps(signed, sort_keys=True, separators=(",", ":")).encode("ascii")


@dataclass(frozen=True)
class SignedDigest:
    digest: Digest
    signature: bytes

    def document(self) -> dict[str, Any]:
        """The JSON document written to S3 (and read back by the offline verifier)."""
        return {
            **self.digest.fields(),
            "digest_hash": self.digest.digest_hash().hex(),
            "signature": base64.b64encode(self.signature).decode(),
        }

    def document_bytes(self) -> bytes:
        return (json.dumps(self.document(), indent=2, sort_keys=True) + "\n").encode()


def sign(digest: Digest, key: Ed25519PrivateKey) -> SignedDigest:
    # Ed25519 signatures are deterministic: signing the same digest again gives the same bytes.
    return SignedDigest(digest, key.sign(digest.message()))


def digest_key(tenant_id: uuid.UUID, day: date) -> str:
    """Hive-style like the Parquet datasets: ``digests/tenant=<id>/date=<day>/digest.json``."""
    return f"{DIGESTS_PREFIX}/tenant={tenant_id}/date={day.isoformat()}/digest.json"


def public_key_object_key(kid: str) -> str:
    return f"{PUBLIC_KEYS_PREFIX}/{kid}.pem"


# --- making digests from the database -------------------------------------------------------


@dataclass(frozen=True)
class DayOutcome:
    """What happened for one tenant on one day: a new digest, or why there is none."""

    tenant_id: uuid.UUID
    day: date
    status: str  # "signed", "exists", "superseded", "no_new_events", "chain_broken"
    digest: SignedDigest | None = None
    detail: str = ""


def make_tenant_digest(
    conn: psycopg.Connection[Any],
    s3: S3Client,
    bucket: str,
    signing_key: Ed25519PrivateKey,
    tenant_id: uuid.UUID,
    day: date,
) -> DayOutcome:
    """Make, sign, store (S3, then the table) the tenant's digest for ``day``; in the caller's
    transaction. A day already digested (or passed by a later digest) is left as it is:
    digests are evidence, never rewritten. The range's chain is verified before it is
    signed, so a digest never vouches for a broken chain."""
    params: dict[str, Any] = {"tenant_id": tenant_id, "day": day}
    later = conn.execute(_sql("digest_on_or_after"), params).fetchone()
    if later is not None:
        status = "exists" if later[0] == day else "superseded"
        return DayOutcome(tenant_id, day, status, detail=f"digest of {later[0]} exists")
    previous = conn.execute(_sql("latest_digest_before"), params).fetchone()
    after_seq = int(previous[2]) if previous else 0
    prev_digest_hash = bytes(previous[6]) if previous else GENESIS_DIGEST_HASH
    _, end = day_bounds(day)
    row = conn.execute(
        _sql("digest_range_end"), {"tenant_id": tenant_id, "end": end, "after_seq": after_seq}
    ).fetchone()
    if row is None or row[0] is None:
        return DayOutcome(tenant_id, day, "no_new_events")
    to_seq = int(row[0])
    stats = conn.execute(
        _sql("digest_range_stats"),
        {"tenant_id": tenant_id, "after_seq": after_seq, "to_seq": to_seq},
    ).fetchone()
    assert stats is not None
    from_seq, count = int(stats[0]), int(stats[1])
    # Nested in the caller's transaction (a savepoint), it reads the same snapshot.
    check = verify_tenant_chain(conn, tenant_id, from_seq, to_seq)
    if not check["ok"] or check["events_checked"] != count:
        return DayOutcome(tenant_id, day, "chain_broken", detail=json.dumps(check["first_break"]))
    head = conn.execute(
        _sql("digest_head_hash"), {"tenant_id": tenant_id, "seq": to_seq}
    ).fetchone()
    assert head is not None
    public = signing_key.public_key()
    digest = Digest(
        tenant_id=tenant_id,
        day=day,
        from_seq=from_seq,
        to_seq=to_seq,
        count=count,
        head_hash=bytes(head[0]),
        prev_digest_hash=prev_digest_hash,
        key_id=key_id(public),
    )
    signed = sign(digest, signing_key)
    key = digest_key(tenant_id, day)
    # S3 first: if the insert below fails, a retry makes the same bytes again (deterministic
    # signature, same snapshot of rows) and overwrites the object with itself.
    s3.put_object(
        Bucket=bucket, Key=key, Body=signed.document_bytes(), ContentType="application/json"
    )
    conn.execute(
        _sql("insert_digest"),
        {
            "tenant_id": tenant_id,
            "from_seq": from_seq,
            "to_seq": to_seq,
            "day": day,
            "event_count": count,
            "head_hash": digest.head_hash,
            "prev_digest_hash": prev_digest_hash,
            "digest_hash": digest.digest_hash(),
            "key_id": digest.key_id,
            "signature": signed.signature,
            "s3_key": key,
        },
    )
    return DayOutcome(tenant_id, day, "signed", signed)


def publish_public_key(s3: S3Client, bucket: str, key: Ed25519PublicKey) -> str:
    """Put the public key beside the digests (``digests/public-keys/<key id>.pem``), so a
    verifier who has the bucket has what it needs; returns the object key."""
    object_key = public_key_object_key(key_id(key))
    s3.put_object(
        Bucket=bucket,
        Key=object_key,
        Body=public_key_pem(key).encode(),
        ContentType="application/x-pem-file",
    )
    return object_key


def digest_tenants(conn: psycopg.Connection[Any]) -> list[uuid.UUID]:
    return [uuid.UUID(str(r[0])) for r in conn.execute(_sql("digest_tenants")).fetchall()]


def stored_digests(conn: psycopg.Connection[Any], tenant_id: uuid.UUID) -> list[SignedDigest]:
    """The tenant's digests as the table holds them, oldest first."""
    rows = conn.execute(_sql("digests_of_tenant"), {"tenant_id": tenant_id}).fetchall()
    return [
        SignedDigest(
            Digest(
                tenant_id=tenant_id,
                day=day,
                from_seq=int(from_seq),
                to_seq=int(to_seq),
                count=int(count),
                head_hash=bytes(head),
                prev_digest_hash=bytes(prev),
                key_id=kid,
            ),
            bytes(signature),
        )
        for day, from_seq, to_seq, count, head, prev, _hash, kid, signature, _key in rows
    ]


def stored_event_hash(
    conn: psycopg.Connection[Any], tenant_id: uuid.UUID, seq: int
) -> bytes | None:
    """The stored hash of the tenant's event ``seq``; None once retention removed it."""
    row = conn.execute(_sql("digest_head_hash"), {"tenant_id": tenant_id, "seq": seq}).fetchone()
    return None if row is None else bytes(row[0])


def signature_valid(fields: dict[str, Any], signature: bytes, key: Ed25519PublicKey) -> bool:
    try:
        key.verify(signature, message_of(fields))
    except InvalidSignature:
        return False
    return True
