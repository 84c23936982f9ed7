"""Root conftest: the local-stack fixtures (stack, mongo_db_name, mongo_client, start_service)
for every test below this folder (tests/, libs/tests and services/*/tests), and the test level
of each test taken from its folder (unit, integration, e2e, deploy), so that `pytest -m unit`
selects one level."""

import pytest

pytest_plugins = ["devstack.pytest_plugin"]

_LEVELS = ("unit", "integration", "e2e", "deploy")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        level = next((part for part in item.path.parts if part in _LEVELS), None)
        if level is not None:
            item.add_marker(getattr(pytest.mark, level))
