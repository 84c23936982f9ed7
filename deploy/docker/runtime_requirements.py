"""Prints the part of requirements.lock that the services need at run time, hashes included.

The lock is compiled with every extra (it also pins pytest, mypy, ruff, grpcio-tools, ...). Its
`# via` annotations name who pulled each package in; a package belongs in the image when one of
them is a project package (promo-libs, promo-users, ...) or another run-time package. Developer
tools, which only `promo-platform (pyproject.toml)` asks for, stay out of the image.

    python runtime_requirements.py requirements.lock > runtime.lock

Standard library only: it runs in the image's builder stage before anything is installed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

# The project's own distributions: the lock is compiled with --no-emit-package for each of them,
# so they appear only as the origin of their dependencies.
ROOTS = frozenset(
    {
        "promo-libs",
        "promo-users",
        "promo-promocodes",
        "promo-orders",
        "promo-analytics",
        "promo-sync-consumer",
    }
)

_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse(lock_text: str) -> dict[str, tuple[list[str], set[str]]]:
    """Maps each locked package to (its lines in the lock, the packages that pulled it in)."""
    entries: dict[str, tuple[list[str], set[str]]] = {}
    current: str | None = None
    in_via = False
    for line in lock_text.splitlines():
        match = _REQUIREMENT.match(line)
        if match:
            current = _normalise(match.group(1))
            entries[current] = ([line], set())
            in_via = False
            continue
        if current is None:
            continue
        stripped = line.strip()
        if stripped.startswith("--hash="):
            entries[current][0].append(line)
        elif stripped.startswith("# via"):
            rest = stripped.removeprefix("# via").strip()
            in_via = not rest
            if rest:
                entries[current][1].add(_normalise(rest.split()[0]))
        elif in_via and stripped.startswith("#"):
            origin = stripped.lstrip("#").strip()
            if origin and not origin.startswith("-r "):
                entries[current][1].add(_normalise(origin.split()[0]))
        else:
            in_via = False
    return entries


def runtime_subset(lock_text: str) -> list[str]:
    """The lock's lines for every package reachable from the project's own packages."""
    entries = parse(lock_text)
    wanted: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, (_, origins) in entries.items():
            if name not in wanted and origins & (ROOTS | wanted):
                wanted.add(name)
                changed = True
    lines: list[str] = []
    for name in sorted(wanted):
        requirement, *hashes = entries[name][0]
        lines.append(" \\\n".join([requirement.rstrip(" \\"), *(h.rstrip(" \\") for h in hashes)]))
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    subset = runtime_subset(Path(argv[0]).read_text(encoding="utf-8"))
    if not subset:
        print(f"no run-time packages found in {argv[0]}", file=sys.stderr)
        return 1
    print("\n".join(subset))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
