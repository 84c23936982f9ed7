"""`python -m analytics_service`: runs the analytics service until SIGTERM."""

from __future__ import annotations

import asyncio

from analytics_service.bootstrap import build
from analytics_service.config import AnalyticsSettings
from promo_libs.config import load_settings
from promo_libs.grpc.server import serve
from promo_libs.logging import configure_logging


async def _run(settings: AnalyticsSettings) -> None:
    await serve(await build(settings), settings)


def main() -> None:
    settings = load_settings(AnalyticsSettings)
    configure_logging("analytics", settings.log_level)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
