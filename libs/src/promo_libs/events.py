"""Building promo.v1.EventEnvelope messages and the outbox entries that carry them.

Each producing service maps its domain events to payload messages; this module wraps a payload in
the envelope every consumer relies on (unique event_id for de-duplication, type, time, aggregate,
version, producer, request id) and picks its stream.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from google.protobuf.message import Message

from promo.v1 import events_pb2
from promo_libs.grpc.mapping import timestamp, user_fields
from promo_libs.logging import current_request_id
from promo_libs.outbox import OutboxEntry
from promo_libs.users import UserSnapshot

# One stream per producing service (aggregate family): consumers need per-aggregate order, and a
# family's events share one ordered log.
USERS_STREAM = "promo.events.users"
PROMO_CODES_STREAM = "promo.events.promo_codes"
ORDERS_STREAM = "promo.events.orders"


def user_snapshot_message(user: UserSnapshot) -> events_pb2.UserSnapshot:
    """The user snapshot every event that names a user carries, built the same by every producer."""
    return events_pb2.UserSnapshot(**user_fields(user))


def outbox_entry(
    *,
    stream: str,
    payload_field: str,
    payload: Message,
    aggregate_type: str,
    aggregate_id: str,
    aggregate_version: int,
    producer: str,
    occurred_at: datetime,
) -> OutboxEntry:
    """Wraps `payload` (set as the envelope's oneof `payload_field`) into an outbox entry."""
    event_id = uuid.uuid4().hex
    envelope = events_pb2.EventEnvelope(
        event_id=event_id,
        type=payload.DESCRIPTOR.full_name,
        occurred_at=timestamp(occurred_at),
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=aggregate_version,
        producer=producer,
        request_id=current_request_id(),
    )
    getattr(envelope, payload_field).CopyFrom(payload)
    return OutboxEntry(
        event_id=event_id,
        event_type=envelope.type,
        stream=stream,
        envelope=envelope.SerializeToString(deterministic=True),
        occurred_at=occurred_at,
        aggregate_version=aggregate_version,
    )
