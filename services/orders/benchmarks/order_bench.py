"""OrderService throughput and latency: CreateOrder with and without a promo code, beside the floor.

    .venv/bin/python services/orders/benchmarks/order_bench.py --concurrency 16 --orders 1000

The floor is the raw round trips the saga needs, made directly by this client: GetUser (no code),
GetUser then RedeemPromoCode with the user it answered (with a code), as the saga calls them
(before 3 December 2026 the floor's Redeem had no user, so PromoCodeService read it again: one
GetUser more than CreateOrder makes). The last pair runs a three-line cart with a code of a
campaign that discounts one category's items (the campaign's reservation and settlement are the
extra work), against the same floor with that cart. The gap between an order and its floor is the
order service's own work (its MongoDB writes and gRPC hops). Starts the local stack and the three
services unless all three addresses are given. A benchmark, not a test: it asserts nothing.
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
from devstack.service import ServiceProcess
from devstack.stack import Stack
from devstack.state import default_state_dir
from promo.v1 import (
    common_pb2,
    orders_pb2,
    orders_pb2_grpc,
    promo_codes_pb2,
    promo_codes_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)


def eur(amount: int) -> common_pb2.Money:
    return common_pb2.Money(currency_code="EUR", amount_minor=amount)


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
        f"{name:<30} {count / elapsed:8.1f} /s   p50 {cuts[49] * 1000:7.2f} ms"
        f"   p99 {cuts[98] * 1000:7.2f} ms   ({count} calls, concurrency {concurrency})",
        flush=True,
    )


async def run(addresses: dict[str, str], count: int, concurrency: int, pki: DevPki) -> None:
    # Sign-ups as the storefront, the catalogue and the orders (for many users: no user token)
    # as the back office; the floor calls as the orders service does.
    async with (
        pki.channel(addresses["users"], "storefront") as users_channel,
        pki.channel(addresses["promocodes"], "back-office") as codes_channel,
        pki.channel(addresses["users"], "orders") as floor_users_channel,
        pki.channel(addresses["promocodes"], "orders") as floor_codes_channel,
        pki.channel(addresses["orders"], "back-office") as orders_channel,
    ):
        users = users_pb2_grpc.UserServiceStub(users_channel)
        codes = promo_codes_pb2_grpc.PromoCodeServiceStub(codes_channel)
        floor_users = users_pb2_grpc.UserServiceStub(floor_users_channel)
        floor_codes = promo_codes_pb2_grpc.PromoCodeServiceStub(floor_codes_channel)
        orders = orders_pb2_grpc.OrderServiceStub(orders_channel)
        prefix = uuid.uuid4().hex[:8]
        # A few sign-ups at a time: the users service refuses password checks beyond its
        # bulkhead (RESOURCE_EXHAUSTED), and sign-ups are not what is measured.
        gate = asyncio.Semaphore(4)

        async def sign_up(n: int) -> users_pb2.User:
            async with gate:
                return await users.CreateUser(
                    users_pb2.CreateUserRequest(
                        user=users_pb2.User(email=f"ob.{prefix}.{n}@example.com"),
                        password="benchmark password 1",
                    )
                )

        people = await asyncio.gather(*(sign_up(n) for n in range(min(count, 100))))
        ids = [p.id for p in people]
        code = f"BENCH{prefix.upper()}"
        await codes.CreatePromoCode(
            promo_codes_pb2.CreatePromoCodeRequest(
                promo_code=promo_codes_pb2.PromoCode(
                    code=code, percentage=promo_codes_pb2.PercentageDiscount(basis_points=1000)
                )
            )
        )

        campaign = await codes.CreateCampaign(
            promo_codes_pb2.CreateCampaignRequest(
                campaign=promo_codes_pb2.Campaign(display_name=f"Bench {prefix}")
            )
        )
        cart_code = f"CART{prefix.upper()}"
        await codes.CreatePromoCode(
            promo_codes_pb2.CreatePromoCodeRequest(
                promo_code=promo_codes_pb2.PromoCode(
                    code=cart_code,
                    percentage=promo_codes_pb2.PercentageDiscount(basis_points=2000),
                    target=promo_codes_pb2.DISCOUNT_TARGET_ITEMS,
                    targeting=promo_codes_pb2.ItemTargeting(include_category_ids=["shoes"]),
                    campaign_id=campaign.id,
                )
            )
        )
        cart = [
            common_pb2.LineItem(
                sku="SHOE-42", product_id="shoe", category_ids=["shoes", "spring"],
                quantity=1, unit_price=eur(3000),
            ),
            common_pb2.LineItem(
                sku="SOCK-1", product_id="sock", category_ids=["kids"],
                quantity=3, unit_price=eur(400),
            ),
            common_pb2.LineItem(
                sku="BOOT-40", product_id="boot", category_ids=["shoes"],
                quantity=1, unit_price=eur(800),
            ),
        ]  # fmt: skip

        def user(n: int) -> str:
            return ids[n % len(ids)]

        async def floor_plain(n: int) -> None:
            await floor_users.GetUser(users_pb2.GetUserRequest(id=user(n)))

        # Redeem gets the user GetUser answered, as CreateOrder passes it (so PromoCodeService
        # reads no user of its own): the floor makes the saga's calls, no more.
        async def floor_code(n: int) -> None:
            shopper = await floor_users.GetUser(users_pb2.GetUserRequest(id=user(n)))
            await floor_codes.RedeemPromoCode(
                promo_codes_pb2.RedeemPromoCodeRequest(
                    code=code,
                    user_id=user(n),
                    order_amount=eur(5000),
                    redemption_id=uuid.uuid4().hex,
                    user=shopper,
                )
            )

        async def floor_cart(n: int) -> None:
            shopper = await floor_users.GetUser(users_pb2.GetUserRequest(id=user(n)))
            await floor_codes.RedeemPromoCode(
                promo_codes_pb2.RedeemPromoCodeRequest(
                    code=cart_code,
                    user_id=user(n),
                    lines=cart,
                    redemption_id=uuid.uuid4().hex,
                    user=shopper,
                )
            )

        discounted: list[int] = []

        async def cart_order(n: int) -> None:
            placed = await orders.CreateOrder(
                orders_pb2.CreateOrderRequest(
                    user_id=user(n), lines=cart, promo_code=cart_code,
                    idempotency_key=uuid.uuid4().hex,
                )
            )  # fmt: skip
            if placed.status == orders_pb2.ORDER_STATUS_CONFIRMED and placed.discount.amount_minor:
                discounted.append(placed.discount.amount_minor)

        async def order(n: int, with_code: bool) -> None:
            request = orders_pb2.CreateOrderRequest(
                user_id=user(n), amount=eur(5000), idempotency_key=uuid.uuid4().hex
            )
            if with_code:
                request.promo_code = code
            await orders.CreateOrder(request)

        await measure("floor: GetUser", count, concurrency, floor_plain)
        await measure("CreateOrder without a code", count, concurrency, lambda n: order(n, False))
        await measure("floor: GetUser + Redeem", count, concurrency, floor_code)
        await measure("CreateOrder with a code", count, concurrency, lambda n: order(n, True))
        await measure("floor: GetUser + Redeem (cart)", count, concurrency, floor_cart)
        await measure("CreateOrder, cart + campaign", count, concurrency, cart_order)
        # Not an assertion: a benchmark of rejected orders would measure something else.
        print(f"  of those, confirmed with a discount: {len(discounted)} of {count}", flush=True)


def _start(stack: Stack) -> list[ServiceProcess]:
    tag = uuid.uuid4().hex[:8]
    common = {"METRICS_PORT": "0"}
    users = stack.service(
        "users",
        [sys.executable, "-m", "users_service"],
        free_port(),
        {
            **common,
            "MONGODB_DB_NAME": f"bench_ou_{tag}",
            "ARGON2_MEMORY_KIB": "8192",
            "ARGON2_TIME_COST": "1",
        },
    )
    promocodes = stack.service(
        "promocodes",
        [sys.executable, "-m", "promocodes_service"],
        free_port(),
        {**common, "MONGODB_DB_NAME": f"bench_op_{tag}", "USERS_ADDR": users.address},
    )
    orders = stack.service(
        "orders",
        [sys.executable, "-m", "orders_service"],
        free_port(),
        {
            **common,
            "MONGODB_DB_NAME": f"bench_oo_{tag}",
            "USERS_ADDR": users.address,
            "PROMOCODES_ADDR": promocodes.address,
        },
    )
    started: list[ServiceProcess] = []
    for service in (users, promocodes, orders):
        service.start_and_wait()
        started.append(service)
    return started


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--orders-addr", help="a running OrderService; default: start one")
    parser.add_argument("--users-addr")
    parser.add_argument("--promocodes-addr")
    parser.add_argument(
        "--pki", type=Path, default=default_state_dir() / "pki", help="certificates, with addresses"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--orders", type=int, default=1000)
    args = parser.parse_args()
    given = {
        "users": args.users_addr,
        "promocodes": args.promocodes_addr,
        "orders": args.orders_addr,
    }
    if all(given.values()):
        asyncio.run(run(given, args.orders, args.concurrency, DevPki(args.pki)))
        return
    with tempfile.TemporaryDirectory() as state, Stack.from_environ(Path(state)) as stack:
        services = _start(stack)
        try:
            addresses = dict(
                zip(["users", "promocodes", "orders"], [s.address for s in services], strict=True)
            )
            asyncio.run(run(addresses, args.orders, args.concurrency, stack.pki))
        finally:
            for service in reversed(services):
                service.terminate()


if __name__ == "__main__":
    main()
