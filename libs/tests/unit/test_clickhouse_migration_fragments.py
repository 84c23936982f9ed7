"""ClickHouse migrations name shared column lists as `${fragment}`: written out on apply, with
the checksum of the written-out text, so moving a list into a fragment changes no statement and
no recorded checksum; an unknown fragment fails loudly instead of reaching ClickHouse. An ADD
COLUMN IF NOT EXISTS is run so that 18.16, which lacks the clause, takes it, and runs twice."""

from pathlib import Path

import pytest

from promo_libs import analytics_schema
from promo_libs.clickhouse.migrations import SqlMigration, execute_statement, load_migrations

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


class ColumnsClient:
    """As much of a ChClient as the migrator's ADD COLUMN uses: one table's columns, and an
    ALTER that refuses what ClickHouse 18.16 refuses (IF NOT EXISTS, a column twice)."""

    def __init__(self, columns: set[str], added_meanwhile: str = "") -> None:
        self.columns = columns
        self.executed: list[str] = []
        self._meanwhile = added_meanwhile  # another process adds it between check and ALTER

    async def fetch(self, query: str) -> list[dict[str, int]]:
        name = query.rsplit("name = '", 1)[1].rstrip("'")
        return [{"n": int(name in self.columns)}]

    async def execute(self, query: str) -> None:
        self.executed.append(query)
        if "IF NOT EXISTS" in query:
            raise RuntimeError("Code: 62, Syntax error")
        if self._meanwhile:
            self.columns.add(self._meanwhile)
        column = query.split("ADD COLUMN ", 1)[1].split(maxsplit=1)[0]
        if column in self.columns:
            raise RuntimeError("Code: 15, column already exists")
        self.columns.add(column)


ADD = "ALTER TABLE db.promo_codes ADD COLUMN IF NOT EXISTS campaign_id String"


async def test_add_column_if_not_exists_is_run_the_way_18_16_takes_it() -> None:
    client = ColumnsClient({"promo_code_id"})
    await execute_statement(client, ADD)  # type: ignore[arg-type]
    assert client.executed == ["ALTER TABLE db.promo_codes ADD COLUMN campaign_id String"]
    await execute_statement(client, ADD)  # type: ignore[arg-type]  # a re-run adds nothing
    assert len(client.executed) == 1 and "campaign_id" in client.columns


async def test_a_column_another_process_added_first_is_no_failure() -> None:
    client = ColumnsClient(set(), added_meanwhile="campaign_id")
    await execute_statement(client, ADD)  # type: ignore[arg-type]
    assert "campaign_id" in client.columns


async def test_any_other_statement_goes_through_unchanged() -> None:
    client = ColumnsClient(set())
    with pytest.raises(RuntimeError, match="Syntax"):  # IF NOT EXISTS elsewhere: as written
        await execute_statement(client, "CREATE TABLE IF NOT EXISTS db.t (a String)")  # type: ignore[arg-type]
