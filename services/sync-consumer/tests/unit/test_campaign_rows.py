"""Campaign events become campaigns rows, the snapshots' campaign ids land on codes, usages and
orders, and the version guard stores each (campaign, version) once, whatever part of a failed
insert landed and however often a batch is delivered (in-memory sink, pure unit)."""

from datetime import UTC, datetime

import pytest

from promo.v1 import events_pb2
from promo_libs.analytics_schema import CAMPAIGNS, ENTITY_KEYS, ORDERS, PROMO_CODES, USAGES
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD
from sync_consumer.adapters.event_rows import DERIVED, rows_for
from sync_consumer.domain.model import MalformedEvent, StreamEntry
from sync_consumer.service_layer.pipeline import StreamPipeline
from sync_consumer_testing import synthetic
from sync_consumer_testing.memory import InMemoryDeadLetters, InMemoryFailures, InMemorySink

pytestmark = pytest.mark.unit

AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
STREAM = synthetic.PROMO_CODES_STREAM


def entry(message: events_pb2.EventEnvelope, n: int = 0) -> StreamEntry:
    return StreamEntry(
        STREAM,
        f"5000-{n}",
        {EVENT_ID_FIELD: message.event_id.encode(), ENVELOPE_FIELD: message.SerializeToString()},
    )


def test_a_campaign_event_maps_its_rules_and_each_limit_set_or_not() -> None:
    limited = synthetic.campaign("k1", AT, max_uses=0, budget_minor=5000)
    (created,) = rows_for(entry(synthetic.campaign_event("created", limited, version=1, at=AT)))
    assert created.table == CAMPAIGNS
    row = created.row
    assert (row["campaign_id"], row["version"], row["display_name"]) == ("k1", 1, "Campaign k1")
    # A limit of 0 is a set limit, not "none": the flag says which.
    assert (row["has_max_uses"], row["max_uses"]) == (1, 0)
    assert (row["has_budget"], row["budget_minor"], row["currency_code"]) == (1, 5000, "EUR")
    assert (row["has_max_uses_per_user"], row["max_uses_per_user"]) == (0, 0)
    assert row["create_time"] == "2026-03-01 12:00:00"
    plain = synthetic.campaign("k2", AT)
    (updated,) = rows_for(entry(synthetic.campaign_event("updated", plain, version=4, at=AT)))
    assert updated.row["version"] == 4 and updated.row["event_type"] == "promo.v1.CampaignUpdated"
    assert (updated.row["has_max_uses"], updated.row["has_budget"]) == (0, 0)


def test_codes_usages_and_orders_carry_their_campaign() -> None:
    (code,) = rows_for(entry(synthetic.promo_code_created("p1", AT, campaign_id="k1")))
    (usage,) = rows_for(
        entry(
            synthetic.usage_event(
                "redeemed", "s1", "p1", "u1", AT, amount=100, discount=10, version=1,
                campaign_id="k1",
            )
        )
    )  # fmt: skip
    (order,) = rows_for(
        entry(
            synthetic.order_event(
                "confirmed", "o1", "u1", AT, subtotal=100, discount=10, code_id="p1",
                version=2, campaign_id="k1",
            )
        )
    )  # fmt: skip
    assert [(r.table, r.row["campaign_id"]) for r in (code, usage, order)] == [
        (PROMO_CODES, "k1"),
        (USAGES, "k1"),
        (ORDERS, "k1"),
    ]
    (outside,) = rows_for(entry(synthetic.promo_code_created("p2", AT)))
    assert outside.row["campaign_id"] == ""  # and so for events of producers before campaigns


@pytest.mark.parametrize(
    "payload",
    [
        events_pb2.CampaignCreated(),
        events_pb2.CampaignUpdated(campaign=events_pb2.CampaignSnapshot()),
    ],
    ids=["no-snapshot", "no-id"],
)
def test_a_campaign_event_without_its_campaign_is_malformed(payload: object) -> None:
    field = (
        "campaign_created"
        if isinstance(payload, events_pb2.CampaignCreated)
        else "campaign_updated"
    )
    message = synthetic.envelope(
        field, payload, aggregate_type="campaign", aggregate_id="k1", version=1, at=AT
    )
    with pytest.raises(MalformedEvent):
        rows_for(entry(message))


def test_the_campaigns_table_is_guarded_by_its_entity_key() -> None:
    assert ENTITY_KEYS[CAMPAIGNS] == "campaign_id"
    assert CAMPAIGNS not in DERIVED  # nothing is derived from it: readers take argMax


async def _no_sleep(_: float) -> None:
    return None


def pipeline(sink: InMemorySink) -> StreamPipeline:
    return StreamPipeline(
        STREAM,
        sink,
        InMemoryDeadLetters(),
        rows_for,
        InMemoryFailures(),
        sleep=_no_sleep,
        versioned=ENTITY_KEYS,
        derived=DERIVED,
    )


def batch() -> list[StreamEntry]:
    events = [
        synthetic.campaign_event("created", synthetic.campaign("k1", AT), version=1, at=AT),
        synthetic.campaign_event("created", synthetic.campaign("k2", AT), version=1, at=AT),
        synthetic.campaign_event(
            "updated", synthetic.campaign("k1", AT, max_uses=5), version=2, at=AT
        ),
    ]
    return [entry(e, n) for n, e in enumerate(events)]


async def test_a_cut_insert_and_a_redelivered_batch_store_each_campaign_version_once() -> None:
    sink = InMemorySink(failures_left=1, partial=1)  # the first row lands, then the error
    events = batch()
    await pipeline(sink).handle(events)
    await pipeline(sink).handle(events)  # delivered again
    # The same events at new stream positions (a relay publishing again) are skipped too.
    await pipeline(sink).handle(
        [StreamEntry(STREAM, f"6000-{n}", e.fields) for n, e in enumerate(events)]
    )
    stored = sorted((r["campaign_id"], r["version"]) for r in sink.tables[CAMPAIGNS])
    assert stored == [("k1", 1), ("k1", 2), ("k2", 1)]
