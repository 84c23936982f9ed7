"""Redemption throughput and latency, beside the floor of the MongoDB round trips it needs.

    .venv/bin/python services/promocodes/benchmarks/redeem_bench.py \
        --concurrency 32 --redemptions 2000

Without addresses it starts what it needs through devstack (MongoDB stand-in, Redis,
ClickHouse, then `python -m users_service` and `python -m promocodes_service`, each with its own
database) and stops it all at the end. With --promocodes-addr/--users-addr/--mongodb-uri it uses
running ones.

A successful redemption makes 5 MongoDB round trips (code by text, the user's slots, reserve,
write usage, settle; `services/promocodes/tests/integration/test_round_trips.py` counts them)
and no UserService call: Redeem is called as orders calls it, with the user its CreateOrder
has just read (RedeemPromoCodeRequest.user; here the user as CreateUser answered it, the same
message GetUser gives), so PromoCodeService does not read the user again. The floor runs the
same 5 round trips (same commands, same document shapes, one code document shared by all) at
the same concurrency against the same server, without gRPC and without our code around them.
(It was 6 with 6 trips: the usage was read by id first.)

--cart-campaign redeems a three-line cart with a code of a campaign (issue 14): the campaign's
reservation and settlement and the user's campaign slot come on top, while the floor stays the
plain path's 5 trips, so its ratio is the cost of carts and campaigns over a plain redemption's
floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from promo.v1 import common_pb2, promo_codes_pb2, promo_codes_pb2_grpc, users_pb2, users_pb2_grpc

ROUND_TRIPS = 5


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def _run(
    concurrency: int, total: int, one: Callable[[int], Awaitable[None]]
) -> tuple[float, list[float]]:
    latencies: list[float] = []
    next_index = iter(range(total))

    async def worker() -> None:
        for index in next_index:
            started = time.perf_counter()
            await one(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def _report(name: str, elapsed: float, latencies: list[float]) -> float:
    rate = len(latencies) / elapsed
    print(
        f"{name:<28} {rate:9.1f} /s   p50 {_percentile(latencies, 0.5) * 1000:7.2f} ms"
        f"   p99 {_percentile(latencies, 0.99) * 1000:7.2f} ms   (n={len(latencies)})"
    )
    return rate


async def bench_service(args: argparse.Namespace) -> tuple[float, list[float]]:
    from devstack.pki import DevPki  # devstack: installed in the development environment

    pki = DevPki(args.pki)
    # The catalogue from the back office, redemptions as the order saga makes them.
    async with (
        pki.channel(args.users_addr, "back-office") as users_channel,
        pki.channel(args.promocodes_addr, "back-office") as channel,
        pki.channel(args.promocodes_addr, "orders") as saga_channel,
    ):
        users = users_pb2_grpc.UserServiceStub(users_channel)
        promo = promo_codes_pb2_grpc.PromoCodeServiceStub(channel)
        saga = promo_codes_pb2_grpc.PromoCodeServiceStub(saga_channel)
        tag = uuid.uuid4().hex[:8]
        gate = asyncio.Semaphore(8)

        async def new_user(i: int) -> users_pb2.User:
            async with gate:
                return await users.CreateUser(
                    users_pb2.CreateUserRequest(
                        user=users_pb2.User(email=f"bench-{tag}-{i}@example.com"),
                        password="correct horse battery staple",
                    )
                )

        known = await asyncio.gather(*(new_user(i) for i in range(args.users)))
        code = f"BENCH-{tag}".upper()
        rules = promo_codes_pb2.PromoCode(
            code=code,
            percentage=promo_codes_pb2.PercentageDiscount(basis_points=1000),
            max_uses_per_user=1_000_000,  # present, so the per-user slot path runs
        )
        if args.cart_campaign:
            # A code of a campaign with its own per-user limit (so the campaign's reservation,
            # the user's campaign slot and both settlements run), discounting one category.
            campaign = await promo.CreateCampaign(
                promo_codes_pb2.CreateCampaignRequest(
                    campaign=promo_codes_pb2.Campaign(
                        display_name=f"Bench {tag}", max_uses_per_user=1_000_000
                    )
                )
            )
            rules.campaign_id = campaign.id
            rules.target = promo_codes_pb2.DISCOUNT_TARGET_ITEMS
            rules.targeting.include_category_ids.append("shoes")
        await promo.CreatePromoCode(promo_codes_pb2.CreatePromoCodeRequest(promo_code=rules))
        amount = common_pb2.Money(currency_code="EUR", amount_minor=10_000)
        cart = [
            common_pb2.LineItem(
                sku=f"SKU-{n}", product_id=f"p{n}", category_ids=[category], quantity=n + 1,
                unit_price=common_pb2.Money(currency_code="EUR", amount_minor=1_000 * (n + 1)),
            )
            for n, category in enumerate(("shoes", "kids", "shoes"))
        ]  # fmt: skip

        async def one(index: int) -> None:
            user = known[index % len(known)]
            await saga.RedeemPromoCode(
                promo_codes_pb2.RedeemPromoCodeRequest(
                    code=code,
                    user_id=user.id,
                    order_amount=None if args.cart_campaign else amount,
                    lines=cart if args.cart_campaign else None,
                    redemption_id=f"{tag}-{index}",
                    # As orders passes the user it read; --without-user: as before it did.
                    user=None if args.without_user else user,
                ),
                timeout=30,
            )

        await _run(
            args.concurrency, min(200, args.redemptions), lambda i: one(10**9 + i)
        )  # warm-up
        return await _run(args.concurrency, args.redemptions, one)


async def bench_floor(args: argparse.Namespace) -> tuple[float, list[float]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(args.mongodb_uri, tz_aware=True)
    db = client[f"bench_floor_{uuid.uuid4().hex[:8]}"]
    try:
        codes, usages = db.codes, db.usages
        await codes.create_index("code", unique=True)
        await usages.create_index([("promo_id", 1), ("user_id", 1), ("slot", 1)], unique=True)
        await codes.insert_one(
            {"_id": "c", "code": "FLOOR", "uses": 0, "pending": {}, "pending_count": 0}
        )

        async def one(index: int) -> None:
            rid, user = f"r{index}", f"u{index % args.users}"
            now = datetime.now(UTC)
            await codes.find_one({"code": "FLOOR"})
            [
                d
                async for d in usages.find(
                    {"promo_id": {"$eq": "c"}, "user_id": {"$eq": user}, "status": "ACTIVE"},
                    {"slot": 1},
                )
            ]
            await codes.update_one(
                {"_id": "c", f"pending.{rid}": {"$exists": False}},
                {"$inc": {"uses": 1, "pending_count": 1}, "$set": {f"pending.{rid}": {"at": now}}},
            )
            await usages.insert_one(
                {"_id": rid, "promo_id": "c", "user_id": user, "slot": f"u:{rid}",
                 "status": "ACTIVE", "created_at": now,
                 "outbox": {uuid.uuid4().hex: {"envelope": "x" * 800}}}
            )  # fmt: skip
            await codes.update_one(
                {"_id": "c", f"pending.{rid}.at": {"$exists": True}},
                {"$unset": {f"pending.{rid}": ""}, "$inc": {"pending_count": -1}},
            )

        await _run(args.concurrency, min(200, args.redemptions), lambda i: one(10**9 + i))
        return await _run(args.concurrency, args.redemptions, one)
    finally:
        await client.drop_database(db.name)
        await client.close()


def _start_stack(args: argparse.Namespace) -> Any:
    from devstack.ports import free_port
    from devstack.stack import Stack

    stack = Stack.from_environ(Path(tempfile.mkdtemp(prefix="redeem-bench-")))
    stack.start()
    suffix = uuid.uuid4().hex[:6]
    users = stack.service(
        "users", [sys.executable, "-m", "users_service"], free_port(),
        {"MONGODB_DB_NAME": f"bench_users_{suffix}", "METRICS_PORT": "0",
         "ARGON2_MEMORY_KIB": "8192", "ARGON2_TIME_COST": "1"},
    )  # fmt: skip
    users.start_and_wait()
    # REDEEM_BENCH_PROFILE=<file>: the service runs under cProfile, its stats written there when
    # it stops (read them with `python -m pstats <file>`).
    profile = os.environ.get("REDEEM_BENCH_PROFILE")
    profiler = ["-m", "cProfile", "-o", profile] if profile else []
    promo = stack.service(
        "promocodes", [sys.executable, *profiler, "-m", "promocodes_service"], free_port(),
        {"MONGODB_DB_NAME": f"bench_promocodes_{suffix}", "METRICS_PORT": "0",
         "USERS_ADDR": users.address, "LOG_LEVEL": "WARNING"},
    )  # fmt: skip
    promo.start_and_wait()
    args.users_addr, args.promocodes_addr = users.address, promo.address
    args.pki = stack.pki.folder
    args.mongodb_uri = args.mongodb_uri or stack.mongo_uri
    return stack, [promo, users]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--redemptions", type=int, default=2000)
    parser.add_argument("--users", type=int, default=200, help="distinct users redeeming")
    parser.add_argument("--promocodes-addr", default="")
    parser.add_argument("--users-addr", default="")
    parser.add_argument(
        "--pki",
        type=Path,
        default=Path(__file__).resolve().parents[3] / ".state" / "dev" / "pki",
        help="certificates, with running services",
    )
    parser.add_argument("--mongodb-uri", default="", help="for the floor (default: the stack's)")
    parser.add_argument(
        "--without-user",
        action="store_true",
        help="no RedeemPromoCodeRequest.user: PromoCodeService calls GetUser (the old path)",
    )
    parser.add_argument(
        "--cart-campaign",
        action="store_true",
        help="a three-line cart and a code of a campaign (the floor stays the plain path's)",
    )
    args = parser.parse_args()
    stack, processes = None, []
    if not (args.promocodes_addr and args.users_addr):
        stack, processes = _start_stack(args)
    elif not args.mongodb_uri:
        parser.error("--mongodb-uri is required with running services")
    try:
        elapsed, latencies = asyncio.run(bench_service(args))
        floor_elapsed, floor_latencies = asyncio.run(bench_floor(args))
    finally:
        for process in processes:
            process.terminate()
        if stack is not None:
            stack.stop()
    print(f"concurrency {args.concurrency}, {args.redemptions} redemptions, {args.users} users")
    which = "RedeemPromoCode, cart + campaign" if args.cart_campaign else "RedeemPromoCode (gRPC)"
    rate = _report(which, elapsed, latencies)
    floor = _report(f"floor: {ROUND_TRIPS} raw MongoDB trips", floor_elapsed, floor_latencies)
    p50_ratio = _percentile(latencies, 0.5) / _percentile(floor_latencies, 0.5)
    print(
        f"ratio: throughput {rate / floor:.2f} of the floor, p50 latency {p50_ratio:.2f}x the floor"
    )
    mean, floor_mean = statistics.mean(latencies), statistics.mean(floor_latencies)
    print(f"mean latency {mean * 1000:.2f} ms vs floor {floor_mean * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
