"""A running user service (its own database) for the tests of this folder."""

import sys
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest

from devstack.ports import free_port
from devstack.service import ServiceProcess
from devstack.stack import Stack


@pytest.fixture(scope="module")
def users_db_name(request: pytest.FixtureRequest) -> str:
    return f"e2e_users_{request.module.__name__.rsplit('.', 1)[-1]}_{free_port()}"


@pytest.fixture(scope="module")
def users_service(stack: Stack, users_db_name: str) -> Iterator[ServiceProcess]:
    port = free_port()
    service = stack.service(
        "users",
        [sys.executable, "-m", "users_service"],
        port,
        {
            "METRICS_PORT": str(free_port()),
            "MONGODB_DB_NAME": users_db_name,
            "HEALTH_CHECK_INTERVAL_SECONDS": "0.2",
            # Cheaper hashes keep the suite fast; the algorithm and code path are the same.
            "ARGON2_MEMORY_KIB": "8192",
            "ARGON2_TIME_COST": "1",
        },
    )
    service.start_and_wait()
    yield service
    service.terminate()


@pytest.fixture(scope="module")
def users_db(stack: Stack, users_db_name: str) -> Iterator[Any]:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        stack.mongo_uri, tz_aware=True
    )
    yield client[users_db_name]
    client.drop_database(users_db_name)
    client.close()
