#!/usr/bin/env bash
# Create LiteLLM's own virtual environment for benchmarks/gateways.py: LiteLLM's proxy from PyPI
# (`litellm[proxy]`, pinned so that a rerun measures the same thing), redis-py for its cache and
# prometheus-client for its /metrics (its Prometheus callback imports it; the extra does not bring it).
# It is kept apart from agentgov's .venv so neither project's dependencies bend the other's.
#
# Usage: benchmarks/contenders/setup_litellm.sh [VENV_DIR]    (default: benchmarks/.venvs/litellm)
# Environment: PYTHON (default python3), LITELLM_VERSION (default below).
# Idempotent: an existing venv with the wanted version is left as it is.
set -euo pipefail
# LiteLLM fetches its model price map from the internet on import unless told to use its bundled copy.
export LITELLM_LOCAL_MODEL_COST_MAP=True

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$(realpath -m "${1:-$here/../.venvs/litellm}")"
python="${PYTHON:-python3}"
version="${LITELLM_VERSION:-1.106.12}"

if [[ -x "$venv/bin/litellm" ]] \
    && [[ "$("$venv/bin/python" -c 'import redis, prometheus_client, importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null)" == "$version" ]]; then
  echo "LiteLLM $version is already installed in $venv"
  exit 0
fi
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "litellm[proxy]==$version" "redis>=5" "prometheus-client>=0.20"
"$venv/bin/litellm" --version >/dev/null
echo "LiteLLM $version installed in $venv"
