"""What `make run` prints of the stack's environment: no secret reaches the screen (or the log
that output is piped into); stack.env keeps the values."""

from __future__ import annotations

from devstack.supervisor import screen_line


def test_secrets_and_uri_passwords_are_not_printed() -> None:
    assert screen_line("CLICKHOUSE_PASSWORD", "s3cret-ch") == (
        "export CLICKHOUSE_PASSWORD='<in stack.env>'"
    )
    line = screen_line("MONGODB_URI", "mongodb://promo:s3cret-mongo@db:27017/?authSource=admin")
    assert "s3cret-mongo" not in line and "mongodb://promo:***@db:27017" in line
    assert screen_line("REDIS_PORT", "6379") == "export REDIS_PORT=6379"
    assert screen_line("CLICKHOUSE_PASSWORD", "") == "export CLICKHOUSE_PASSWORD=''"
