-- Argo CD health check for agentgov.io/AgentDeployment (an agent: its Deployment, Service, policy bundle and the rest).
-- Reads the kstatus conditions the agentgov operator writes (docs/operator.md, "Status"):
--   Degraded     Stalled=True: the spec can never work as written, or a reference is missing;
--                the message names the field or object.
--   Progressing  no status yet, an older generation observed, Reconciling=True, or Ready not True.
--   Healthy      Ready=True for the current generation.
-- Installed through argocd-cm as resource.customizations.health.agentgov.io_AgentDeployment (docs/gitops.md).
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

hs.status = "Healthy"
hs.message = describe(ready, "Ready")
return hs
