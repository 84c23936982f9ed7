"""The service kit's own promises: shutdown order, what a serving kit adds to the server, and
the one command line (promo_libs.kit, promo_libs.entrypoint)."""

from __future__ import annotations

import argparse

import pytest

from promo_libs.config import ServiceSettings
from promo_libs.entrypoint import Command, run_service
from promo_libs.grpc.server import GrpcApp
from promo_libs.kit import ServiceKit, utc_now


async def test_close_runs_the_roots_closers_last_registered_first_and_once() -> None:
    closed: list[str] = []
    kit = ServiceKit(ServiceSettings())

    async def pool() -> None:
        closed.append("pool")

    kit.on_close(pool)
    kit.on_close(lambda: closed.append("broker"))  # opened after the pool: closed before it
    await kit.close()
    await kit.close()
    assert closed == ["broker", "pool"]


async def test_app_adds_the_kits_shutdown_and_keeps_the_roots_probes() -> None:
    kit = ServiceKit(ServiceSettings(), serving=True)

    async def users_up() -> bool:
        return True

    app = kit.app(
        GrpcApp(name="x", service_names=[], register=lambda server: None, probes={"u": users_up})
    )
    assert app.on_stop == kit.close
    assert dict(app.probes) == {"u": users_up}


def test_utc_now_has_millisecond_precision() -> None:
    assert utc_now().microsecond % 1000 == 0


def test_a_command_gets_its_arguments_and_its_exit_code_is_the_processs() -> None:
    seen: list[float] = []

    async def run(settings: ServiceSettings, args: argparse.Namespace) -> int:
        seen.append(args.stale_seconds)
        return 3

    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--stale-seconds", type=float)

    async def never(settings: ServiceSettings) -> GrpcApp:
        raise AssertionError("a command does not serve")

    sweep = Command("sweep", "once", run, arguments)
    with pytest.raises(SystemExit) as exited:
        run_service(
            "svc", "svc", ServiceSettings, never, [sweep], ["sweep", "--stale-seconds", "0"]
        )
    assert exited.value.code == 3
    assert seen == [0.0]


def test_an_unknown_command_is_refused() -> None:
    async def never(settings: ServiceSettings) -> GrpcApp:
        raise AssertionError("not reached")

    with pytest.raises(SystemExit) as exited:
        run_service("svc", "svc", ServiceSettings, never, [], ["recover"])
    assert exited.value.code == 2
