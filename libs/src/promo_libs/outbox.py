"""The transactional outbox, as fields of the changed document itself (DESIGN.md, Outbox).

An aggregate's events are stored under `outbox.<event_id>` in the same single-document write as
the change, with `outbox_pending: true`; the relay (publishing them to Redis) clears them. This
module shapes those fields and reads them back; it knows nothing about the bus or the database
driver.

Each stored entry holds, as plain fields, everything the relay needs to order and publish it:
`type`, `stream`, `occurred_at` (epoch ms), `aggregate_version` and `envelope` (the serialized
promo.v1.EventEnvelope), so the relay never parses an envelope. Entries written before the
version was a field are still read: it is then taken from the envelope, for those entries only.

The envelope is base64 text, not BSON binary: the local MongoDB stand-in answers an update
that carries bytes and breaks a unique index with "Object of type bytes is not JSON
serializable" (WriteError 8) instead of DuplicateKeyError, and the services decide idempotency
and unique e-mails by that error (docs/mongodb-stand-in.md). Bytes already stored (MongoDB
stores BSON binary) are read too.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from promo.v1 import events_pb2
from promo_libs.mongo.times import from_millis, to_millis

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One serialized promo.v1.EventEnvelope bound for `stream`: what a service writes into its
    outbox, what the relay publishes and what a replay republishes (one class for all three)."""

    event_id: str
    event_type: str
    stream: str
    envelope: bytes
    occurred_at: datetime = _EPOCH
    aggregate_version: int = 0

    def as_document(self) -> dict[str, Any]:
        return {
            "type": self.event_type,
            "stream": self.stream,
            "occurred_at": to_millis(self.occurred_at),
            "aggregate_version": self.aggregate_version,
            "envelope": base64.b64encode(self.envelope).decode("ascii"),
        }

    @property
    def publish_order(self) -> tuple[int, datetime, str]:
        """Entries of one aggregate are published by version (then time, then id)."""
        return self.aggregate_version, self.occurred_at, self.event_id


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
    """The serialized promo.v1.EventEnvelope of one stored outbox entry (old or new form)."""
    envelope = stored["envelope"]
    if isinstance(envelope, str):
        return base64.b64decode(envelope)
    return bytes(envelope)  # BSON binary


def stored_entry(event_id: str, stored: dict[str, Any]) -> OutboxEntry:
    """One stored outbox entry, as written by `outbox_fields`."""
    envelope = decode_envelope(stored)
    version = stored.get("aggregate_version")
    if version is None:  # an entry of the old form: only its envelope knows the version
        try:
            version = events_pb2.EventEnvelope.FromString(envelope).aggregate_version
        except Exception:  # an undecodable envelope is still published, first
            version = 0
    return OutboxEntry(
        event_id=event_id,
        event_type=str(stored["type"]),
        stream=str(stored["stream"]),
        envelope=envelope,
        occurred_at=from_millis(int(stored.get("occurred_at") or 0)),
        aggregate_version=int(version),
    )


def stored_entries(document: dict[str, Any]) -> list[OutboxEntry]:
    """A document's outbox entries, in stored order (the relay orders them for publishing)."""
    outbox: dict[str, dict[str, Any]] = document.get("outbox") or {}
    return [stored_entry(event_id, stored) for event_id, stored in outbox.items()]
