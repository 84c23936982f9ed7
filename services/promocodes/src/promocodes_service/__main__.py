"""`python -m promocodes_service`: runs the promo-code service until SIGTERM.

`python -m promocodes_service migrate` applies the database migrations and exits (the deployment's
migrations Job); serving applies them at start-up too.
`python -m promocodes_service recover [--stale-seconds N]` runs the recovery sweep once
(the same as `python -m promocodes_service.recover`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from promo_libs.config import load_settings
from promo_libs.grpc.server import serve
from promo_libs.logging import configure_logging
from promo_libs.mongo.migrations import migrate
from promocodes_service.adapters.migrations import MIGRATIONS
from promocodes_service.bootstrap import build
from promocodes_service.config import PromocodesSettings


async def _run(settings: PromocodesSettings) -> None:
    await serve(await build(settings), settings)


def main() -> None:
    if sys.argv[1:2] == ["recover"]:
        from promocodes_service.recover import main as recover

        sys.exit(recover(sys.argv[2:]))
    parser = argparse.ArgumentParser(prog="python -m promocodes_service", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    command = parser.parse_args().command
    settings = load_settings(PromocodesSettings)
    configure_logging("promocodes", settings.log_level)
    if command == "migrate":
        print(json.dumps({"applied": asyncio.run(migrate(settings, MIGRATIONS))}), flush=True)
        return
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
