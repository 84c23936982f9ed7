"""Running processes for the analytics end-to-end tests, each module with its own database.

- `pipeline`: a generated history published as events to Redis streams, consumed by a real
  sync-consumer process into ClickHouse, drained (on a condition, with a deadline), and an
  analytics service reading that database.
- `empty_analytics`: an analytics service over a migrated, empty database.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from analytics_e2e import (
    ANALYTICS,
    Pipeline,
    assert_summed_once,
    drop,
    migrate,
    service,
    wait_until_drained,
)
from analytics_scenario import Scenario

from devstack.service import ServiceProcess
from devstack.stack import Stack
from promo_libs.bus import ENVELOPE_FIELD, EVENT_ID_FIELD, TYPE_FIELD


@pytest.fixture(scope="module")
def pipeline(stack: Stack) -> Iterator[Pipeline]:
    token = uuid.uuid4().hex[:10]
    database = f"e2e_analytics_{token}"
    streams = {kind: f"promo.events.t{token}.{kind}" for kind in ("users", "promo_codes", "orders")}
    scenario = Scenario.generate(seed=2024)
    client = redis.Redis(
        host=stack.redis_host, port=stack.redis_port, password=stack.redis_password
    )
    consumer = service(
        stack,
        "sync-consumer",
        [sys.executable, "-m", "sync_consumer"],
        {
            "CLICKHOUSE_DATABASE": database,
            "STREAMS": ",".join(streams.values()),
            "CONSUMER_NAME": f"sync-{token}",
            "BATCH_SIZE": "500",
            "BATCH_WAIT_MS": "100",
        },
    )
    analytics = service(stack, "analytics", ANALYTICS, {"CLICKHOUSE_DATABASE": database})
    try:
        consumer.start_and_wait()
        started = time.monotonic()
        for kind, event in scenario.events():
            client.xadd(
                streams[kind],
                {
                    EVENT_ID_FIELD: event.event_id,
                    TYPE_FIELD: event.type,
                    ENVELOPE_FIELD: event.SerializeToString(),
                },
            )
        wait_until_drained(client, streams.values(), "sync-consumer", timeout=60)
        drained = time.monotonic() - started
        assert_summed_once(stack, database, scenario)
        analytics.start_and_wait()
        yield Pipeline(scenario, analytics, database, drained)
    finally:
        analytics.terminate()
        consumer.terminate()
        client.delete(*streams.values(), *(f"{s}.dead-letter" for s in streams.values()))
        client.close()
        drop(stack, database)


@pytest.fixture(scope="module")
def empty_analytics(stack: Stack) -> Iterator[ServiceProcess]:
    database = f"e2e_analytics_empty_{uuid.uuid4().hex[:10]}"
    migrate(stack, database)
    analytics = service(stack, "analytics-empty", ANALYTICS, {"CLICKHOUSE_DATABASE": database})
    try:
        analytics.start_and_wait()
        yield analytics
    finally:
        analytics.terminate()
        drop(stack, database)
