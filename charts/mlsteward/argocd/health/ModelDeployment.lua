-- Argo CD health of a ModelDeployment (resource.customizations.health.mlsteward.io_ModelDeployment): its
-- conditions Degraded, Progressing, Ready and Alerting, with status.rollout (phase, step) and status.shadow.
-- Shared opening (the same in the four scripts: each argocd-cm key is a script of its own). Only the base and
-- table libraries: Argo CD opens no `string` library without resource.customizations.useOpenLibs.
local function condition(kind)
  if obj.status == nil or obj.status.conditions == nil then return nil end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == kind then return c end
  end
  return nil
end
local function isTrue(kind)
  local c = condition(kind)
  return c ~= nil and c.status == "True"
end
local function said(c)
  if c == nil then return "" end
  return tostring(c.reason or "") .. ": " .. tostring(c.message or "")
end
local metadata = obj.metadata or {}
if metadata.deletionTimestamp ~= nil then
  return {status = "Progressing", message = "pending deletion"}
end
local generation = metadata.generation
if obj.status == nil or obj.status.observedGeneration == nil
    or (generation ~= nil and obj.status.observedGeneration < generation) then
  if generation == nil then
    return {status = "Progressing", message = "waiting for the operator to observe the object"}
  end
  return {status = "Progressing", message = "waiting for the operator to observe generation " .. tostring(generation)}
end
local status = obj.status
local rollout = status.rollout or {}
-- A rolled back or held canary, a spec.version that cannot be served, a Rollback override: Degraded says why.
if isTrue("Degraded") then
  return {status = "Degraded", message = said(condition("Degraded"))}
end
if rollout.phase == "RolledBack" or rollout.phase == "Paused" then
  return {status = "Degraded", message = "rollout of " .. tostring(rollout.targetVersion) .. " is " .. rollout.phase}
end
-- A metric alert (spec.alerts) fires on the served version.
if isTrue("Alerting") then
  return {status = "Degraded", message = said(condition("Alerting"))}
end
if rollout.phase == "Progressing" or isTrue("Progressing") then
  local where = ""
  if rollout.step ~= nil then
    local steps = obj.spec and obj.spec.rollout and obj.spec.rollout.steps
    if steps ~= nil and rollout.step < #steps then
      where = " at step " .. tostring(rollout.step + 1) .. "/" .. tostring(#steps) .. " (" ..
          tostring(steps[rollout.step + 1]) .. "%)"
    elseif steps ~= nil then
      where = " past its last step"
    end
  end
  local target = rollout.targetVersion or (obj.spec and obj.spec.version)
  return {status = "Progressing", message = "rollout of " .. tostring(target) .. where .. "; " ..
      said(condition("Progressing"))}
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  local message = said(ready)
  -- Served on a request (an Experiment's Promote) rather than spec.version: how Git catches up.
  local degraded = condition("Degraded")
  if degraded ~= nil and degraded.reason == "Promoted" then
    message = message .. "; " .. tostring(degraded.message)
  end
  local shadow = status.shadow
  if shadow ~= nil then
    message = message .. "; shadow " .. tostring(shadow.version) .. " " .. tostring(shadow.phase)
    if shadow.gate ~= nil then
      message = message .. ", gate " .. tostring(shadow.gate.result)
    end
  end
  return {status = "Healthy", message = message}
end
if ready ~= nil then
  return {status = "Progressing", message = said(ready)}
end
return {status = "Progressing", message = "waiting for the Ready condition"}
