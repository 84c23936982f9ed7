"""UserService throughput and latency: CreateUser, GetUser, AuthenticateUser over gRPC.

    .venv/bin/python services/users/benchmarks/users_bench.py --concurrency 16 --requests 400

Starts the local stack and a users process (production argon2 parameters) unless --address is
given. Prints requests/s and p50/p99 latency per RPC. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from devstack.pki import DevPki
from devstack.ports import free_port
from devstack.stack import Stack
from devstack.state import default_state_dir
from promo.v1 import users_pb2, users_pb2_grpc

PASSWORD = "benchmark password 1"


async def measure(
    name: str, count: int, concurrency: int, call: Callable[[int], Awaitable[object]]
) -> None:
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            started = time.perf_counter()
            await call(n)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    print(
        f"{name:<18} {count / elapsed:8.1f} req/s   p50 {cuts[49] * 1000:7.2f} ms"
        f"   p99 {cuts[98] * 1000:7.2f} ms   ({count} calls, concurrency {concurrency})"
    )


async def run(address: str, count: int, concurrency: int, pki: DevPki) -> None:
    # Sign-up and log-in as the storefront makes them, reads as the order saga and promo codes
    # make them (mutual TLS included): the storefront may read only its signed-in shopper's
    # account (its user token), which would put one argon2 log-in per user before the reads.
    async with (
        pki.channel(address, "storefront") as channel,
        pki.channel(address, "orders") as reader_channel,
    ):
        stub = users_pb2_grpc.UserServiceStub(channel)
        reader = users_pb2_grpc.UserServiceStub(reader_channel)
        prefix = uuid.uuid4().hex[:8]
        ids: list[str] = [""] * count

        async def create(n: int) -> None:
            user = await stub.CreateUser(
                users_pb2.CreateUserRequest(
                    user=users_pb2.User(email=f"bench.{prefix}.{n}@example.com"),
                    password=PASSWORD,
                )
            )
            ids[n] = user.id

        async def get(n: int) -> None:
            await reader.GetUser(users_pb2.GetUserRequest(id=ids[n]))

        async def authenticate(n: int) -> None:
            await stub.AuthenticateUser(
                users_pb2.AuthenticateUserRequest(
                    email=f"bench.{prefix}.{n}@example.com", password=PASSWORD
                )
            )

        await measure("CreateUser", count, concurrency, create)
        await measure("GetUser", count, concurrency, get)
        await measure("AuthenticateUser", count, concurrency, authenticate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="a running UserService; default: start one")
    parser.add_argument(
        "--pki", type=Path, default=default_state_dir() / "pki", help="certificates, with --address"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    if args.address:
        asyncio.run(run(args.address, args.requests, args.concurrency, DevPki(args.pki)))
        return
    with tempfile.TemporaryDirectory() as state, Stack.from_environ(Path(state)) as stack:
        port = free_port()
        service = stack.service(
            "users",
            [sys.executable, "-m", "users_service"],
            port,
            {"METRICS_PORT": "0", "MONGODB_DB_NAME": f"bench_{uuid.uuid4().hex[:8]}"},
        )
        service.start_and_wait()
        try:
            asyncio.run(run(service.address, args.requests, args.concurrency, stack.pki))
        finally:
            service.terminate()


if __name__ == "__main__":
    main()
