# The two-command contract: `make demo` and `make test`. Everything else is a helper.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
# One BLAS thread: on 2 cores, threaded BLAS makes small solves slower and timings noisy.
export OPENBLAS_NUM_THREADS ?= 1
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit test-event-time test-cluster-loop bench setup clean kafka-up kafka-down \
	cluster-up cluster-demo cluster-down

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -e ".[test,flink]"
	@touch $(STAMP)

demo: setup
	$(BIN)/streamfolio demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: setup
	$(BIN)/mypy

test: setup lint typecheck
	$(BIN)/python -m pytest

unit: setup
	$(BIN)/python -m pytest -m "not integration"

# The optional long run of the event-time test: SEEDS more random schedules (parallelism, bar
# size, lagging partition, malformed input, kill -9 and resume), on top of the fixed ones.
SEEDS ?= 10
test-event-time: setup
	STREAMFOLIO_EVENT_TIME_SEEDS=$(SEEDS) $(BIN)/python -m pytest tests/integration/test_event_time.py

# The whole loop on the secured 3-broker Kafka cluster and a Flink session cluster, with a broker
# and a TaskManager killed (tests/integration/test_cluster_loop.py, also part of `make test`).
test-cluster-loop: setup
	$(BIN)/python -m pytest tests/integration/test_cluster_loop.py

bench: setup
	$(BIN)/python bench/analytics.py
	$(BIN)/python bench/kafka.py

kafka-up: setup
	$(BIN)/streamfolio kafka up

kafka-down: setup
	$(BIN)/streamfolio kafka down

# The loop on clusters (examples/cluster.yaml): three SASL_SSL Kafka brokers with ACLs, and a
# Flink session cluster of two TaskManagers running the job at parallelism 2.
CLUSTER_CONFIG ?= examples/cluster.yaml

cluster-up: setup
	$(BIN)/streamfolio kafka up --config $(CLUSTER_CONFIG)
	$(BIN)/streamfolio flink up --config $(CLUSTER_CONFIG)

cluster-demo: setup
	$(BIN)/streamfolio demo --config $(CLUSTER_CONFIG) --flink cluster

cluster-down: setup
	$(BIN)/streamfolio flink down --config $(CLUSTER_CONFIG)
	$(BIN)/streamfolio kafka down --config $(CLUSTER_CONFIG)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
