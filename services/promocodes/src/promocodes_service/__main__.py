"""`python -m promocodes_service`: runs the promo-code service until SIGTERM.

`python -m promocodes_service recover [--stale-seconds N]` runs the recovery sweep once instead
(the same as `python -m promocodes_service.recover`).
"""

from __future__ import annotations

import asyncio
import sys

from promo_libs.config import load_settings
from promo_libs.grpc.server import serve
from promo_libs.logging import configure_logging
from promocodes_service.bootstrap import build
from promocodes_service.config import PromocodesSettings


async def _run(settings: PromocodesSettings) -> None:
    await serve(await build(settings), settings)


def main() -> None:
    if sys.argv[1:2] == ["recover"]:
        from promocodes_service.recover import main as recover

        sys.exit(recover(sys.argv[2:]))
    settings = load_settings(PromocodesSettings)
    configure_logging("promocodes", settings.log_level)
    asyncio.run(_run(settings))


if __name__ == "__main__":
    main()
