"""``integrity_digests``: per tenant and UTC day, a signed digest of the tenant's hash chain,
written to S3 (``digests/tenant=<id>/date=<day>/digest.json``) and kept in the
``integrity_digests`` table; ``auditlog verify-export`` checks exports against them offline.

Daily partitions, not hourly: they line up with the daily ``audit_logs`` partitions, the
Parquet exports and the archive (``tenant=…/date=…``), so one digest vouches for one
exported or archived day-object, and a year is 365 small documents per tenant. Only complete
days are offered (the newest partition is yesterday). A backfill runs as one run over its
range (``BackfillPolicy.single_run``) and takes the days in order, because each digest
chains from the one before.
"""

import uuid
from collections import Counter
from datetime import date
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)
from pydantic import Field

from assets.events import audit_events
from assets.partitions import DAYS
from auditlog.digests import (
    DayOutcome,
    digest_tenants,
    key_id,
    load_signing_key,
    make_tenant_digest,
    publish_public_key,
    signature_valid,
    stored_digests,
    stored_event_hash,
)
from auditlog.parquet_dataset import make_s3_client
from auditlog.store.pool import connect
from pipelines.resources import AuditPlatform

DIGEST_DAYS = DAYS


class DigestConfig(Config):
    """Run configuration: ``tenants`` limits a run to these tenant ids (default: every
    tenant), e.g. to digest one tenant again after fixing a broken chain."""

    tenants: list[str] = Field(default_factory=list)


@asset(
    group_name="integrity",
    deps=[audit_events],
    partitions_def=DIGEST_DAYS,
    backfill_policy=BackfillPolicy.single_run(),
    description="Signed (Ed25519) per-tenant digests of each day's hash chain: seq range, "
    "count, head hash and the previous digest's hash, in S3 and in integrity_digests. "
    "Verify exports offline with `auditlog verify-export`.",
    kinds={"s3", "postgres"},
)
def integrity_digests(
    context: AssetExecutionContext, config: DigestConfig, platform: AuditPlatform
) -> MaterializeResult:
    settings = platform.settings()
    signing_key = load_signing_key(settings.digest_signing_key)
    s3 = make_s3_client(settings)
    public_key_object = publish_public_key(s3, settings.s3_bucket, signing_key.public_key())
    days = sorted(date.fromisoformat(key) for key in context.partition_keys)
    outcomes: list[DayOutcome] = []
    only = {uuid.UUID(t) for t in config.tenants}
    with connect(settings.database_url, autocommit=True) as conn:
        for day in days:
            for tenant_id in digest_tenants(conn):
                if only and tenant_id not in only:
                    continue
                with conn.transaction():
                    outcome = make_tenant_digest(
                        conn, s3, settings.s3_bucket, signing_key, tenant_id, day
                    )
                outcomes.append(outcome)
    signed = [o for o in outcomes if o.digest is not None]
    broken = [o for o in outcomes if o.status == "chain_broken"]
    for outcome in signed:
        digest = outcome.digest
        assert digest is not None
        context.log.info(
            f"signed {outcome.tenant_id} {outcome.day}: seq {digest.digest.from_seq}.."
            f"{digest.digest.to_seq} ({digest.digest.count} events)"
        )
    metadata: dict[str, MetadataValue[Any]] = {
        "days": MetadataValue.text(", ".join(d.isoformat() for d in days)),
        "digests_signed": MetadataValue.int(len(signed)),
        "events_covered": MetadataValue.int(sum(o.digest.digest.count for o in signed if o.digest)),
        "outcomes": MetadataValue.json(dict(Counter(o.status for o in outcomes))),
        "key_id": MetadataValue.text(key_id(signing_key.public_key())),
        "public_key": MetadataValue.path(f"s3://{settings.s3_bucket}/{public_key_object}"),
    }
    if broken:
        # The good tenants' digests are committed; the run fails so the alert sensor tells
        # someone that a chain no longer verifies.
        raise Failure(
            description="refused to sign a broken chain for "
            + ", ".join(f"{o.tenant_id} ({o.day}): {o.detail}" for o in broken),
            metadata=metadata,
        )
    return MaterializeResult(metadata=metadata)


@asset_check(
    asset=integrity_digests,
    description="Every stored digest is signed by the current key, chains to the one before, "
    "and its head_hash still equals the stored event's hash (where retention kept it).",
)
def digests_consistent(platform: AuditPlatform) -> AssetCheckResult:
    settings = platform.settings()
    public = load_signing_key(settings.digest_signing_key).public_key()
    current = key_id(public)
    problems: list[str] = []
    checked = 0
    with connect(settings.database_url, autocommit=True) as conn:
        for tenant_id in digest_tenants(conn):
            previous_hash: bytes | None = None
            for signed in stored_digests(conn, tenant_id):
                checked += 1
                digest = signed.digest
                where = f"{tenant_id} {digest.day}"
                if digest.key_id == current and not signature_valid(
                    digest.fields(), signed.signature, public
                ):
                    problems.append(f"{where}: bad signature")
                if previous_hash is not None and digest.prev_digest_hash != previous_hash:
                    problems.append(f"{where}: does not chain to the digest before")
                previous_hash = digest.digest_hash()
                stored = stored_event_hash(conn, tenant_id, digest.to_seq)
                if stored is not None and stored != digest.head_hash:
                    problems.append(f"{where}: seq {digest.to_seq} no longer has the head hash")
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        metadata={"digests_checked": checked, "problems": MetadataValue.text("\n".join(problems))},
    )
