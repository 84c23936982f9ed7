"""Issue 13: no MongoDB or ClickHouse credential has a default. A process whose environment
omits one refuses to start naming the variable. REDIS_PASSWORD alone may be unset (a schema
command's settings, which never reach Redis); empty or unset, it means no authentication."""

from __future__ import annotations

import pytest

from promo_libs.config import (
    ClickHouseSettings,
    MongoSettings,
    RedisSettings,
    load_settings,
)


@pytest.fixture(autouse=True)
def _no_credentials_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MONGODB_URI", "REDIS_PASSWORD", "CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("settings", "variables"),
    [
        (MongoSettings, ["MONGODB_URI"]),
        (ClickHouseSettings, ["CLICKHOUSE_USER", "CLICKHOUSE_PASSWORD"]),
    ],
)
def test_a_missing_credential_stops_the_process_naming_it(
    settings: type[MongoSettings | RedisSettings | ClickHouseSettings],
    variables: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MONGODB_DB_NAME", "promo_users")
    with pytest.raises(SystemExit):
        load_settings(settings)
    message = capsys.readouterr().err
    for variable in variables:
        assert f"{variable}: Field required" in message


def test_an_explicitly_empty_redis_password_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "")
    assert load_settings(RedisSettings).redis_password is None
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
    password = load_settings(RedisSettings).redis_password
    assert password is not None and password.get_secret_value() == "s3cret"


def test_the_clickhouse_user_may_not_be_empty(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CLICKHOUSE_USER", "")
    monkeypatch.setenv("CLICKHOUSE_PASSWORD", "x")
    with pytest.raises(SystemExit):
        load_settings(ClickHouseSettings)
    assert "CLICKHOUSE_USER: String should have at least 1 character" in capsys.readouterr().err
