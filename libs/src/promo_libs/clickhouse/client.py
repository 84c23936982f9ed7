"""An aiochclient client built from ClickHouseSettings, and the value formats ClickHouse accepts.

Datetimes go to ClickHouse as naive UTC text (`YYYY-MM-DD hh:mm:ss`): the 18.16 server used
locally rejects the `+00:00` offsets aiochclient writes for aware datetimes, and every DateTime
column of the project is declared `DateTime('UTC')`, so the text means the same everywhere.
"""

from __future__ import annotations

import functools
import ssl
from datetime import UTC, date, datetime

import aiohttp
from aiochclient import ChClient

from promo_libs.config import ClickHouseSettings

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _ChClient(ChClient):  # type: ignore[misc]  # aiochclient has no type hints
    """aiochclient's client, without tokenizing the statements whose kind the text shows.

    aiochclient runs every statement through sqlparse only to learn its kind (does it return
    rows?) and whether it names a FORMAT. On the derived tables' INSERT ... SELECT statements
    and the analytics SELECTs that was most of sync-consumer's CPU (py-spy under
    pipeline_bench: 2.7 s of 7.3 s of work). A statement that starts with SELECT or INSERT and
    has no FORMAT anywhere gets the answer sqlparse gives it (tests/unit: both agree on every
    statement the project builds); any other goes through sqlparse as before.
    """

    @staticmethod
    def _parse_squery(query: str) -> tuple[bool, bool, str]:
        head = query.lstrip()[:7].upper()
        if "FORMAT" not in query.upper():
            if head.startswith("SELECT") and head[6:7].isspace():
                return True, False, "SELECT"
            if head.startswith("INSERT") and head[6:7].isspace():
                return False, False, "INSERT"
        parsed: tuple[bool, bool, str] = ChClient._parse_squery(query)
        return parsed


class ClickHouse:
    """Owns one HTTP session and the client on it. Nothing connects at import time."""

    def __init__(self, settings: ClickHouseSettings, timeout_seconds: float = 30.0) -> None:
        self.settings = settings
        self.database = settings.clickhouse_database
        self._timeout = timeout_seconds
        self._session: aiohttp.ClientSession | None = None
        self._client: ChClient | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.clickhouse_secure else "http"
        return f"{scheme}://{self.settings.clickhouse_host}:{self.settings.clickhouse_port}/"

    def _tls(self) -> ssl.SSLContext | bool:
        """The server's verification over HTTPS (hostname checked, the configured bundle or the
        system's); True (aiohttp's default verification) over plain HTTP, where it is unused."""
        if not self.settings.clickhouse_secure:
            return True
        ca = self.settings.clickhouse_tls_ca_file
        return ssl.create_default_context(cafile=None if ca is None else str(ca))

    def connect(self) -> ChClient:
        if self._client is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    keepalive_timeout=self.settings.clickhouse_keepalive_seconds,
                    ssl=self._tls(),
                ),
                timeout=aiohttp.ClientTimeout(total=self._timeout, connect=5.0),
            )
            self._client = _ChClient(
                self._session,
                url=self.url,
                user=self.settings.clickhouse_user,
                password=self.settings.clickhouse_password.get_secret_value() or None,
                # The server's own `default` database: the analytics database may not exist
                # yet (migrations create it); every statement names its tables in full.
                database="default",
            )
        return self._client

    @property
    def client(self) -> ChClient:
        if self._client is None:
            raise RuntimeError("ClickHouse.connect() has not been called")
        return self._client

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        self._session = None
        self._client = None

    async def ping(self) -> bool:
        try:
            return bool(await self.client.is_alive())
        except Exception:
            return False


def ch_datetime(moment: datetime | None) -> str:
    """A DateTime('UTC') value; None (unset) becomes the epoch, ClickHouse's zero."""
    if moment is None:
        moment = EPOCH
    if moment.tzinfo is None:
        raise ValueError("naive datetime: every moment in this system is timezone-aware UTC")
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@functools.lru_cache(maxsize=1 << 16)
def ch_datetime_of_second(seconds: int) -> str:
    """ch_datetime of a whole second since the epoch. Cached: the events of a batch name few
    distinct seconds, and formatting each anew was the largest cost of mapping events to rows."""
    return ch_datetime(datetime.fromtimestamp(seconds, UTC))


def ch_date(moment: datetime | date) -> str:
    if isinstance(moment, datetime):
        moment = moment.astimezone(UTC).date()
    return moment.isoformat()
