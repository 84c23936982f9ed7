"""`python -m devstack up|env|run`: the local stack from the command line."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from devstack.processes import StartupError
from devstack.redis_acl import RedisUsers
from devstack.service import ServiceProcess
from devstack.stack import Stack, read_env_file
from devstack.state import StateLockedError, default_state_dir
from devstack.supervisor import Supervisor


def _parse_service(stack: Stack, spec: str) -> ServiceProcess:
    """`NAME=MODULE:GRPC_PORT`, run as `python -m MODULE` with the stack's env."""
    name, sep, rest = spec.partition("=")
    module, sep2, port = rest.rpartition(":")
    if not (sep and sep2 and name and module and port.isdigit()):
        raise argparse.ArgumentTypeError(f"--service wants NAME=MODULE:GRPC_PORT, got {spec!r}")
    return stack.service(name, [sys.executable, "-m", module], int(port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("up", "start MongoDB (nx-27017), Redis and ClickHouse in the foreground"),
        ("env", "print the env of the running stack (from <state>/stack.env)"),
        ("run", "like up, then start services; stop them first on shutdown"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--state", type=Path, default=default_state_dir(), help="state folder")
    commands.choices["env"].add_argument(
        "--identity", help="add that workload's Redis user (its password) to the env"
    )
    run = commands.choices["run"]
    run.add_argument("--service", action="append", default=[], metavar="NAME=MODULE:GRPC_PORT")
    for sub in (commands.choices["up"], run):
        sub.add_argument("--stop-on-failure", action="store_true", help="stop all if one dies")
    args = parser.parse_args(argv)

    if args.command == "env":
        try:
            env = read_env_file(args.state)
        except FileNotFoundError:
            print(f"devstack: no stack running on {args.state}", file=sys.stderr)
            return 1
        if args.identity is not None and env.get("REDIS_APPENDFSYNC_ALWAYS"):
            # The stack's own Redis (with ACL users): that workload's user, for a command run
            # as it (`make rebuild` as sync-consumer). Printed for `eval` only, never echoed.
            env |= RedisUsers(args.state).service_env(args.identity)
        for key, value in env.items():
            print(f"export {key}={shlex.quote(value)}")
        return 0

    stack = Stack.from_environ(args.state)
    print(f"devstack: state folder {stack.state_dir}", flush=True)
    try:
        services = [_parse_service(stack, spec) for spec in getattr(args, "service", [])]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    try:
        return Supervisor(stack, services, stop_on_failure=args.stop_on_failure).run_forever()
    except (StartupError, StateLockedError, FileNotFoundError) as exc:
        print(f"devstack: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
