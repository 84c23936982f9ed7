"""sync-consumer's Prometheus metrics (served by the shared bootstrap's /metrics endpoint)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "sync_events_total", "Stream entries handled, by stream and outcome", ["stream", "outcome"]
)
ROWS = Counter("sync_rows_inserted_total", "Rows inserted into ClickHouse", ["table"])
BATCH_SIZE = Histogram(
    "sync_batch_entries",
    "Entries per batch read from a stream",
    ["stream"],
    buckets=(1, 10, 50, 100, 500, 1000, 2000, 5000, 10000),
)
INSERT_LATENCY = Histogram(
    "sync_insert_seconds",
    "Time of one batched INSERT",
    ["table"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DEAD_LETTERS = Counter(
    "sync_dead_letters_total", "Entries sent to the dead-letter stream", ["stream"]
)
LAG = Gauge(
    "sync_consumer_lag_entries", "Entries of a stream not yet delivered to the group", ["stream"]
)
PENDING = Gauge(
    "sync_consumer_pending_entries", "Entries delivered but not yet acknowledged", ["stream"]
)
INSERT_FAILURES = Counter(
    "sync_insert_failures_total", "Failed INSERTs (retried until they succeed)", ["table"]
)
