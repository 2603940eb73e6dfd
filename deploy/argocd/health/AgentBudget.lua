-- Argo CD health check for agentgov.io/AgentBudget (spending limits).
-- Reads the kstatus conditions the agentgov operator writes (docs/operator.md, "Status"):
--   Degraded     Stalled=True: the spec can never work as written, or a reference is missing;
--                the message names the field or object.
--   Progressing  no status yet, an older generation observed, Reconciling=True, or Ready not True.
--   Healthy      Ready=True for the current generation.
-- An Exceeded or Warning budget stays Healthy; the message says so (see below).
-- Installed through argocd-cm as resource.customizations.health.agentgov.io_AgentBudget (docs/gitops.md).
local hs = {}

local function condition(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  local text = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the agentgov operator to report status"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the agentgov operator to observe generation " .. generation
  return hs
end

local conditions = obj.status.conditions
local stalled = condition(conditions, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

local reconciling = condition(conditions, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

local ready = condition(conditions, "Ready")
if ready == nil or ready.status ~= "True" then
  hs.status = "Progressing"
  if ready == nil then
    hs.message = "Waiting for the Ready condition"
  else
    hs.message = describe(ready, "NotReady")
  end
  return hs
end

-- A budget at its limit is a budget doing its job: it stays Healthy (a Degraded app would
-- block syncs and health-gated rollouts over a spending event), and the message says so.
-- Spend alerts belong to Prometheus (AgentgovBudgetExceeded) and the budget's Events.
hs.status = "Healthy"
local exceeded = condition(conditions, "Exceeded")
local warning = condition(conditions, "Warning")
local store = condition(conditions, "SpendStoreAvailable")
if exceeded ~= nil and exceeded.status == "True" then
  hs.message = "Exceeded: " .. (exceeded.message or "a limit is reached")
elseif warning ~= nil and warning.status == "True" then
  hs.message = "Warning: " .. (warning.message or "an alert threshold is reached")
else
  hs.message = describe(ready, "Ready")
end
if store ~= nil and store.status == "False" then
  hs.message = hs.message .. " (spend figures not current: " .. describe(store, "SpendStoreUnavailable") .. ")"
end
return hs
