"""The order service's own operator command, `python -m orders_service sweep`: runs the sweep
once (or until nothing is due) and prints what it did as JSON. Same settings as the server.

    --now-offset SECONDS   sweep as if it were that much later (e.g. to settle fresh orders
                           after a crash without waiting for SWEEP_STALE_SECONDS)
    --until-clean          repeat passes until no order is due (at most --max-passes)

Exit code 1 when some order could not be settled yet (`retry_later`).
"""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import timedelta

from orders_service.bootstrap import assemble
from orders_service.config import OrdersSettings
from promo_libs.entrypoint import Command, print_json
from promo_libs.kit import ServiceKit, utc_now


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--now-offset", type=float, default=0.0)
    parser.add_argument("--until-clean", action="store_true")
    parser.add_argument("--max-passes", type=int, default=20)


async def _sweep(settings: OrdersSettings, args: argparse.Namespace) -> int:
    total: Counter[str] = Counter()
    async with ServiceKit(settings) as kit:
        sweeper = (await assemble(settings, kit)).sweeper
        for _ in range(args.max_passes):
            report = await sweeper.sweep_once(utc_now() + timedelta(seconds=args.now_offset))
            total.update(report)
            if not args.until_clean or not report or set(report) <= {"retry_later"}:
                break
    print_json(dict(total))
    return 1 if total.get("retry_later") else 0


SWEEP = Command("sweep", "resolve orders left PENDING or half-cancelled, once", _sweep, _arguments)
