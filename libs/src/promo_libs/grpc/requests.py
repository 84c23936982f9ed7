"""Checks every request of every service gets before its servicer sees it (see interceptors).

Timestamps: a google.protobuf.Timestamp holds seconds from year 1 to year 9999 and nanos below
one second (its documented range), but the wire carries any int64/int32: `ToDatetime()` on
seconds -62135596801 or 2**40 raises OverflowError/ValueError, which became INTERNAL wherever a
servicer converted one. Walking the message by its descriptor checks every Timestamp of every
request in one place -- nested, repeated or in a map, whatever the service -- and names the field
path, so no servicer can forget one.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from promo_libs.errors import FieldViolation

# google/protobuf/timestamp.proto: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_SECONDS = -62_135_596_800
MAX_SECONDS = 253_402_300_799
MAX_NANOS = 999_999_999

_TIMESTAMP = Timestamp.DESCRIPTOR.full_name


def timestamp_violation(value: Timestamp) -> str | None:
    if not MIN_SECONDS <= value.seconds <= MAX_SECONDS:
        return "must be between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
    if not 0 <= value.nanos <= MAX_NANOS:
        return "nanos must be between 0 and 999999999"
    return None


def _children(message: Message, path: str) -> Iterator[tuple[str, Message]]:
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        name = f"{path}{field.name}"
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    yield f"{name}[{key}]", item
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield f"{name}[{index}]", item
        else:
            yield name, value


def timestamp_violations(message: Message, path: str = "") -> list[FieldViolation]:
    """Every Timestamp set anywhere in `message` that is out of its documented range."""
    found: list[FieldViolation] = []
    for name, child in _children(message, path):
        if child.DESCRIPTOR.full_name == _TIMESTAMP:
            problem = timestamp_violation(child)  # type: ignore[arg-type]
            if problem is not None:
                found.append(FieldViolation(name, problem))
        else:
            found.extend(timestamp_violations(child, f"{name}."))
    return found
