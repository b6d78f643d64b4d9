"""Settings validation, rich error round trips, the file clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from services.common.clock import FileClock
from services.common.errors import (
    Failure,
    InvalidArgument,
    RuleRefusal,
    error_info,
    failures_from_status,
    field_violations,
)
from services.common.settings import SettingsError, async_url, load_settings
from services.common.validation import Fields

TOKEN = "t" * 20


def test_settings_refuse_a_missing_internal_credential() -> None:
    with pytest.raises(SettingsError, match="QUN_INTERNAL_TOKEN"):
        load_settings("groups", env={})


@pytest.mark.parametrize(
    "env",
    [
        {"QUN_GRPC_PORT": "http"},
        {"QUN_GRPC_PORT": "70000"},
        {"QUN_LOG_LEVEL": "LOUD"},
        {"QUN_DB_POOL_SIZE": "0"},
        {"QUN_DB_POOL_SIZE": "101"},
    ],
)
def test_settings_refuse_malformed_values(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        load_settings("groups", env={"QUN_INTERNAL_TOKEN": TOKEN, **env})


def test_settings_default_to_sqlite_in_the_data_folder() -> None:
    settings = load_settings("groups", env={"QUN_INTERNAL_TOKEN": TOKEN, "QUN_DATA_DIR": "var"})
    assert settings.database_url == "sqlite+aiosqlite:///var/groups.db"
    assert settings.grpc_addr == "127.0.0.1:50053"
    assert settings.db_pool_size == 10
    assert load_settings("groups", env={"QUN_INTERNAL_TOKEN": TOKEN, "QUN_DB_POOL_SIZE": "4"}).db_pool_size == 4
    assert async_url("postgresql://h:5432/db") == "postgresql+asyncpg://h:5432/db"


def test_a_refusal_carries_every_rule_and_figure_through_the_status() -> None:
    refusal = RuleRefusal(
        [
            Failure("C1", "NOT_REAL_NAME_VERIFIED", "not real-name verified"),
            Failure("C2", "TAOQI_SCORE_TOO_LOW", "淘气值 350 < 401", {"taoqi_score": "350", "required": "401"}),
        ],
        code=grpc.StatusCode.FAILED_PRECONDITION,
    )
    status = refusal.to_status()
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    failures = failures_from_status(status)
    assert [f.rule_id for f in failures] == ["C1", "C2"]
    assert failures[1].figures == {"taoqi_score": "350", "required": "401"}
    info = error_info(status)
    assert info is not None and info.metadata["rules"] == "C1,C2"


def test_invalid_argument_names_every_field() -> None:
    fields = Fields()
    fields.identifier("group_set_id", "")
    fields.identifier("consumer_id", "has spaces")
    fields.text("name", "x" * 100, max_chars=64)
    fields.enum("kind", 7, grpc_enum())
    with pytest.raises(InvalidArgument) as bad:
        fields.done()
    named = [v.field for v in field_violations(bad.value.to_status())]
    assert named == ["group_set_id", "consumer_id", "name", "kind"]


def grpc_enum():  # type: ignore[no-untyped-def]
    from qun.common.v1 import groups_pb2

    return groups_pb2.GroupKind


def test_file_clock_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "clock"
    start = datetime(2026, 8, 22, 10, tzinfo=UTC)
    FileClock.write(path, start)
    clock = FileClock(path)
    assert clock.now() == start
    FileClock.write(path, start + timedelta(days=2))
    assert clock.now() == start + timedelta(days=2)


def test_timestamps_out_of_range_are_invalid_arguments() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    fields = Fields()
    assert fields.instant("at", Timestamp(seconds=-1)) is None
    assert fields.instant("at", Timestamp(seconds=2**62)) is None
    assert fields.instant("at", None) is None
    assert fields.instant("ok", Timestamp(seconds=1_700_000_000)) == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert [v.field for v in fields.violations] == ["at", "at", "at"]
