"""ClickHouse migrations name shared column lists as `${fragment}`: written out on apply, with
the checksum of the written-out text, so moving a list into a fragment changes no statement and
no recorded checksum; an unknown fragment fails loudly instead of reaching ClickHouse."""

from pathlib import Path

import pytest

from promo_libs import analytics_schema
from promo_libs.clickhouse.migrations import SqlMigration, load_migrations

pytestmark = pytest.mark.unit

SPELLED_OUT = "CREATE TABLE ${database}.t (\n    id String,\n    a Int64,\n    b Int64\n);\n"
WITH_FRAGMENT = "CREATE TABLE ${database}.t (\n    id String,\n    ${pair}\n);\n"
FRAGMENTS = {"pair": "a Int64,\n    b Int64"}


def test_a_fragment_is_written_out_in_statements_and_checksum() -> None:
    spelled_out = SqlMigration(1, "t", SPELLED_OUT)
    with_fragment = SqlMigration(1, "t", WITH_FRAGMENT, FRAGMENTS)
    assert with_fragment.statements("db") == spelled_out.statements("db")
    assert with_fragment.statements("db") == [
        "CREATE TABLE db.t (\n    id String,\n    a Int64,\n    b Int64\n)"
    ]
    assert with_fragment.checksum == spelled_out.checksum


def test_an_unknown_fragment_is_refused(tmp_path: Path) -> None:
    (tmp_path / "001_t.sql").write_text(WITH_FRAGMENT)
    (migration,) = load_migrations(tmp_path, {})
    with pytest.raises(KeyError, match="pair"):
        migration.statements("db")


def test_every_analytics_migration_writes_out_all_its_fragments() -> None:
    for migration in analytics_schema.migrations():
        for statement in migration.statements("db"):
            assert "${" not in statement
