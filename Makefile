# agentgov — developer entry points. `make demo` and `make test` work on a fresh machine
# with Python 3.11+; they create .venv and install what they need.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test venv crds check-crds clean help bench bench-sidecar soak

help:  ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/agentgov: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

venv: $(BIN)/agentgov  ## create .venv with agentgov and the test tools

demo: venv  ## the sidecar in front of an example agent, on this machine: what it allows, refuses, caches, routes
	$(BIN)/agentgov demo

test: venv  ## run the whole test suite (parallel, with a per-test timeout)
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

crds: venv  ## regenerate crds/ from the models
	$(BIN)/agentgov crds generate

check-crds: venv  ## fail if crds/ is out of date
	$(BIN)/agentgov crds generate --check

.PHONY: chart-crds check-chart-crds chart-lint chart-template

chart-crds: venv  ## copy crds/ into the Helm chart (templates/crds) and the kustomize base (after `make crds`)
	$(BIN)/python charts/sync_crds.py

check-chart-crds: venv  ## fail if the chart's or the kustomize base's CRDs differ from crds/
	$(BIN)/python charts/sync_crds.py --check

CHART_VALUES ?=

chart-lint: venv  ## helm lint charts/agentgov with Helm's Go SDK (no helm binary); CHART_VALUES=file.yaml to add values
	$(BIN)/python -c 'import json, sys, yaml, helm_python as h; \
	v = yaml.safe_load(open(sys.argv[1])) if sys.argv[1:] else None; r = h.lint("charts/agentgov", v, strict=True); \
	[print(m["path"] + ": " + m["error"].strip()) for m in r["messages"]]; sys.exit(1 if r["errors"] else 0)' $(CHART_VALUES)

chart-template: venv  ## print what `helm install agentgov charts/agentgov -n agentgov-system` applies (CHART_VALUES=file.yaml)
	$(BIN)/python -c 'import sys, yaml, helm_python as h; \
	v = yaml.safe_load(open(sys.argv[1])) if sys.argv[1:] else None; c = h.Chart.load("charts/agentgov"); \
	out = c.render(v, name="agentgov", namespace="agentgov-system", is_install=True); \
	print("\n---\n".join(t.strip() for p, t in sorted(out.items()) if t.strip() and not p.endswith("NOTES.txt")))' $(CHART_VALUES)

BENCH_ARGS ?= --sizes 10,100,1000
BENCH_SIDECAR_ARGS ?=

bench: venv  ## every benchmark, one after the other: operator scale, sidecar latency, gateways, soak (benchmarks/results/; about an hour)
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/operator_scale.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/sidecar_latency.py $(BENCH_SIDECAR_ARGS)
	benchmarks/contenders/setup_litellm.sh
	$(BIN)/python benchmarks/gateways.py $(BENCH_GATEWAYS_ARGS)
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

bench-sidecar: venv  ## the sidecar's added latency and throughput (benchmarks/results/sidecar_latency.*)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/sidecar_latency.py $(BENCH_SIDECAR_ARGS)

BENCH_GATEWAYS_ARGS ?=
.PHONY: bench-gateways

bench-gateways: venv  ## agentgov beside nginx and LiteLLM's proxy, same upstream, same load (benchmarks/results/gateways.*; ~15 min)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	benchmarks/contenders/setup_litellm.sh
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || echo "nginx not found: its contender is skipped (Debian: apt-get install nginx-light)"
	$(BIN)/python benchmarks/gateways.py $(BENCH_GATEWAYS_ARGS)

SOAK_ARGS ?=
.PHONY: soak
soak: venv  ## the sidecar under load for 5 minutes while faults are injected in turn (benchmarks/results/soak.*)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)

clean:  ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- images, kind, compose (need Docker; kind-up also kind, kubectl and helm) -------------
IMAGE ?= ghcr.io/agentgov/agentgov:0.1.0
AGENT_IMAGE ?= agentgov-example-agent:0.1.0
KIND_CLUSTER ?= agentgov

.PHONY: images kind-up e2e kind-down compose-up compose-down compose-bundle

images:  ## build the agentgov image and the example agent's (Docker)
	docker build --tag $(IMAGE) --file Dockerfile .
	docker build --tag $(AGENT_IMAGE) --file examples/agent/Dockerfile .

kind-up:  ## kind cluster + images + Helm chart + examples and the e2e agent (Docker, kind, kubectl, helm)
	KIND_CLUSTER=$(KIND_CLUSTER) scripts/kind-up.sh

e2e:  ## on the kind cluster: agents Ready, a request served end to end (after kind-up)
	KIND_CLUSTER=$(KIND_CLUSTER) scripts/e2e.sh

kind-down:  ## delete the kind cluster
	kind delete cluster --name $(KIND_CLUSTER)

compose-up:  ## sidecar + example agent + Redis + Prometheus on this host (docker compose)
	docker compose -f deploy/compose/compose.yaml up --build --detach

compose-down:  ## stop the compose deployment (volumes kept: add -v to docker compose down to drop them)
	docker compose -f deploy/compose/compose.yaml down

compose-bundle: venv  ## regenerate deploy/compose/bundle/bundle.json from deploy/compose/policy.yaml
	$(BIN)/agentgov render -f deploy/compose/policy.yaml -o json | $(BIN)/python -c 'import json, sys; \
	cm = [o for o in json.load(sys.stdin) if o["kind"] == "ConfigMap"][0]; \
	print(json.dumps(json.loads(cm["data"]["bundle.json"]), indent=2, sort_keys=True))' > deploy/compose/bundle/bundle.json
