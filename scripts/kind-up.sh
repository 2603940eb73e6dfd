#!/usr/bin/env bash
# Create (or reuse) the kind cluster `agentgov`, build the agentgov and example-agent images and
# load them into it, install the Helm chart (with the bundled Redis), and apply the examples
# plus the end-to-end agent of deploy/kind/e2e/. Then `make e2e` checks the agents.
#
#   make kind-up            # or: scripts/kind-up.sh
#
# Needs Docker (a running daemon), kind, kubectl and helm on PATH. Every kubectl and helm call
# names the kind cluster's context explicitly: the current context is never used or changed.
# Settings: KIND_CLUSTER (default agentgov), AGENTGOV_NAMESPACE (agentgov-system).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER:-agentgov}"
CONTEXT="kind-${CLUSTER}"
NAMESPACE="${AGENTGOV_NAMESPACE:-agentgov-system}"
# Fixed tags that are not `latest`, so pods use the loaded images (IfNotPresent) and the
# manifests in deploy/kind/e2e/ can name them.
IMAGE_REPOSITORY="agentgov"
IMAGE_TAG="dev"
AGENT_IMAGE="agentgov-example-agent:dev"

say() { printf 'kind-up: %s\n' "$*"; }
fail() { printf 'kind-up: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || fail "$1 is not installed ($2)"
}
need docker "https://docs.docker.com/engine/install/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need helm "https://helm.sh/docs/intro/install/"
need python3 "to make the end-to-end agent's random token key"
docker info >/dev/null 2>&1 || fail "the Docker daemon is not reachable (is it running, and may this user use it?)"

k() { kubectl --context "${CONTEXT}" "$@"; }

if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  say "reusing kind cluster ${CLUSTER}"
else
  say "creating kind cluster ${CLUSTER} (kind-config.yaml)"
  kind create cluster --name "${CLUSTER}" --config kind-config.yaml --wait 120s
fi

say "building ${IMAGE_REPOSITORY}:${IMAGE_TAG} and ${AGENT_IMAGE}"
docker build --tag "${IMAGE_REPOSITORY}:${IMAGE_TAG}" --file Dockerfile .
docker build --tag "${AGENT_IMAGE}" --file examples/agent/Dockerfile .
kind load docker-image --name "${CLUSTER}" "${IMAGE_REPOSITORY}:${IMAGE_TAG}" "${AGENT_IMAGE}"

# The chart writes the Redis URL Secret into the agents' namespaces: they must exist first.
k apply -f examples/00-namespace.yaml -f deploy/kind/e2e/00-namespace.yaml

say "installing the chart into ${NAMESPACE}"
helm upgrade --install agentgov charts/agentgov \
  --kube-context "${CONTEXT}" --namespace "${NAMESPACE}" --create-namespace \
  --set image.repository="${IMAGE_REPOSITORY}" --set image.tag="${IMAGE_TAG}" \
  --set redis.bundled.enabled=true \
  --set "redis.agentNamespaces={research,agentgov-e2e}" \
  --wait --timeout 5m

k wait --for=condition=Established --timeout=60s \
  crd/agentdeployments.agentgov.io crd/agentbudgets.agentgov.io crd/toolpolicies.agentgov.io crd/regionpolicies.agentgov.io

say "applying examples/ (the top-level files; examples/invalid/ is invalid on purpose)"
k apply -f examples/
# The end-to-end agent's token key: random, made here, never written to disk.
key="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
k -n agentgov-e2e create secret generic e2e-auth --from-literal=jwt-key="${key}" \
  --dry-run=client -o yaml | k apply -f -
k apply -f deploy/kind/e2e/

say "done: 'make e2e' waits for the agents and sends a request through the sidecar"
