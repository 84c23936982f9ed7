"""The values that cross services, as promo.v1 messages: time, money and a user's facts.

One mapping for every API message (servicers, clients) and event message (codecs, envelopes),
so a Timestamp or a Money is built the same wherever it is sent. Only translation here: the
rules on money (currencies, minor units) are promo_libs.identifiers' and promo_libs.carts'.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from promo.v1 import common_pb2
from promo_libs.carts import MoneyValue
from promo_libs.users import UserSnapshot


def timestamp(moment: datetime | None) -> Timestamp | None:
    """`moment` as a Timestamp (None, an unset field, for None)."""
    if moment is None:
        return None
    result = Timestamp()
    result.FromDatetime(moment)
    return result


def moment(message: Message, field: str) -> datetime | None:
    """A Timestamp field of `message` as an aware UTC datetime; None when it is unset.

    In range: the server interceptor refused every request with a Timestamp that is not
    (promo_libs.grpc.requests)."""
    if not message.HasField(field):
        return None
    value: Timestamp = getattr(message, field)
    return value.ToDatetime(tzinfo=UTC)


def money(currency: str, amount_minor: int) -> common_pb2.Money:
    """An amount in minor units of `currency` as a Money."""
    return common_pb2.Money(currency_code=currency, amount_minor=amount_minor)


def money_value(message: common_pb2.Money) -> MoneyValue:
    """A Money of a request as the plain value the use cases check."""
    return MoneyValue(message.currency_code, message.amount_minor)


def optional_money(message: common_pb2.Money, present: bool) -> MoneyValue | None:
    """The same for an optional field (`present`: its HasField)."""
    return money_value(message) if present else None


def user_fields(user: UserSnapshot) -> dict[str, Any]:
    """A user's facts as the fields promo.v1.User (API) and promo.v1.UserSnapshot (events) share."""
    return {
        "id": user.id,
        "email": user.email,
        "display_name": user.display_name,
        "active": user.active,
        "create_time": timestamp(user.created_at),
        "delete_time": timestamp(user.deleted_at),
    }
