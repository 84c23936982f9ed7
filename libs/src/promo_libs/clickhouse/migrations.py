"""Versioned SQL migrations for ClickHouse: applied by `migrate`, recorded, idempotent.

A migrations folder holds `NNN_name.sql` files, applied in version order. `${database}` in a
file is replaced by the configured database, and `${<fragment>}` by a named piece of SQL the
schema's owner passes (column lists that several tables share, written once). Statements are
separated by `;` at the end of a line (ClickHouse's HTTP interface takes one statement per
request). Every statement must be idempotent (`IF NOT EXISTS`), because a process that dies in
the middle of a file applies the whole file again; the version is recorded in
`<database>.schema_migrations` once it is done. Two processes starting together may both apply
a file: harmless for the same reason.

`ALTER TABLE db.t ADD COLUMN IF NOT EXISTS c Type` (one column per statement) is how a migration
adds a column. ClickHouse 18.16 does not know that IF NOT EXISTS, so the migrator runs it itself:
it adds the column without the clause only when `system.columns` lacks it, and after a failed
ALTER looks again (another process may have added it meanwhile), so a re-run adds nothing and
fails on nothing.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from aiochclient import ChClient

from promo_libs.clickhouse.client import ch_datetime
from promo_libs.logging import get_logger

log = get_logger(__name__)

_FILE_NAME = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")
_ADD_COLUMN = re.compile(
    r"^ALTER\s+TABLE\s+(?P<database>\w+)\.(?P<table>\w+)\s+ADD\s+COLUMN\s+IF\s+NOT\s+EXISTS"
    r"\s+(?P<column>\w+)\s+(?P<definition>\S.*)$",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class SqlMigration:
    version: int
    name: str
    sql: str
    fragments: Mapping[str, str] = field(default_factory=dict)

    @property
    def checksum(self) -> str:
        # Of the text with its fragments written out: moving a column list into a fragment
        # leaves the checksum a database recorded unchanged.
        expanded = string.Template(self.sql).safe_substitute(self.fragments)
        return hashlib.sha256(expanded.encode()).hexdigest()[:16]

    def statements(self, database: str) -> list[str]:
        text = string.Template(self.sql).substitute(self.fragments, database=database)
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
        return [s.strip() for s in re.split(r";\s*$", "\n".join(lines), flags=re.M) if s.strip()]


def load_migrations(folder: Path, fragments: Mapping[str, str] | None = None) -> list[SqlMigration]:
    migrations = []
    for path in sorted(folder.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} is not named NNN_name.sql")
        migrations.append(SqlMigration(int(match[1]), match[2], path.read_text(), fragments or {}))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migrations share a version in {folder}")
    return sorted(migrations, key=lambda m: m.version)


async def applied_versions(client: ChClient, database: str) -> set[int]:
    rows = await client.fetch(f"SELECT DISTINCT version FROM {database}.schema_migrations")
    return {int(row["version"]) for row in rows}


async def pending_versions(
    client: ChClient, database: str, migrations: list[SqlMigration]
) -> list[int]:
    """The versions not applied yet, read without DDL (what a writer without it may ask)."""
    row = await client.fetchrow(f"EXISTS TABLE {database}.schema_migrations")
    done = await applied_versions(client, database) if row is not None and row[0] else set()
    return [m.version for m in migrations if m.version not in done]


async def _has_column(client: ChClient, database: str, table: str, column: str) -> bool:
    # The names matched \w+ (_ADD_COLUMN), so they need no quoting beyond the literal quotes.
    rows = await client.fetch(
        "SELECT toUInt64(count()) AS n FROM system.columns"
        f" WHERE database = '{database}' AND table = '{table}' AND name = '{column}'"
    )
    return bool(rows) and int(rows[0]["n"]) > 0


async def execute_statement(client: ChClient, statement: str) -> None:
    """Runs one migration statement; an ADD COLUMN IF NOT EXISTS the way every server takes it."""
    match = _ADD_COLUMN.match(statement)
    if match is None:
        await client.execute(statement)
        return
    database, table, column = match["database"], match["table"], match["column"]
    if await _has_column(client, database, table, column):
        return
    try:
        await client.execute(
            f"ALTER TABLE {database}.{table} ADD COLUMN {column} {match['definition']}"
        )
    except Exception:
        if not await _has_column(client, database, table, column):
            raise  # not a concurrent run that added it first


async def apply_migrations(
    client: ChClient, database: str, migrations: list[SqlMigration]
) -> list[int]:
    """Creates the database and the record table, applies what is missing; returns versions."""
    await client.execute(f"CREATE DATABASE IF NOT EXISTS {database}")
    await client.execute(
        f"CREATE TABLE IF NOT EXISTS {database}.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime('UTC')) "
        "ENGINE = MergeTree() ORDER BY version"
    )
    done = await applied_versions(client, database)
    applied = []
    for migration in migrations:
        if migration.version in done:
            continue
        log.info("applying clickhouse migration", version=migration.version, name=migration.name)
        for statement in migration.statements(database):
            await execute_statement(client, statement)
        await client.execute(
            f"INSERT INTO {database}.schema_migrations (version, name, checksum, applied_at) "
            "VALUES",
            (
                migration.version,
                migration.name,
                migration.checksum,
                ch_datetime(datetime.now(UTC)),
            ),
        )
        applied.append(migration.version)
    return applied
