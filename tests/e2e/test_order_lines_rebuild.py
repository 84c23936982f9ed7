"""order_lines through the real services (issue 14): carts placed with CreateOrder reach
ClickHouse line by line with their discount shares, reconcile compares every line with
MongoDB, finds damage to the table, and the rebuild from MongoDB repairs it (I4, I6)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from pipeline_support import (
    Clients,
    Platform,
    eur,
    new_code,
    new_user,
    retried,
    until_reconciled,
)
from pipeline_support import cancel as cancel_order

from promo.v1 import common_pb2, orders_pb2
from promo_reconcile import reconcile

DRAIN_SECONDS = 120.0


def _line(sku: str, product: str, categories: list[str], quantity: int, price: int) -> Any:
    return common_pb2.LineItem(
        sku=sku, product_id=product, category_ids=categories, quantity=quantity,
        unit_price=eur(price),
    )  # fmt: skip


async def _order(clients: Clients, user_id: str, code: str | None, lines: list[Any]) -> Any:
    request = orders_pb2.CreateOrderRequest(
        user_id=user_id, idempotency_key=uuid.uuid4().hex, lines=lines
    )
    if code is not None:
        request.promo_code = code
    return await retried(lambda: clients.orders.CreateOrder(request, timeout=30))


def _lines_now(platform: Platform) -> list[list[str]]:
    return platform.query(
        "SELECT order_id, toString(line_index), sku, product_id,"
        " arrayStringConcat(category_ids, ','), toString(quantity), toString(unit_price_minor),"
        " toString(discount_minor), status FROM {db}.order_lines FINAL"
        " ORDER BY order_id, line_index"
    )


async def test_lines_reconcile_with_mongodb_and_a_rebuild_repairs_them(
    platform: Platform, clients: Clients
) -> None:
    code = await new_code(clients)  # 5.00 EUR off, split across each cart's lines
    carts = [
        [_line("s1", "shoe", ["shoes", "spring"], 2, 3000), _line("s2", "sock", ["kids"], 3, 250)],
        [_line("s3", "hat", [], 1, 1200)],
        [_line("s4", "shoe", ["shoes"], 1, 3000), _line("s5", "", ["sale"], 4, 100)],
    ]
    placed = []
    for cart in carts:
        user = await new_user(clients)
        placed.append(await _order(clients, user.id, code.code, cart))
    user = await new_user(clients)
    placed.append(await _order(clients, user.id, None, carts[0]))  # no code: no shares
    amount_only = orders_pb2.CreateOrderRequest(
        user_id=user.id, idempotency_key=uuid.uuid4().hex, amount=eur(999)
    )
    placed.append(await retried(lambda: clients.orders.CreateOrder(amount_only, timeout=30)))
    assert all(o.status == orders_pb2.ORDER_STATUS_CONFIRMED for o in placed), placed
    assert [o.discount.amount_minor for o in placed] == [500, 500, 500, 0, 0]
    await cancel_order(clients, placed[0].id)

    await until_reconciled(platform, DRAIN_SECONDS)
    expected = sorted(
        [
            order.id,
            str(index),
            line.item.sku,
            line.item.product_id,
            ",".join(line.item.category_ids),
            str(line.item.quantity),
            str(line.item.unit_price.amount_minor),
            str(line.discount.amount_minor),
            "CANCELLED" if order.id == placed[0].id else "CONFIRMED",
        ]
        for order in placed
        for index, line in enumerate(order.lines)
    )
    assert len(expected) == 8  # the amount-only order is the one line of its amount
    assert _lines_now(platform) == expected
    found, sizes = await reconcile(platform.reconcile_settings())
    assert found == [] and sizes["order_lines"] == 8
    # Four products (one empty) and four categories of the confirmed carts, on their day(s).
    assert sizes["line_costs_daily"] >= 8 and sizes["line_costs_monthly"] >= 8

    # Damage: a line's discount share changed by a later version, a line that never existed.
    first = placed[1].id
    platform.query(
        "INSERT INTO {db}.order_lines (line_id, version, order_id, line_index, order_date,"
        " discount_minor, status, currency_code) SELECT line_id, version + 10, order_id,"
        " line_index, order_date, discount_minor + 1, status, currency_code"
        f" FROM {{db}}.order_lines FINAL WHERE order_id = '{first}'"
    )
    platform.query(
        "INSERT INTO {db}.order_lines (line_id, version, order_id, line_index, order_date, status)"
        " VALUES ('ghost#0', 1, 'ghost', 0, today(), 'CONFIRMED')"
    )
    # And a rollup row overwritten by a higher state version with a wrong discount.
    platform.query(
        "INSERT INTO {db}.line_costs_daily (day, currency_code, kind, cost_key, campaign_id,"
        " discount_minor, gross_minor, units, orders, state_version) SELECT day, currency_code,"
        " kind, cost_key, campaign_id, discount_minor + 7, gross_minor, units, orders,"
        " state_version + 1000 FROM {db}.line_costs_daily FINAL"
        " WHERE kind = 'product' AND cost_key = 'hat'"
    )
    found, _ = await reconcile(platform.reconcile_settings())
    assert {(d.fact, d.key[0]) for d in found if d.fact == "order_lines"} == {
        ("order_lines", first),
        ("order_lines", "ghost"),
    }
    assert [(d.fact, d.key[2:4]) for d in found if d.fact != "order_lines"] == [
        ("line_costs_daily", ("product", "hat"))
    ]

    rebuilt = await asyncio.to_thread(platform.run_tool, "sync_consumer", "rebuild")
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    await until_reconciled(platform, DRAIN_SECONDS)
    assert _lines_now(platform) == expected
