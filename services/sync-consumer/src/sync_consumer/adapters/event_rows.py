"""promo.v1 event envelopes -> ClickHouse rows (denormalized, one row per event and table; an
order event also gives one order_lines row per line of the order).

Each row carries the event's id, type and time, the entity's version (ReplacingMergeTree keeps
the highest) and the source stream position (the exactly-once guard). Payloads this consumer
does not know yield no rows (the contract only ever adds payloads); an entry that is not a
valid envelope, or lacks the snapshot its type needs, is malformed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from promo.v1 import events_pb2, orders_pb2, promo_codes_pb2
from promo_libs.analytics_schema import (
    CAMPAIGNS,
    CODE_DICTIONARY,
    CODE_ORDERS_DAILY,
    CODE_ORDERS_HOURLY,
    CODE_ORDERS_MONTHLY,
    LINE_COSTS_DAILY,
    LINE_COSTS_MONTHLY,
    ORDER_LINES,
    ORDERS,
    ORDERS_DAILY,
    ORDERS_HOURLY,
    ORDERS_MONTHLY,
    PROMO_CODES,
    USAGES,
    USAGES_DAILY,
    USAGES_MONTHLY,
    USERS,
    USERS_ANALYTICS,
)
from promo_libs.bus import ENVELOPE_FIELD
from promo_libs.clickhouse.client import EPOCH, ch_date, ch_datetime, ch_datetime_of_second
from sync_consumer.domain.model import MalformedEvent, Row, StreamEntry, TableRow


def _summary_scope(date_column: str) -> Callable[[Row], dict[str, str]]:
    return lambda row: {"user_id": str(row["user_id"]), "day": str(row[date_column])}


def _usage_days(row: Row) -> dict[str, str]:
    # usages_daily keys a usage by its creation day and, once released, by its release day too;
    # a scope column holds one value per row, so the release day has a column of its own.
    scope = {"day": str(row["usage_date"])}
    if row["status"] == "RELEASED":
        scope["release_day"] = str(row["release_time"])[:10]
    return scope


def _code_days(row: Row) -> dict[str, str]:
    # A row naming no code touches no key of code_orders_daily (an empty scope column: no key).
    code = str(row["promo_code_id"])
    return {"day": str(row["order_date"]), "promo_code_id": code} if code else {}


def _months(row: Row) -> dict[str, str]:
    return {"month": str(row["order_date"])}


def _code_months(row: Row) -> dict[str, str]:
    code = str(row["promo_code_id"])
    return {"month": str(row["order_date"]), "promo_code_id": code} if code else {}


def _usage_months(row: Row) -> dict[str, str]:
    # The months of both days _usage_days names; "month" holds any day of each month. A
    # release lands in its release month, which is then refreshed for the usage's code.
    days = _usage_days(row)
    months = {"month": days["day"], "promo_code_id": str(row["promo_code_id"])}
    if "release_day" in days:
        months["release_month"] = days["release_day"]
    return months


def _named_code(key: str, text: str) -> Callable[[Row], dict[str, str]]:
    # The code dictionary's facts of a row that names a code by text and id (adapters.derived).
    return lambda row: {key: str(row[key])} if row[text] and row["promo_code_id"] else {}


# Derived tables each source table feeds (adapters.derived), with the key values a row touches.
DERIVED: dict[str, list[tuple[str, Callable[[Row], dict[str, str]]]]] = {
    ORDERS: [
        (USERS_ANALYTICS, _summary_scope("order_date")),
        (ORDERS_DAILY, lambda row: {"day": str(row["order_date"])}),
        (CODE_ORDERS_DAILY, _code_days),
        # The hours of those days (an hour lies in one day: a day's hours are rewritten whole).
        (ORDERS_HOURLY, lambda row: {"day": str(row["order_date"])}),
        (CODE_ORDERS_HOURLY, _code_days),
        # After the daily ones: a monthly rollup is recomputed from its daily rows.
        (ORDERS_MONTHLY, _months),
        (CODE_ORDERS_MONTHLY, _code_months),
        (CODE_DICTIONARY, _named_code("order_id", "promo_code")),
    ],
    USAGES: [
        (USERS_ANALYTICS, _summary_scope("usage_date")),
        (USAGES_DAILY, _usage_days),
        (USAGES_MONTHLY, _usage_months),
        (CODE_DICTIONARY, _named_code("usage_id", "code")),
    ],
    PROMO_CODES: [(CODE_DICTIONARY, _named_code("promo_code_id", "code"))],
    # A line touches its order's creation day (every key of a day is recomputed together),
    # then that day's month.
    ORDER_LINES: [
        (LINE_COSTS_DAILY, lambda row: {"day": str(row["order_date"])}),
        (LINE_COSTS_MONTHLY, _months),
    ],
}


def _time(value: Timestamp, present: bool = True) -> datetime | None:
    if not present or (value.seconds == 0 and value.nanos == 0):
        return None
    return value.ToDatetime(tzinfo=UTC)


_UNSET = ch_datetime(EPOCH)


def _dt(message: object, name: str) -> str:
    value: Timestamp = getattr(message, name)
    if not message.HasField(name) or (value.seconds == 0 and value.nanos == 0):  # type: ignore[attr-defined]
        return _UNSET
    return ch_datetime_of_second(value.seconds)  # DateTime holds whole seconds


def _require(message: object, name: str) -> None:
    if not message.HasField(name):  # type: ignore[attr-defined]
        raise MalformedEvent(f"{type(message).__name__} without {name}")


def _created(entity: events_pb2.UsageSnapshot | events_pb2.OrderSnapshot, what: str) -> datetime:
    """The entity's required create_time; the epoch itself is no real creation time."""
    _require(entity, "create_time")
    created = _time(entity.create_time)
    if created is None:
        raise MalformedEvent(f"{what} create_time at the epoch")
    return created


def _common(entry: StreamEntry, envelope: events_pb2.EventEnvelope) -> Row:
    ms, seq = entry.position
    return {
        "version": envelope.aggregate_version,
        "event_id": envelope.event_id,
        "event_type": envelope.type,
        "event_time": _dt(envelope, "occurred_at"),
        "src_stream": entry.stream,
        "src_ms": ms,
        "src_seq": seq,
    }


def _discount_type(value: events_pb2.DiscountType.ValueType) -> str:
    return events_pb2.DiscountType.Name(value).removeprefix("DISCOUNT_TYPE_")


def _user(snapshot: events_pb2.UserSnapshot) -> Row:
    return {
        "user_id": snapshot.id,
        "email": snapshot.email,
        "display_name": snapshot.display_name,
        "active": int(snapshot.active),
        "deleted": int(snapshot.HasField("delete_time")),
        "create_time": _dt(snapshot, "create_time"),
        "delete_time": _dt(snapshot, "delete_time"),
    }


def _promo_code(snapshot: events_pb2.PromoCodeSnapshot) -> Row:
    return {
        "promo_code_id": snapshot.id,
        "code": snapshot.code,
        "discount_type": _discount_type(snapshot.discount_type),
        "basis_points": snapshot.basis_points,
        "fixed_amount_minor": snapshot.fixed_amount_minor,
        "max_discount_minor": snapshot.max_discount_minor,
        "currency_code": snapshot.currency_code,
        "max_uses": snapshot.max_uses,
        "max_uses_per_user": snapshot.max_uses_per_user,
        "budget_minor": snapshot.budget_minor,
        "batch_id": snapshot.batch_id,
        "campaign_id": snapshot.campaign_id,
        "active": int(snapshot.active),
        "valid_from": _dt(snapshot, "valid_from"),
        "valid_until": _dt(snapshot, "valid_until"),
        "create_time": _dt(snapshot, "create_time"),
    }


def _campaign(snapshot: events_pb2.CampaignSnapshot) -> Row:
    # An unset limit is none at all, and a set one may be any value: hence the has_ flags.
    return {
        "campaign_id": snapshot.id,
        "display_name": snapshot.display_name,
        "description": snapshot.description,
        "has_max_uses": int(snapshot.HasField("max_uses")),
        "max_uses": snapshot.max_uses,
        "has_max_uses_per_user": int(snapshot.HasField("max_uses_per_user")),
        "max_uses_per_user": snapshot.max_uses_per_user,
        "has_budget": int(snapshot.HasField("budget_minor")),
        "budget_minor": snapshot.budget_minor,
        "currency_code": snapshot.currency_code,
        "valid_from": _dt(snapshot, "valid_from"),
        "valid_until": _dt(snapshot, "valid_until"),
        "create_time": _dt(snapshot, "create_time"),
        "update_time": _dt(snapshot, "update_time"),
    }


def _usage(event: events_pb2.PromoCodeRedeemed | events_pb2.PromoCodeReleased) -> Row:
    _require(event, "usage")
    usage = event.usage
    created = _created(usage, "usage")
    return {
        "usage_id": usage.id,
        "usage_date": ch_date(created),
        "promo_code_id": usage.promo_code_id,
        "code": usage.code,
        "discount_type": _discount_type(event.promo_code.discount_type),
        "user_id": usage.user_id,
        "user_email": event.user.email,
        "order_id": usage.order_id,
        "campaign_id": usage.campaign_id,
        "currency_code": usage.currency_code,
        "order_amount_minor": usage.order_amount_minor,
        "discount_minor": usage.discount_minor,
        "status": promo_codes_pb2.PromoCodeUsageStatus.Name(usage.status).removeprefix(
            "PROMO_CODE_USAGE_STATUS_"
        ),
        "release_reason": usage.release_reason,
        "create_time": _dt(usage, "create_time"),
        "release_time": _dt(usage, "release_time"),
    }


_OrderEvent = (
    events_pb2.OrderCreated
    | events_pb2.OrderConfirmed
    | events_pb2.OrderRejected
    | events_pb2.OrderCancelled
)


def _order(event: _OrderEvent) -> Row:
    _require(event, "order")
    order = event.order
    created = _created(order, "order")
    has_promo = "promo_code" in type(event).DESCRIPTOR.fields_by_name and event.HasField(
        "promo_code"  # type: ignore[arg-type]
    )
    return {
        "order_id": order.id,
        "order_date": ch_date(created),
        "user_id": order.user_id,
        "user_email": event.user.email,
        "currency_code": order.currency_code,
        "subtotal_minor": order.subtotal_minor,
        "discount_minor": order.discount_minor,
        "total_minor": order.total_minor,
        "promo_code": order.promo_code,
        "promo_code_id": order.promo_code_id,
        "promo_code_usage_id": order.promo_code_usage_id,
        "campaign_id": order.campaign_id,
        "discount_type": _discount_type(event.promo_code.discount_type) if has_promo else "",  # type: ignore[union-attr]
        "status": orders_pb2.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_"),
        "rejection_reason": order.rejection_reason,
        "cancellation_reason": order.cancellation_reason,
        "create_time": _dt(order, "create_time"),
        "update_time": _dt(order, "update_time"),
        "confirm_time": _dt(order, "confirm_time"),
        "cancel_time": _dt(order, "cancel_time"),
    }


def _lines(event: _OrderEvent, order_row: Row) -> list[TableRow]:
    """Every line of the order at this event's version, with the order's state: the latest
    version of each line is then the order's latest state (status, discount shares, campaign),
    and a status change reaches every line."""
    order = event.order
    return [
        TableRow(
            ORDER_LINES,
            {
                "line_id": f"{order.id}#{index}",
                "order_id": order.id,
                "line_index": index,
                "order_date": order_row["order_date"],
                "sku": line.sku,
                "product_id": line.product_id,
                "category_ids": list(line.category_ids),
                "quantity": line.quantity,
                "unit_price_minor": line.unit_price_minor,
                "discount_minor": line.discount_minor,
                "currency_code": order.currency_code,
                "user_id": order.user_id,
                "promo_code_id": order.promo_code_id,
                "campaign_id": order.campaign_id,
                "status": order_row["status"],
                "create_time": order_row["create_time"],
            },
        )
        for index, line in enumerate(order.lines)
    ]


def _order_rows(envelope: events_pb2.EventEnvelope, field: str) -> list[TableRow]:
    event = getattr(envelope, field)
    row = _order(event)
    return [TableRow(ORDERS, row), *_lines(event, row)]


def _user_row(envelope: events_pb2.EventEnvelope, field: str) -> list[TableRow]:
    event = getattr(envelope, field)
    _require(event, "user")
    return [TableRow(USERS, _user(event.user))]


def _promo_code_row(envelope: events_pb2.EventEnvelope, field: str) -> list[TableRow]:
    event = getattr(envelope, field)
    _require(event, "promo_code")
    return [TableRow(PROMO_CODES, _promo_code(event.promo_code))]


def _campaign_row(envelope: events_pb2.EventEnvelope, field: str) -> list[TableRow]:
    event = getattr(envelope, field)
    _require(event, "campaign")
    if not event.campaign.id:
        raise MalformedEvent(f"{field} without a campaign id")
    return [TableRow(CAMPAIGNS, _campaign(event.campaign))]


def _usage_row(envelope: events_pb2.EventEnvelope, field: str) -> list[TableRow]:
    return [TableRow(USAGES, _usage(getattr(envelope, field)))]


_MAPPERS: dict[str, Callable[[events_pb2.EventEnvelope, str], list[TableRow]]] = {
    "user_created": _user_row,
    "user_updated": _user_row,
    "user_deactivated": _user_row,
    "promo_code_created": _promo_code_row,
    "promo_code_updated": _promo_code_row,
    "promo_code_deactivated": _promo_code_row,
    "campaign_created": _campaign_row,
    "campaign_updated": _campaign_row,
    "promo_code_redeemed": _usage_row,
    "promo_code_released": _usage_row,
    "order_created": _order_rows,
    "order_confirmed": _order_rows,
    "order_rejected": _order_rows,
    "order_cancelled": _order_rows,
}


def decode(entry: StreamEntry) -> events_pb2.EventEnvelope:
    raw = entry.fields.get(ENVELOPE_FIELD)
    if raw is None:
        raise MalformedEvent("no envelope field")
    try:
        envelope = events_pb2.EventEnvelope.FromString(raw)
    except DecodeError as exc:
        raise MalformedEvent(f"envelope does not decode: {exc}") from None
    if not envelope.event_id:
        raise MalformedEvent("envelope without event_id")
    return envelope


def rows_for(entry: StreamEntry) -> list[TableRow]:
    """The rows one entry adds; MalformedEvent when it can never be stored."""
    envelope = decode(entry)
    field = envelope.WhichOneof("payload")
    mapper = _MAPPERS.get(field or "")
    if mapper is None:
        return []  # a payload added to the contract after this consumer: not ours to store
    try:
        table_rows = mapper(envelope, field or "")
    except (ValueError, OverflowError) as exc:  # e.g. a time no datetime can hold
        raise MalformedEvent(f"{field}: {exc}") from None
    common = _common(entry, envelope)
    for table_row in table_rows:
        table_row.row.update(common)
    return table_rows
