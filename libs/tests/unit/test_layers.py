"""Layer rules of the shared code: the gRPC layer knows no database.

MongoDB's failures reach callers through the Mongo adapter's translation (promo_libs.mongo
.errors), handed to the server by the composition root; nothing under promo_libs.grpc may
import a database driver, not even inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pymongo import errors as mongo_errors

import promo_libs.grpc
from promo_libs import errors
from promo_libs.grpc.errors import to_domain_error
from promo_libs.mongo.errors import MONGO

DATABASE_DRIVERS = {"pymongo", "bson", "motor", "redis", "aiochclient", "clickhouse_connect"}
GRPC_LAYER = Path(promo_libs.grpc.__file__).parent


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(GRPC_LAYER.glob("*.py")), ids=lambda p: p.name)
def test_the_grpc_layer_imports_no_database_driver(path: Path) -> None:
    assert not _imported_roots(path) & DATABASE_DRIVERS


def test_the_scan_sees_the_modules() -> None:
    names = {p.name for p in GRPC_LAYER.glob("*.py")}
    assert {"errors.py", "interceptors.py", "server.py"} <= names


def test_without_the_mongo_adapter_a_driver_failure_is_a_bug() -> None:
    assert to_domain_error(mongo_errors.ServerSelectionTimeoutError("down")) is None


def test_unreachable_mongo_is_unavailable_and_its_timeout_is_the_deadline() -> None:
    down = to_domain_error(mongo_errors.ServerSelectionTimeoutError("down"), [MONGO])
    assert isinstance(down, errors.Unavailable)
    assert down.metadata == {"dependency": "mongo"}
    late = to_domain_error(mongo_errors.ExecutionTimeout("late", code=50), [MONGO])
    assert isinstance(late, errors.DeadlineExceeded)
    assert to_domain_error(mongo_errors.OperationFailure("bad", code=2), [MONGO]) is None
