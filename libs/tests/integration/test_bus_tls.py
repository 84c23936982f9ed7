"""The bus client over TLS and as an ACL user (RedisSettings' REDIS_TLS* and REDIS_USERNAME),
against a real TLS-only redis-server that requires client certificates."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.exceptions
from pydantic import SecretStr, ValidationError

from devstack.pki import DevPki
from devstack.servers import RedisServer
from promo_libs.bus import RedisClient, RedisStreamPublisher, dedupe_key, redis_client
from promo_libs.config import RedisSettings, TlsPaths
from promo_libs.outbox import OutboxEntry

pytestmark = pytest.mark.integration

ACL_PASSWORD = "bus acl password 1"  # in the pytest plugin's SECRETS_USED


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return DevPki(tmp_path_factory.mktemp("bus-tls-pki"))


@pytest.fixture(scope="module")
def server(pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    tls = RedisServer(
        tmp_path_factory.mktemp("bus-tls"), None, name="redis-tls", tls=pki.files("redis")
    )
    tls.start()
    try:
        yield tls
    finally:
        tls.stop()


def settings(server: RedisServer, client: TlsPaths | None, **more: object) -> RedisSettings:
    files = {}
    if client is not None:
        files = {"redis_tls_cert_file": client.cert, "redis_tls_key_file": client.key}
    # The test's own server: TLS client certificates, and no password unless `more` says.
    more = {"redis_password": None, **more}
    return RedisSettings(
        redis_host="127.0.0.1",
        redis_port=server.port,
        redis_tls=True,
        redis_tls_ca_file=server.tls.ca if server.tls else None,
        **files,
        **more,  # type: ignore[arg-type]
    )


@pytest.fixture
async def admin(server: RedisServer, pki: DevPki) -> AsyncIterator[RedisClient]:
    client = redis_client(settings(server, pki.files("operator")))
    yield client
    await client.aclose()


async def test_a_client_with_a_certificate_of_the_ca_talks_tls(admin: RedisClient) -> None:
    assert await admin.ping()
    stream = f"promo.events.tls.{uuid.uuid4().hex[:6]}"
    await RedisStreamPublisher(admin).publish(
        [OutboxEntry("e-1", "promo.v1.UserCreated", stream, b"payload")]
    )
    ((_, fields),) = await admin.xrange(stream)
    assert fields[b"event_id"] == b"e-1"


async def test_plaintext_and_certificate_less_clients_are_refused(
    server: RedisServer, pki: DevPki, tmp_path: Path
) -> None:
    plain = redis_client(
        RedisSettings(redis_host="127.0.0.1", redis_port=server.port, redis_password=None)
    )
    no_certificate = redis_client(settings(server, None))
    other_ca = DevPki(tmp_path / "other")  # trusts another CA: the server is not verified
    impostor = redis_client(
        RedisSettings(
            redis_host="127.0.0.1",
            redis_port=server.port,
            redis_password=None,
            redis_tls=True,
            redis_tls_ca_file=other_ca.files("operator").ca,
            redis_tls_cert_file=other_ca.files("operator").cert,
            redis_tls_key_file=other_ca.files("operator").key,
        )
    )
    for client in (plain, no_certificate, impostor):
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.ping()
        await client.aclose()


async def test_an_acl_user_reaches_its_own_stream_only(
    server: RedisServer, pki: DevPki, admin: RedisClient
) -> None:
    """REDIS_USERNAME and REDIS_PASSWORD log in as an ACL user: publishing to its stream works
    (the publish-once script's commands on its keys), another stream is refused."""
    name = f"producer-{uuid.uuid4().hex[:6]}"
    stream = f"promo.events.{name}"
    await admin.execute_command(
        "ACL", "SETUSER", name, "on", f">{ACL_PASSWORD}", "resetkeys",
        f"~{stream}", f"~{dedupe_key(stream, '')}*",
        "-@all", "+ping", "+evalsha", "+eval", "+script|load", "+set", "+xadd",
    )  # fmt: skip
    producer = redis_client(
        settings(
            server,
            pki.files("users"),
            redis_username=name,
            redis_password=SecretStr(ACL_PASSWORD),
        )
    )
    try:
        publisher = RedisStreamPublisher(producer)
        await publisher.publish([OutboxEntry("e-1", "promo.v1.UserCreated", stream, b"x")])
        assert await admin.xlen(stream) == 1
        with pytest.raises(redis.exceptions.NoPermissionError):
            await producer.xadd("promo.events.orders", {"event_id": "forged"})
        assert await admin.xlen("promo.events.orders") == 0
    finally:
        await producer.aclose()
        await admin.execute_command("ACL", "DELUSER", name)


def test_tls_files_without_tls_are_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="REDIS_TLS is false"):
        RedisSettings(redis_password=None, redis_tls_ca_file=tmp_path / "ca.pem")
    with pytest.raises(ValidationError, match="go together"):
        RedisSettings(redis_password=None, redis_tls=True, redis_tls_cert_file=tmp_path / "tls.crt")


async def test_a_client_certificate_replaced_on_disk_is_used_for_the_next_connection(
    server: RedisServer, pki: DevPki, tmp_path: Path
) -> None:
    """Rotation without restart: a pooled connection that reconnects reads the files again.
    Proven both ways: replaced by another CA's certificate, the reconnect is refused; put back,
    it succeeds (redis-py alone keeps a connection's first TLS context for good)."""
    good = pki.files("operator")
    other = DevPki(tmp_path / "other").files("operator")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"

    def install(files: TlsPaths) -> None:
        for source, target in ((files.cert, cert), (files.key, key)):
            staged = target.with_suffix(".new")
            staged.write_bytes(source.read_bytes())
            staged.replace(target)  # as an issuing agent does: a rename

    install(good)
    client = redis_client(settings(server, None, redis_tls_cert_file=cert, redis_tls_key_file=key))
    try:
        assert await client.ping()
        install(other)
        await client.connection_pool.disconnect()
        with pytest.raises(redis.exceptions.ConnectionError):
            await client.ping()
        install(good)
        await client.connection_pool.disconnect()
        assert await client.ping()
    finally:
        await client.aclose()
