"""Reconcile's `order_lines` fact compares each line's campaign with its order's in MongoDB
(issue 14): a line naming another campaign, or one where its order has none, is a difference;
the rest of the line is compared as before. (The query side is proven on ClickHouse by
tests/e2e/test_pipeline.py::test_rebuild_from_mongodb_under_live_load_reconciles.)"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from promo_reconcile import Difference, Facts, add_order_lines, differences


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
