"""A client certificate rotated on disk is presented by the next call, on the same channel and
stub, without a restart (issue 13; promo_libs.grpc.rotating), against a real UserService.

Which certificate a call presented is read from what the server did with it: the storefront may
not ListUsers (PERMISSION_DENIED), back-office may; a server that does not trust a certificate's
CA refuses the handshake (UNAVAILABLE). Files are swapped by rename, as a secret volume does.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from devstack.pki import DevPki
from devstack.ports import free_port
from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo.v1 import users_pb2, users_pb2_grpc
from promo_libs.config import TlsPaths
from promo_libs.grpc.client import secure_channel, secure_sync_channel
from promo_libs.grpc.rotating import RotatingChannel

pytestmark = pytest.mark.e2e


def _swap(target: Path, content: bytes) -> None:
    staged = target.with_suffix(".new")
    staged.write_bytes(content)
    staged.replace(target)


def mount(files: TlsPaths, at: TlsPaths, *, ca: bytes | None = None) -> None:
    """`files` (with the bundle `ca` instead of theirs when given) become the files at `at`."""
    _swap(at.cert, files.cert.read_bytes())
    _swap(at.key, files.key.read_bytes())
    _swap(at.ca, files.ca.read_bytes() if ca is None else ca)


def _mounted(folder: Path) -> TlsPaths:
    folder.mkdir(parents=True, exist_ok=True)
    return TlsPaths(folder / "tls.crt", folder / "tls.key", folder / "ca.crt")


@dataclass
class Server:
    users: ServiceProcess
    mounted: TlsPaths  # the server's own files, to rotate its trust bundle
    old: DevPki  # the stack's CA, which issued the server's certificate
    new: DevPki  # another CA


@pytest.fixture(scope="module")
def server(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("client-rotation")
    mounted = _mounted(folder / "server")
    mount(stack.pki.files("users"), mounted)
    users = stack.service(
        "users-client-rotation",
        [sys.executable, "-m", "users_service"],
        free_port(),
        {
            "METRICS_PORT": "0",
            "MONGODB_DB_NAME": f"rot_{uuid.uuid4().hex[:8]}",
            "GRPC_TLS_CERT_FILE": str(mounted.cert),
            "GRPC_TLS_KEY_FILE": str(mounted.key),
            "GRPC_TLS_CA_FILE": str(mounted.ca),
        },
    )
    users.start_and_wait()
    try:
        yield Server(users, mounted, stack.pki, DevPki(folder / "new-ca"))
    finally:
        users.terminate()


async def _list_users(stub: users_pb2_grpc.UserServiceStub) -> grpc.StatusCode:
    try:
        await stub.ListUsers(users_pb2.ListUsersRequest(page_size=1), timeout=10)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_the_next_call_presents_the_certificate_rotated_on_disk(
    server: Server, tmp_path: Path
) -> None:
    client = _mounted(tmp_path)
    mount(server.old.files("storefront"), client)
    async with secure_channel(server.users.address, client) as channel:
        stub = users_pb2_grpc.UserServiceStub(channel)  # made once, as composition roots do
        assert await _list_users(stub) == grpc.StatusCode.PERMISSION_DENIED

        mount(server.old.files("back-office"), client)
        assert await _list_users(stub) == grpc.StatusCode.OK
        assert await _list_users(stub) == grpc.StatusCode.OK

        assert isinstance(channel, RotatingChannel)
        assert channel.rotation.reloads == 1  # one new channel per rotation, not per call
        assert channel.rotation.retired == 0  # the old one had no call left: closed at once


async def test_a_call_under_way_finishes_on_the_channel_it_started_on(
    server: Server, tmp_path: Path
) -> None:
    client = _mounted(tmp_path)
    mount(server.old.files("storefront"), client)
    async with secure_channel(server.users.address, client) as channel:
        assert isinstance(channel, RotatingChannel)
        stub = users_pb2_grpc.UserServiceStub(channel)
        assert await _list_users(stub) == grpc.StatusCode.PERMISSION_DENIED

        under_way = stub.ListUsers(users_pb2.ListUsersRequest(page_size=1), timeout=10)
        mount(server.old.files("back-office"), client)
        after = stub.ListUsers(users_pb2.ListUsersRequest(page_size=1), timeout=10)
        assert channel.rotation.retired == 1  # kept open for the call under way

        # The first call is neither cancelled nor moved: it ends as the storefront's call.
        assert await under_way.code() == grpc.StatusCode.PERMISSION_DENIED
        assert await after.code() == grpc.StatusCode.OK
        deadline = time.monotonic() + 10
        while channel.rotation.retired:  # closed by the call's done callback
            assert time.monotonic() < deadline, "the retired channel was never closed"
            await _list_users(stub)


async def test_files_caught_half_written_keep_the_previous_certificate(
    server: Server, tmp_path: Path
) -> None:
    client = _mounted(tmp_path)
    mount(server.old.files("storefront"), client)
    async with secure_channel(server.users.address, client) as channel:
        stub = users_pb2_grpc.UserServiceStub(channel)
        assert await _list_users(stub) == grpc.StatusCode.PERMISSION_DENIED

        _swap(client.cert, b"-----BEGIN CERT")  # a truncated write
        # Still the storefront's certificate: not a failed handshake, not a broken channel.
        assert await _list_users(stub) == grpc.StatusCode.PERMISSION_DENIED

        mount(server.old.files("back-office"), client)
        assert await _list_users(stub) == grpc.StatusCode.OK


async def test_a_certificate_of_a_new_ca_is_used_once_the_server_trusts_that_ca(
    server: Server, tmp_path: Path
) -> None:
    """A CA rotation: the client moves to a certificate of the new CA (its bundle trusting
    both, since the server still presents the old CA's); the server refuses it until its own
    bundle has rotated to both CAs, then accepts it on the same client channel."""
    both = server.old.ca_file.read_bytes() + server.new.files("back-office").ca.read_bytes()
    client = _mounted(tmp_path)
    mount(server.old.files("back-office"), client)
    try:
        async with secure_channel(server.users.address, client) as channel:
            stub = users_pb2_grpc.UserServiceStub(channel)
            assert await _list_users(stub) == grpc.StatusCode.OK

            mount(server.new.files("back-office"), client, ca=both)
            assert await _list_users(stub) == grpc.StatusCode.UNAVAILABLE

            mount(server.old.files("users"), server.mounted, ca=both)
            deadline = time.monotonic() + 20
            while (code := await _list_users(stub)) != grpc.StatusCode.OK:
                # The server re-reads at its next handshake; the client's retry makes one.
                assert code == grpc.StatusCode.UNAVAILABLE
                assert time.monotonic() < deadline, "the new CA's certificate stayed refused"
            assert server.users.running
    finally:
        mount(server.old.files("users"), server.mounted)


def test_a_blocking_channel_follows_its_files_too(server: Server, tmp_path: Path) -> None:
    client = _mounted(tmp_path)
    mount(server.old.files("storefront"), client)
    with secure_sync_channel(server.users.address, client) as channel:
        stub = users_pb2_grpc.UserServiceStub(channel)
        request = users_pb2.ListUsersRequest(page_size=1)
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListUsers(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

        mount(server.old.files("back-office"), client)
        stub.ListUsers(request, timeout=10)
        _, call = stub.ListUsers.with_call(request, timeout=10)
        assert call.code() == grpc.StatusCode.OK


async def test_a_closed_channel_makes_no_new_connection_after_a_rotation(
    server: Server, tmp_path: Path
) -> None:
    client = _mounted(tmp_path)
    mount(server.old.files("back-office"), client)
    channel = secure_channel(server.users.address, client)
    stub = users_pb2_grpc.UserServiceStub(channel)
    assert await _list_users(stub) == grpc.StatusCode.OK
    await channel.close()
    mount(server.old.files("storefront"), client)
    with pytest.raises(grpc.aio.UsageError):  # gRPC's answer on a closed channel
        await stub.ListUsers(users_pb2.ListUsersRequest(page_size=1), timeout=10)
    assert isinstance(channel, RotatingChannel) and channel.rotation.reloads == 0
