"""Root conftest: the local-stack fixtures (stack, mongo_db_name, mongo_client, start_service)
for every test below this folder (tests/ and services/*/tests)."""

pytest_plugins = ["devstack.pytest_plugin"]
