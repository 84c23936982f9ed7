"""`python -m orders_service.sweep`: runs the recovery sweep once (or until nothing is due) and
prints what it did as JSON. Same settings as the server.

    --now-offset SECONDS   sweep as if it were that much later (e.g. to settle fresh orders
                           after a crash without waiting for SWEEP_STALE_SECONDS)
    --until-clean          repeat passes until no order is due (at most --max-passes)
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter
from datetime import timedelta

from orders_service.bootstrap import assemble, utc_now
from orders_service.config import OrdersSettings
from promo_libs.config import load_settings
from promo_libs.logging import configure_logging


async def _sweep(settings: OrdersSettings, offset: float, until_clean: bool, passes: int) -> int:
    assembly = await assemble(settings)
    total: Counter[str] = Counter()
    try:
        for _ in range(passes):
            report = await assembly.sweeper.sweep_once(utc_now() + timedelta(seconds=offset))
            total.update(report)
            if not until_clean or not report or set(report) <= {"retry_later"}:
                break
    finally:
        await assembly.close()
    print(json.dumps(dict(total), sort_keys=True))
    return 1 if total.get("retry_later") else 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m orders_service.sweep")
    parser.add_argument("--now-offset", type=float, default=0.0)
    parser.add_argument("--until-clean", action="store_true")
    parser.add_argument("--max-passes", type=int, default=20)
    args = parser.parse_args()
    settings = load_settings(OrdersSettings)
    configure_logging("orders-sweep", settings.log_level)
    raise SystemExit(
        asyncio.run(_sweep(settings, args.now_offset, args.until_clean, args.max_passes))
    )


if __name__ == "__main__":
    main()
