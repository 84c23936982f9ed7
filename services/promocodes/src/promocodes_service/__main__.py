"""`python -m promocodes_service [serve|migrate]`: runs the promo-code service until SIGTERM,
or applies its MongoDB migrations and exits.

`python -m promocodes_service recover [--stale-seconds N]` runs the recovery sweep once
(the same as `python -m promocodes_service.recover`).
"""

from __future__ import annotations

import sys

from promo_libs.entrypoint import run_service
from promo_libs.mongo.migrations import migrate
from promocodes_service.adapters.migrations import MIGRATIONS
from promocodes_service.bootstrap import build
from promocodes_service.config import PromocodesSettings


async def _migrate(settings: PromocodesSettings) -> list[int]:
    return await migrate(settings, MIGRATIONS)


def main() -> None:
    if sys.argv[1:2] == ["recover"]:
        from promocodes_service.recover import main as recover

        sys.exit(recover(sys.argv[2:]))
    run_service("promocodes_service", "promocodes", PromocodesSettings, build, _migrate)


if __name__ == "__main__":
    main()
