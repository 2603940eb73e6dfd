#!/usr/bin/env bash
# The end-to-end check on the kind cluster scripts/kind-up.sh prepared:
#   1. the e2e agent (deploy/kind/e2e/) becomes Ready (its pods rolled out with the sidecar);
#   2. the example policies are Ready, and the research example (whose Secrets this cluster
#      does not have) is Stalled with reason MissingReference, as the operator reports it;
#   3. a caller's request goes through the whole path: Service -> sidecar (JWT checked) ->
#      example agent -> sidecar egress (budget, breaker) -> stand-in model, and back.
#
#   make e2e            # or: scripts/e2e.sh
#
# Needs kubectl, curl and the cluster from `make kind-up`; only the kind context is used.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${KIND_CLUSTER:-agentgov}"
CONTEXT="kind-${CLUSTER}"
TIMEOUT="${E2E_TIMEOUT:-300s}"
LOCAL_PORT="${E2E_LOCAL_PORT:-18080}"

say() { printf 'e2e: %s\n' "$*"; }
fail() { printf 'e2e: FAILED: %s\n' "$*" >&2; exit 1; }
command -v kubectl >/dev/null 2>&1 || fail "kubectl is not installed"
command -v curl >/dev/null 2>&1 || fail "curl is not installed"
kubectl config get-contexts -o name 2>/dev/null | grep -qx "${CONTEXT}" \
  || fail "no kubeconfig context ${CONTEXT}: run 'make kind-up' first"

k() { kubectl --context "${CONTEXT}" "$@"; }

say "waiting for agentdeployment/e2e-agent to be Ready (${TIMEOUT})"
if ! k -n agentgov-e2e wait --for=condition=Ready agentdeployment/e2e-agent --timeout="${TIMEOUT}"; then
  k -n agentgov-e2e get agentdeployment e2e-agent -o yaml >&2 || true
  k -n agentgov-e2e get pods -o wide >&2 || true
  fail "e2e-agent did not become Ready"
fi

say "waiting for the example policies to be Ready"
k -n research wait --for=condition=Ready \
  agentbudget/research-team toolpolicy/research-tools regionpolicy/eu-onprem --timeout="${TIMEOUT}" \
  || fail "an example policy did not become Ready"

say "the research example names Secrets this cluster lacks: it must be Stalled (MissingReference)"
k -n research wait --for=condition=Stalled agentdeployment/research-assistant --timeout="${TIMEOUT}" \
  || fail "research-assistant is not Stalled"
reason="$(k -n research get agentdeployment research-assistant \
  -o jsonpath='{.status.conditions[?(@.type=="Stalled")].reason}')"
[ "${reason}" = "MissingReference" ] || fail "research-assistant is Stalled for ${reason}, not MissingReference"

say "minting a token inside the sidecar and calling the agent through its Service"
token="$(k -n agentgov-e2e exec deploy/e2e-agent -c agentgov-sidecar -- agentgov token create \
  --user e2e-caller --role analyst --ttl 10m --key-file /etc/agentgov/secrets/e2e-auth/jwt-key \
  --issuer https://e2e.agentgov.local/ --audience agentgov-e2e)"
k -n agentgov-e2e port-forward service/e2e-agent "${LOCAL_PORT}:80" >/dev/null 2>&1 &
forward=$!
trap 'kill "${forward}" 2>/dev/null || true' EXIT
answer="$(curl --silent --show-error --fail --retry 20 --retry-connrefused --retry-delay 1 --max-time 30 \
  -H "Authorization: Bearer ${token}" -H 'Content-Type: application/json' \
  -d '{"prompt": "hello from the e2e check", "maxTokens": 32, "temperature": 0}' \
  "http://127.0.0.1:${LOCAL_PORT}/run")" || fail "the request through the sidecar failed"
case "${answer}" in
  *"You said: hello from the e2e check"*) ;;
  *) fail "unexpected answer: ${answer}" ;;
esac

unauthenticated="$(curl --silent --output /dev/null --write-out '%{http_code}' --max-time 10 \
  -X POST "http://127.0.0.1:${LOCAL_PORT}/run")"
[ "${unauthenticated}" = "401" ] || fail "a request without a token got ${unauthenticated}, not 401"

say "passed: agents Ready, examples reported, a request served end to end, an anonymous one refused"
