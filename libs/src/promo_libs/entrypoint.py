"""The one `python -m <service>` entrypoint: serve until SIGTERM, or `migrate` and exit.

Each service's __main__ names its settings class, its composition root and how to migrate; the
argument handling, configuration loading and logging set-up are the same everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from promo_libs.config import ServiceSettings, load_settings
from promo_libs.grpc.server import GrpcApp, serve
from promo_libs.logging import configure_logging

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


def run_service(
    module: str,
    name: str,
    settings_class: type[SettingsT],
    build: Callable[[SettingsT], Awaitable[GrpcApp]],
    migrate: Callable[[SettingsT], Coroutine[Any, Any, Sequence[int]]] | None = None,
    argv: Sequence[str] | None = None,
) -> None:
    """`serve` (the default) runs the service; `migrate`, for a service that owns a schema,
    applies its migrations, prints the versions applied as JSON and exits (the deployment's
    migrations Job; serving migrates too)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    commands = ["serve"] if migrate is None else ["serve", "migrate"]
    parser.add_argument("command", nargs="?", choices=commands, default="serve")
    command = parser.parse_args(argv).command
    settings = load_settings(settings_class)
    configure_logging(name, settings.log_level)
    if command == "migrate" and migrate is not None:
        applied = list(asyncio.run(migrate(settings)))
        print(json.dumps({"applied": applied}), flush=True)
        return

    async def _serve() -> None:
        await serve(await build(settings), settings)

    asyncio.run(_serve())
