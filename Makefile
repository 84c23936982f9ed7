# The two commands a newcomer needs are `make run` and `make test`; the rest are their parts.
SHELL := /bin/bash
PY := .venv/bin/python
PYTEST := .venv/bin/pytest
# Services that `make run` starts, as NAME=MODULE:GRPC_PORT (ports are the documented defaults).
SERVICES := users=users_service:50051 promocodes=promocodes_service:50052 \
            orders=orders_service:50053 sync-consumer=sync_consumer:50055 \
            analytics=analytics_service:50054

.PHONY: help bootstrap run stack test check lint format typecheck protos protos-check \
        unit integration e2e deploy-check rebuild reconcile asyncapi asyncapi-check \
        bench-pipeline clean

help:
	@echo "make run     - install what is missing, start the local stack and every service"
	@echo "make test    - install what is missing, run all checks and the whole test suite"
	@echo "make unit | integration | e2e | deploy-check - one test level"
	@echo "make lint | typecheck | protos | protos-check | asyncapi | stack | clean"
	@echo "make rebuild | reconcile - ClickHouse from MongoDB / compare them (stack running)"

bootstrap:
	@scripts/bootstrap.sh

# setpriv --pdeathsig: when make itself is stopped (SIGTERM from a supervisor, `timeout make
# run`), the stack gets SIGTERM too and stops cleanly instead of living on without a parent.
FOREGROUND := setpriv --pdeathsig TERM -- $(PY)

run: bootstrap
	@$(FOREGROUND) -m devstack run --stop-on-failure $(addprefix --service ,$(SERVICES))

stack: bootstrap
	@$(FOREGROUND) -m devstack up

protos: bootstrap
	@scripts/gen_protos.sh

protos-check: bootstrap
	@scripts/gen_protos.sh --check

lint: bootstrap
	@echo "==> ruff"
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .

format: bootstrap
	@.venv/bin/ruff format .
	@.venv/bin/ruff check --fix .

typecheck: bootstrap
	@echo "==> mypy"
	@.venv/bin/mypy libs/src/promo_libs libs/testing services/*/src services/*/testing tools/devstack tools/promo_reconcile

check: protos-check asyncapi-check lint typecheck

test: check
	@echo "==> pytest (all levels)"
	@$(PYTEST) -q

unit: bootstrap
	@$(PYTEST) -q -m unit

integration: bootstrap
	@$(PYTEST) -q -m integration

e2e: bootstrap
	@$(PYTEST) -q -m e2e

deploy-check: bootstrap
	@$(PYTEST) -q -m deploy

# Operator commands against the stack that `make run` / `make stack` started (.state/dev).
rebuild: bootstrap
	@eval "$$($(PY) -m devstack env --identity sync-consumer)" && $(PY) -m sync_consumer rebuild

reconcile: bootstrap
	@eval "$$($(PY) -m devstack env)" && $(PY) -m promo_reconcile

asyncapi: bootstrap
	@$(PY) -m sync_consumer.asyncapi

asyncapi-check: bootstrap
	@$(PY) -m sync_consumer.asyncapi --check

bench-pipeline: bootstrap
	@$(PY) services/sync-consumer/benchmarks/pipeline_bench.py

clean:
	rm -rf .state .pytest_cache .mypy_cache .ruff_cache .hypothesis
