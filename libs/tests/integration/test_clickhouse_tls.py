"""The ClickHouse client over HTTPS (CLICKHOUSE_SECURE, CLICKHOUSE_TLS_CA_FILE), against a real
local ClickHouse serving HTTPS with a development CA's certificate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from pydantic import SecretStr, ValidationError

from devstack.pki import DevPki
from devstack.servers import ClickHouseServer
from promo_libs.clickhouse.client import ClickHouse
from promo_libs.config import ClickHouseSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return DevPki(tmp_path_factory.mktemp("clickhouse-tls-pki"))


@pytest.fixture(scope="module")
def server(pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    clickhouse = ClickHouseServer(
        tmp_path_factory.mktemp("clickhouse-tls"),
        None,
        name="clickhouse-tls",
        tls=pki.files("clickhouse"),
    )
    clickhouse.start()
    try:
        yield clickhouse
    finally:
        clickhouse.stop()


def _settings(
    port: int | None, ca: Path | None, secure: bool = True, password: str = ""
) -> ClickHouseSettings:
    assert port is not None
    return ClickHouseSettings(
        clickhouse_host="127.0.0.1",
        clickhouse_port=port,
        clickhouse_user=ClickHouseServer.ADMIN,
        clickhouse_password=SecretStr(password),
        clickhouse_secure=secure,
        clickhouse_tls_ca_file=ca,
    )


async def test_queries_go_over_https_to_a_server_of_the_trusted_ca(
    server: ClickHouseServer, pki: DevPki
) -> None:
    clickhouse = ClickHouse(
        _settings(server.https_port, pki.ca_file, password=server.password(server.ADMIN))
    )
    assert clickhouse.url.startswith("https://")
    clickhouse.connect()
    try:
        assert await clickhouse.client.fetchval("SELECT 1 + 1") == 2
    finally:
        await clickhouse.close()


async def test_a_server_of_another_ca_is_not_trusted(
    server: ClickHouseServer, tmp_path: Path
) -> None:
    other = DevPki(tmp_path / "other").files("clickhouse").ca
    clickhouse = ClickHouse(
        _settings(server.https_port, other, password=server.password(server.ADMIN))
    )
    clickhouse.connect()
    try:
        assert await clickhouse.ping() is False
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await clickhouse.client.fetchval("SELECT 1")
    finally:
        await clickhouse.close()


def test_a_ca_file_without_https_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="CLICKHOUSE_SECURE is false"):
        _settings(8123, tmp_path / "ca.pem", secure=False)
