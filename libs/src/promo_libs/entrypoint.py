"""The one command line of every service: `python -m <service> [serve|migrate|sweep|replay ...]`.

`serve` (also with no command) runs the service until SIGTERM; the other commands are the
service's operator commands, each a `Command` its `__main__` lists: `migrate` (apply the
service's migrations and exit: the deployment's migrations Job; serving migrates too), `sweep`
(finish what a crash interrupted, once), `replay` (publish the current state as events, for a
rebuild of the analytics), and a service's own (sync_consumer's `replay-dead-letters`,
`rebuild`). Argument handling, configuration loading and logging set-up are the same for all;
each command prints one JSON line and its exit code is the process's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from promo_libs.config import ServiceSettings, load_settings
from promo_libs.grpc.server import GrpcApp, serve
from promo_libs.logging import configure_logging

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
# A command written for any settings of a kind (e.g. every MongoDB service's) serves each
# service whose settings are of that kind.
_SettingsT_contra = TypeVar("_SettingsT_contra", bound=ServiceSettings, contravariant=True)


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


@dataclass(frozen=True)
class Command(Generic[_SettingsT_contra]):
    """An operator command: `run` gets the service's settings and the parsed arguments and
    returns the exit code (printing its report with `print_json`)."""

    name: str
    help: str
    run: Callable[[_SettingsT_contra, argparse.Namespace], Coroutine[Any, Any, int]]
    arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments


def print_json(report: object) -> None:
    print(json.dumps(report, sort_keys=True), flush=True)


def migrate_command(
    apply: Callable[[SettingsT], Awaitable[Sequence[int]]],
) -> Command[SettingsT]:
    """`migrate`: applies the service's migrations, prints the versions applied, exits 0."""

    async def run(settings: SettingsT, args: argparse.Namespace) -> int:
        del args
        print_json({"applied": list(await apply(settings))})
        return 0

    return Command("migrate", "apply this service's migrations and exit", run)


def run_service(
    module: str,
    name: str,
    settings_class: type[SettingsT],
    build: Callable[[SettingsT], Awaitable[GrpcApp]],
    commands: Sequence[Command[SettingsT]] = (),
    argv: Sequence[str] | None = None,
) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    subcommands = parser.add_subparsers(dest="command")
    subcommands.add_parser("serve", help="serve until SIGTERM (the default)")
    by_name: dict[str, Command[SettingsT]] = {}
    for command in commands:
        command.arguments(subcommands.add_parser(command.name, help=command.help))
        by_name[command.name] = command
    args = parser.parse_args(argv)
    settings = load_settings(settings_class)
    chosen = by_name.get(args.command or "serve")
    configure_logging(name if chosen is None else f"{name}-{chosen.name}", settings.log_level)
    if chosen is not None:
        raise SystemExit(asyncio.run(chosen.run(settings, args)))

    async def _serve() -> None:
        await serve(await build(settings), settings)

    asyncio.run(_serve())
