"""The ClickHouse client never reuses a connection the server may already have closed.

ClickHouse closes an idle HTTP connection after its keep_alive_timeout; a request sent on it
at that moment fails with "Server disconnected" (a rebuild that idled while replaying hit it).
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

from pydantic import SecretStr

from promo_libs.clickhouse.client import ClickHouse
from promo_libs.config import ClickHouseSettings

LOCAL_SERVER_CONFIG = Path(__file__).parents[3] / "tools/devstack/clickhouse/config.xml"


def server_keep_alive_seconds() -> float:
    timeout = ElementTree.parse(LOCAL_SERVER_CONFIG).getroot().findtext("keep_alive_timeout")
    assert timeout is not None, f"{LOCAL_SERVER_CONFIG} sets no keep_alive_timeout"
    return float(timeout)


def test_default_idle_reuse_is_shorter_than_the_servers_keep_alive() -> None:
    assert (
        ClickHouseSettings(
            clickhouse_user="u", clickhouse_password=SecretStr("p")
        ).clickhouse_keepalive_seconds
        < server_keep_alive_seconds()
    )


async def test_the_client_session_applies_the_configured_idle_reuse() -> None:
    clickhouse = ClickHouse(
        ClickHouseSettings(
            clickhouse_user="u",
            clickhouse_password=SecretStr("p"),
            clickhouse_keepalive_seconds=1.5,
        )
    )
    clickhouse.connect()
    try:
        session = clickhouse._session
        assert session is not None
        assert session.connector is not None
        assert session.connector._keepalive_timeout == 1.5
    finally:
        await clickhouse.close()
