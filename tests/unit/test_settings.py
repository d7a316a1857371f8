import re
from pathlib import Path

import pytest

from auditlog.settings import DEFAULTS, Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_defaults_point_at_the_local_stack() -> None:
    settings = Settings.from_env({})
    assert settings.database_url.startswith("postgresql://auditlog@127.0.0.1:55432/")
    assert settings.aws_endpoint_url_sqs == "http://127.0.0.1:9324"


def test_values_are_converted_and_empty_means_default() -> None:
    settings = Settings.from_env(
        {"DRAIN_BATCH_SIZE": "50", "DRAIN_IDLE_SECONDS": "2.5", "SQS_QUEUE_NAME": ""}
    )
    assert settings.drain_batch_size == 50
    assert settings.drain_idle_seconds == 2.5
    assert settings.sqs_queue_name == "audit-events"


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="DRAIN_BATCH_SIZE"):
        Settings.from_env({"DRAIN_BATCH_SIZE": "many"})


def test_every_field_has_a_default_entry_and_a_readme_row() -> None:
    names = {name.upper() for name in Settings.__dataclass_fields__}
    assert names == set(DEFAULTS)
    documented = set(re.findall(r"^\| `([A-Z0-9_]+)` \|", README.read_text(), re.MULTILINE))
    assert names <= documented, f"README lacks {sorted(names - documented)}"
