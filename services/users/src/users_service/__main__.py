"""`python -m users_service`: runs the user service until SIGTERM."""

from __future__ import annotations

import asyncio

from promo_libs.config import load_settings
from promo_libs.grpc.server import serve
from promo_libs.logging import configure_logging
from users_service.bootstrap import build
from users_service.config import UsersSettings


async def _run(settings: UsersSettings) -> None:
    await serve(await build(settings), settings)


def main() -> None:
    settings = load_settings(UsersSettings)
    configure_logging("users", settings.log_level)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
