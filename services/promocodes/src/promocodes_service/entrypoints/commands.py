"""The promo-code service's own operator command, `python -m promocodes_service sweep`:
settles interrupted redemptions and releases once.

Safe while the service runs: every reservation is settled through one fenced, exactly-once path.
Prints a JSON report; exit code 0.
"""

from __future__ import annotations

import argparse
import dataclasses
from datetime import timedelta

from promo_libs.entrypoint import Command, print_json
from promo_libs.kit import ServiceKit
from promocodes_service.bootstrap import assemble
from promocodes_service.config import PromocodesSettings

_ROUNDS = 20


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stale-seconds",
        type=float,
        default=None,
        help="settle reservations at least this old (default SWEEP_STALE_SECONDS)",
    )


async def _sweep(settings: PromocodesSettings, args: argparse.Namespace) -> int:
    age = None if args.stale_seconds is None else timedelta(seconds=args.stale_seconds)
    total: dict[str, int] = {}
    async with ServiceKit(settings) as kit:
        sweeper = (await assemble(settings, kit)).sweeper
        for _ in range(_ROUNDS):  # a round handles up to a batch of codes
            report = dataclasses.asdict(await sweeper.sweep(age))
            for key, value in report.items():
                total[key] = value if key == "still_fresh" else total.get(key, 0) + value
            if not sum(v for k, v in report.items() if k != "still_fresh"):
                break
    print_json(total)
    return 0


SWEEP = Command("sweep", "settle interrupted redemptions and releases, once", _sweep, _arguments)
