"""The transactional outbox, as fields of the changed document itself (DESIGN.md, Outbox).

An aggregate's events are stored under `outbox.<event_id>` in the same single-document write as
the change, with `outbox_pending: true`; the relay (publishing them to Redis) clears them. This
module only shapes those fields; it knows nothing about the bus.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from promo_libs.mongo.times import to_millis


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One serialized promo.v1.EventEnvelope waiting to be published."""

    event_id: str
    event_type: str
    stream: str
    occurred_at: datetime
    envelope: bytes

    def as_document(self) -> dict[str, Any]:
        return {
            "type": self.event_type,
            "stream": self.stream,
            "occurred_at": to_millis(self.occurred_at),
            # Base64 text, not BSON binary: the local MongoDB stand-in cannot store bytes written
            # by update_one's $set ("Object of type bytes is not JSON serializable").
            "envelope": base64.b64encode(self.envelope).decode("ascii"),
        }


def outbox_fields(events: Sequence[OutboxEntry], *, nested: bool) -> dict[str, Any]:
    """Fields that store `events`: a nested map for an insert, dotted paths for an update."""
    if not events:
        return {"outbox": {}, "outbox_pending": False} if nested else {}
    if nested:
        return {
            "outbox": {e.event_id: e.as_document() for e in events},
            "outbox_pending": True,
        }
    fields: dict[str, Any] = {f"outbox.{e.event_id}": e.as_document() for e in events}
    fields["outbox_pending"] = True
    return fields


def decode_envelope(stored: dict[str, Any]) -> bytes:
    """The serialized promo.v1.EventEnvelope of one stored outbox entry."""
    return base64.b64decode(stored["envelope"])
