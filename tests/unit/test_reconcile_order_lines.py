"""Reconcile's `order_lines` fact compares each line's campaign with its order's in MongoDB
(issue 14): a line naming another campaign, or one where its order has none, is a difference;
the rest of the line is compared as before. (The query side is proven on ClickHouse by
tests/e2e/test_pipeline.py::test_rebuild_from_mongodb_under_live_load_reconciles.)"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from promo_reconcile import Difference, Facts, add_line_costs, add_order_lines, differences


def _order(order_id: str, campaign_id: str | None) -> dict[str, Any]:
    order: dict[str, Any] = {
        "_id": order_id,
        "status": "CONFIRMED",
        "subtotal_minor": 7_000,
        "discount_minor": 500,
        "lines": [
            {"sku": "s1", "product_id": "shoe", "category_ids": ["shoes", "spring"],
             "quantity": 2, "unit_price": 3_000, "discount": 429},
            {"sku": "s2", "product_id": "sock", "category_ids": [],
             "quantity": 4, "unit_price": 250, "discount": 71},
        ],
    }  # fmt: skip
    if campaign_id is not None:  # orders stored before campaigns have no field
        order["campaign_id"] = campaign_id
    return order


def _truth(*orders: dict[str, Any]) -> Facts:
    facts: Facts = defaultdict(dict)
    add_order_lines(facts, orders)
    return facts


def _with_campaign(facts: Facts, key: tuple[Any, ...], campaign_id: str) -> Facts:
    """The same facts, as ClickHouse would state them with `campaign_id` on the line `key`."""
    changed: Facts = defaultdict(dict, {fact: dict(rows) for fact, rows in facts.items()})
    status, _, *rest = changed["order_lines"][key]
    changed["order_lines"][key] = (status, campaign_id, *rest)
    return changed


def test_every_line_carries_its_orders_campaign_and_none_without_one() -> None:
    truth = _truth(_order("o1", "camp-a"), _order("o2", None), _order("o3", ""))
    campaigns = {key: row[1] for key, row in truth["order_lines"].items()}
    assert campaigns == {
        ("o1", 0): "camp-a",
        ("o1", 1): "camp-a",
        ("o2", 0): "",
        ("o2", 1): "",
        ("o3", 0): "",
        ("o3", 1): "",
    }


def test_a_line_with_a_wrong_campaign_is_reported_and_only_that_line() -> None:
    truth = _truth(_order("o1", "camp-a"), _order("o2", None))
    assert differences(truth, truth) == []
    wrong = _with_campaign(truth, ("o1", 1), "camp-b")
    stray = _with_campaign(truth, ("o2", 0), "camp-a")  # its order has no campaign
    assert differences(truth, wrong) == [
        Difference("order_lines", ("o1", 1), truth["order_lines"][("o1", 1)],
                   wrong["order_lines"][("o1", 1)]),
    ]  # fmt: skip
    assert [d.key for d in differences(truth, stray)] == [("o2", 0)]


def test_line_costs_count_confirmed_lines_per_day_month_grouping_and_campaign() -> None:
    """`line_costs_daily`/`_monthly`: each distinct category of a line once, the distinct
    orders of a key, only orders CONFIRMED now, an order before carts as its one line."""
    day = 1_709_164_800_000  # 2024-02-29T00:00:00Z, in MongoDB's milliseconds
    cart = {**_order("o1", "camp-a"), "created_at": day, "currency": "EUR"}
    cart["lines"] = [*cart["lines"], {**cart["lines"][0], "category_ids": ["spring", "spring"]}]
    second = {**_order("o2", "camp-a"), "created_at": day + 3_600_000, "currency": "EUR"}
    cancelled = {**_order("o3", ""), "status": "CANCELLED", "created_at": day, "currency": "EUR"}
    plain = {"_id": "o4", "status": "CONFIRMED", "subtotal_minor": 900, "discount_minor": 90,
             "created_at": day, "currency": "EUR"}  # fmt: skip
    facts: Facts = defaultdict(dict)
    add_line_costs(facts, [cart, second, cancelled, plain])
    daily = facts["line_costs_daily"]
    # shoe: two lines of o1 and one of o2 (2 x 3000 each), discount 429 each.
    assert daily[("2024-02-29", "EUR", "product", "shoe", "camp-a")] == (1287, 18_000, 6, 2)
    assert daily[("2024-02-29", "EUR", "category", "spring", "camp-a")] == (1287, 18_000, 6, 2)
    assert daily[("2024-02-29", "EUR", "category", "shoes", "camp-a")] == (858, 12_000, 4, 2)
    assert daily[("2024-02-29", "EUR", "product", "sock", "camp-a")] == (142, 2_000, 8, 2)
    assert daily[("2024-02-29", "EUR", "product", "", "")] == (90, 900, 1, 1)
    assert not [key for key in daily if key[3] == "" and key[2] == "category"]
    assert facts["line_costs_monthly"] == {
        ("2024-02-01", *key[1:]): value for key, value in daily.items()
    }
