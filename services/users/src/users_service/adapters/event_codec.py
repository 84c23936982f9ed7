"""User domain events -> promo.v1 event envelopes in the outbox."""

from __future__ import annotations

from collections.abc import Sequence

from promo.v1 import events_pb2
from promo_libs.events import USERS_STREAM, outbox_entry, user_snapshot_message
from promo_libs.outbox import OutboxEntry
from users_service.domain.events import (
    UserCreated,
    UserDeactivated,
    UserEvent,
    UserUpdated,
)

PRODUCER = "users"


def _payload(
    event: UserEvent,
) -> tuple[str, events_pb2.UserCreated | events_pb2.UserUpdated | events_pb2.UserDeactivated]:
    snapshot = user_snapshot_message(event.user)
    if isinstance(event, UserCreated):
        return "user_created", events_pb2.UserCreated(user=snapshot)
    if isinstance(event, UserUpdated):
        return "user_updated", events_pb2.UserUpdated(
            user=snapshot, changed_fields=list(event.changed_fields)
        )
    if isinstance(event, UserDeactivated):
        return "user_deactivated", events_pb2.UserDeactivated(user=snapshot)
    raise TypeError(f"unknown user event {event!r}")


def encode_events(events: Sequence[UserEvent], version: int) -> list[OutboxEntry]:
    entries = []
    for event in events:
        field, payload = _payload(event)
        entries.append(
            outbox_entry(
                stream=USERS_STREAM,
                payload_field=field,
                payload=payload,
                aggregate_type="user",
                aggregate_id=event.user.id,
                aggregate_version=version,
                producer=PRODUCER,
                occurred_at=event.occurred_at,
            )
        )
    return entries
