"""Outbox entries as stored fields: the plain form the relay reads, and the old base64 form."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from promo.v1 import events_pb2
from promo_libs.events import outbox_entry
from promo_libs.outbox import OutboxEntry, outbox_fields, stored_entries

NOW = datetime(2026, 12, 2, 3, 0, tzinfo=UTC)


def entry(version: int) -> OutboxEntry:
    return outbox_entry(
        stream="s",
        payload_field="user_created",
        payload=events_pb2.UserCreated(user=events_pb2.UserSnapshot(id="u1")),
        aggregate_type="user",
        aggregate_id="u1",
        aggregate_version=version,
        producer="test",
        occurred_at=NOW,
    )


def test_an_entry_reads_back_as_written_with_its_version_as_a_plain_field() -> None:
    written = entry(7)
    document = outbox_fields([written], nested=True)
    stored = document["outbox"][written.event_id]
    assert stored["aggregate_version"] == 7 and stored["type"] == "promo.v1.UserCreated"
    assert stored_entries(document) == [written]


def test_an_entry_of_the_old_form_is_still_read() -> None:
    """Written before the plain fields: the version only inside the envelope."""
    written = entry(3)
    old = {
        "type": written.event_type,
        "stream": written.stream,
        "occurred_at": int(NOW.timestamp() * 1000),
        "envelope": base64.b64encode(written.envelope).decode("ascii"),
    }
    [read] = stored_entries({"outbox": {written.event_id: old}})
    assert read == written
