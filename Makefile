# Stepflow Mesh developer targets. `make install` is idempotent and fast when nothing changed.
VENV      ?= .venv
PYTHON    ?= python3
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
# Upstream conformance flows live beside the repository (../shared); a scratch clone elsewhere
# falls back to the workplace copy.
CONFORMANCE ?= $(firstword $(wildcard ../shared/conformance /work/shared/conformance))
MYPY_SRC  := $(VENV)/mypy-src

.PHONY: install lint test unit conformance demo demo-local bench proto clean cluster cluster-stop

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,dev]'
	@# mypy cannot follow the folder→package mapping, so it reads a symlink tree.
	mkdir -p $(MYPY_SRC)/stepflow_mesh
	for d in runtime registry adapters; do ln -sfn $(CURDIR)/$$d $(MYPY_SRC)/stepflow_mesh/$$d; done
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	MYPYPATH=$(MYPY_SRC) $(VENV)/bin/mypy --config-file pyproject.toml -p stepflow_mesh

unit: install
	$(VENV)/bin/pytest -q

conformance: install
	@test -n "$(CONFORMANCE)" || { echo "conformance flows not found (../shared/conformance)"; exit 1; }
	bash $(CONFORMANCE)/run.sh $(VENV)/bin/stepflow $(abspath $(VENV)/bin/stepflow_worker)

test: lint unit conformance

demo: install
	@# A node with a stepflow-py worker: builtins and Python components, submitted over gRPC.
	$(PY) examples/node_demo.py

demo-local: install
	@# The same engine in one process, no node: an offline review digest.
	$(VENV)/bin/stepflow run --flow examples/review-digest/flow.yaml \
		--input examples/review-digest/input.json --config examples/review-digest/stepflow-config.yml \
		--output $(VENV)/demo-result.json
	$(PY) -m json.tool $(VENV)/demo-result.json

cluster: install
	@# etcd, three nodes in two regions and two stepflow-py workers on loopback (see its output).
	$(PY) examples/cluster/local_cluster.py start

cluster-stop:
	$(PY) examples/cluster/local_cluster.py stop

bench: install
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,dev,bench]'
	$(PY) tests/bench/bench_engine.py
	$(PY) tests/bench/bench_durable.py
	$(PY) tests/bench/bench_journal.py
	$(PY) tests/bench/bench_node.py
	$(PY) tests/bench/bench_adapters.py
	$(PY) tests/bench/bench_etcd.py
	$(PY) tests/bench/bench_failover.py
	$(PY) tests/bench/bench_telemetry.py

# Regenerates the checked-in Python code under runtime/_pb from proto/ (tests/test_proto.py checks it
# is current). grpcio-tools is pinned in the dev extra so the output is reproducible.
proto: install
	$(PY) proto/generate.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
