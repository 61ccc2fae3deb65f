# netplumb developer targets. Run as root on Debian: `make setup` once, then
# `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PROTO  := proto/netplumb/v1/agent.proto

.PHONY: setup develop test unit netns multihost check lint proto proto-check demo demo-cluster demo-local bench clean

setup:                     ## install system packages and the virtualenv
	deploy/setup-dev.sh

# The virtualenv holds netplumb as a "strict" editable install: a tree of
# symlinks to the sources, found through a plain path entry. The default
# editable mode installs an import hook that costs ~20 ms at every start of
# the netplumb command. New modules need the link tree refreshed: this target
# does it in about 2 s, and the targets below run it first.
develop:
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=strict
	@# Bytecode now, so that commands start fast even where PYTHONDONTWRITEBYTECODE is set.
	$(PY) -m compileall -q $$($(PY) -c 'import netplumb.cli, os; print(os.path.dirname(os.path.dirname(netplumb.cli.__file__)))')

test: develop check        ## the whole test suite (what CI runs)
	$(PY) -m pytest -q tests --ignore=tests/bench

unit: develop
	$(PY) -m pytest -q tests/unit

netns: develop
	$(PY) -m pytest -q tests/netns

multihost: develop
	$(PY) -m pytest -q tests/multihost

proto:                     ## regenerate the gRPC code from the .proto
	$(PY) -m grpc_tools.protoc -Iproto --python_out=proto --pyi_out=proto \
		--grpc_python_out=proto $(PROTO)

proto-check:               ## fail if the committed generated code is stale
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$$tmp --pyi_out=$$tmp \
		--grpc_python_out=$$tmp $(PROTO) && \
	for f in agent_pb2.py agent_pb2.pyi agent_pb2_grpc.py; do \
		diff -u proto/netplumb/v1/$$f $$tmp/netplumb/v1/$$f || { rm -rf $$tmp; \
		echo "generated code is stale: run 'make proto' and commit" >&2; exit 1; }; \
	done; rm -rf $$tmp

lint:
	$(PY) -m ruff check agent cli tests deploy/lab deploy/demo.py deploy/demo_cluster.py
	$(PY) -m ruff format --check agent cli tests deploy/lab deploy/demo.py deploy/demo_cluster.py
	$(PY) -m mypy agent cli deploy/lab/lab.py

check: proto-check lint    ## generated code fresh, lint, types

demo: develop              ## 3 hosts, an OVS overlay, ping matrix and iperf3 (KEEP=1 keeps the lab)
	$(PY) deploy/demo.py $(if $(KEEP),--keep)

demo-cluster: develop      ## 3 hosts in cluster mode (etcd): hosts join, containers ping by name
	$(PY) deploy/demo_cluster.py $(if $(KEEP),--keep)

demo-local: develop        ## one host: two namespaces on a Linux bridge, ping, clean up
	deploy/demo-local.sh

# As a service on this host: /opt/netplumb, /usr/local/bin, the systemd unit,
# /etc/netplumb/netplumbd.toml, the netplumb group (deploy/install.sh --help).
# ROOT=DIR installs into a scratch root; PURGE=1 also removes the
# configuration, the state and the group.
.PHONY: install uninstall
install:                   ## install netplumb as a systemd service (again: upgrade)
	deploy/install.sh $(if $(ROOT),--root $(ROOT))

uninstall:                 ## remove what `make install` made (PURGE=1: config and state too)
	deploy/install.sh --uninstall $(if $(PURGE),--purge) $(if $(ROOT),--root $(ROOT))

# The report's plots need matplotlib (the "bench" extra), installed here on
# first use rather than by `make setup`: CI never runs benchmarks. The report
# is written even when a benchmark failed (from whatever figures exist), and
# the target then still fails. `$(PY) bench/report.py` alone redraws it.
bench: develop             ## every benchmark, then bench/REPORT.md and bench/*.png
	@$(PY) -c 'import matplotlib' 2>/dev/null || \
		$(PY) -m pip install -q -e '.[bench]' --config-settings editable_mode=strict
	$(PY) -m pytest -q -s tests/bench --timeout=0; rc=$$?; \
		$(PY) bench/report.py && exit $$rc

.PHONY: docs
docs: develop              ## regenerate docs/cli.md, docs/api.md and docs/configuration.md from the code
	$(PY) docs/gen.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
