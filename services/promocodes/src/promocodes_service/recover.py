"""`python -m promocodes_service.recover`: settles interrupted redemptions and releases once.

Safe while the service runs: every reservation is settled through one fenced, exactly-once path.
Prints a JSON report; exit code 0.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
from datetime import timedelta

from promo_libs.config import load_settings
from promo_libs.logging import configure_logging
from promocodes_service.bootstrap import build_recovery, connect_storage
from promocodes_service.config import PromocodesSettings

_ROUNDS = 20


async def _recover(settings: PromocodesSettings, stale_seconds: float | None) -> dict[str, int]:
    storage = await connect_storage(settings)
    try:
        recovery = build_recovery(settings, storage)
        age = None if stale_seconds is None else timedelta(seconds=stale_seconds)
        total: dict[str, int] = {}
        for _ in range(_ROUNDS):  # a round handles up to a batch of codes
            report = dataclasses.asdict(await recovery.sweep(age))
            for key, value in report.items():
                total[key] = value if key == "still_fresh" else total.get(key, 0) + value
            if not sum(v for k, v in report.items() if k != "still_fresh"):
                break
        return total
    finally:
        await storage.connection.disconnect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m promocodes_service.recover", description=__doc__
    )
    parser.add_argument(
        "--stale-seconds",
        type=float,
        default=None,
        help="settle reservations at least this old (default RECOVERY_STALE_SECONDS)",
    )
    args = parser.parse_args(argv)
    settings = load_settings(PromocodesSettings)
    configure_logging("promocodes-recover", settings.log_level)
    print(json.dumps(asyncio.run(_recover(settings, args.stale_seconds))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
