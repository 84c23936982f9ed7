"""`python -m users_service`: runs the user service until SIGTERM.

`python -m users_service migrate` applies the database migrations and exits (the deployment's
migrations Job); serving applies them at start-up too.
"""

from __future__ import annotations

import argparse
import asyncio
import json

from promo_libs.config import load_settings
from promo_libs.grpc.server import serve
from promo_libs.logging import configure_logging
from promo_libs.mongo.migrations import migrate
from users_service.adapters.migrations import MIGRATIONS
from users_service.bootstrap import build
from users_service.config import UsersSettings


async def _run(settings: UsersSettings) -> None:
    await serve(await build(settings), settings)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m users_service", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["serve", "migrate"], default="serve")
    command = parser.parse_args().command
    settings = load_settings(UsersSettings)
    configure_logging("users", settings.log_level)
    if command == "migrate":
        print(json.dumps({"applied": asyncio.run(migrate(settings, MIGRATIONS))}), flush=True)
        return
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
