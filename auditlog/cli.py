"""``auditlog``: operator commands (migrations, dev tokens, tenants, chain verification)."""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from auditlog.settings import Settings


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from auditlog.store.migrate import migrate

    applied = migrate(settings.database_url)
    print(f"applied {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.tokens import mint_token

    print(
        mint_token(
            settings, tenant_id=args.tenant, role=args.role, subject=args.sub, ttl_seconds=args.ttl
        )
    )
    return 0


def _create_tenant(settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.store.pool import connect
    from auditlog.tenants import create_tenant

    with connect(settings.database_url) as conn:
        tenant = create_tenant(
            conn, name=args.name, status=args.status, retention_days=args.retention_days
        )
        conn.commit()
    print(json.dumps(tenant, default=str))
    return 0


def _verify(settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.store.pool import connect
    from auditlog.verify import verify_tenant_chain

    with connect(settings.database_url) as conn:
        result = verify_tenant_chain(conn, uuid.UUID(args.tenant), args.from_seq, args.to_seq)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


def _verify_export(_settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.offline_verify import verify_files

    report = verify_files(args.events, args.digests, args.public_key)
    print(json.dumps(report.as_dict(), indent=2))
    return 0 if report.ok else 1


def _digest_public_key(settings: Settings, _args: argparse.Namespace) -> int:
    from auditlog.digests import key_id, load_signing_key, public_key_pem

    public = load_signing_key(settings.digest_signing_key).public_key()
    print(f"# key_id {key_id(public)}")
    print(public_key_pem(public), end="")
    return 0


def _redrive(settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.queue import EventQueue

    moved = EventQueue.from_settings(settings).redrive_dead_letters(args.limit)
    print(
        f"moved {moved} message(s) from {settings.sqs_dlq_name} back to {settings.sqs_queue_name}"
    )
    return 0


def _drain(settings: Settings, args: argparse.Namespace) -> int:
    from auditlog.drain import Drainer
    from auditlog.logs import configure_logging
    from auditlog.queue import EventQueue

    configure_logging(settings.log_level)
    drainer = Drainer(
        EventQueue.from_settings(settings),
        settings.database_url,
        args.batch_size,
        settings.drain_batch_events,
    )
    stats = drainer.run(args.seconds, args.idle_seconds)
    print(
        json.dumps(
            {
                "stored": stats.stored,
                "duplicates": stats.duplicates,
                "messages": stats.messages,
                "rejected_messages": stats.rejected_messages,
                "batches": stats.batches,
            }
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auditlog", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(func=_migrate)

    token = sub.add_parser("token", help="print a development JWT")
    token.add_argument("--tenant", help="tenant id (omit for a platform admin)")
    token.add_argument("--role", default="user")
    token.add_argument("--sub", default="dev")
    token.add_argument("--ttl", type=int, default=24 * 3600, help="lifetime in seconds")
    token.set_defaults(func=_token)

    tenant = sub.add_parser("create-tenant", help="create a tenant directly in the database")
    tenant.add_argument("name")
    tenant.add_argument("--status", default="active", choices=["active", "inactive", "suspended"])
    tenant.add_argument("--retention-days", type=int, default=365)
    tenant.set_defaults(func=_create_tenant)

    verify = sub.add_parser("verify", help="verify a tenant's hash chain; exit 1 on a break")
    verify.add_argument("--tenant", required=True)
    verify.add_argument("--from-seq", type=int, default=1)
    verify.add_argument("--to-seq", type=int, default=None)
    verify.set_defaults(func=_verify)

    offline = sub.add_parser(
        "verify-export",
        help="verify exported/archived events against signed digests, offline; exit 1 on a problem",
    )
    offline.add_argument(
        "--events", type=Path, nargs="+", required=True, help="NDJSON/Parquet files or directories"
    )
    offline.add_argument(
        "--digests", type=Path, nargs="+", required=True, help="digest .json files or directories"
    )
    offline.add_argument(
        "--public-key", type=Path, nargs="+", required=True, help="Ed25519 public key .pem files"
    )
    offline.set_defaults(func=_verify_export)

    sub.add_parser(
        "digest-public-key", help="print the public key of DIGEST_SIGNING_KEY (PEM) for verifiers"
    ).set_defaults(func=_digest_public_key)

    drain = sub.add_parser(
        "drain", help="drain the queue into PostgreSQL without Dagster (operators, tests)"
    )
    drain.add_argument("--seconds", type=float, default=60, help="time budget")
    drain.add_argument(
        "--idle-seconds", type=float, default=10, help="stop after the queue was empty this long"
    )
    drain.add_argument("--batch-size", type=int, default=500)
    drain.set_defaults(func=_drain)

    redrive = sub.add_parser(
        "redrive-dead-letters", help="move dead letters back to the events queue"
    )
    redrive.add_argument("--limit", type=int, default=None, help="at most this many messages")
    redrive.set_defaults(func=_redrive)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    return int(args.func(settings, args))


if __name__ == "__main__":
    sys.exit(main())
