-- Argo CD health of a DriftMonitor (resource.customizations.health.mlsteward.io_DriftMonitor): the conditions
-- Degraded (confirmed drift, unknown features), Progressing (a breach not yet confirmed, an action just taken)
-- and Ready (the last check had a verdict), and status.retrain.phase Running | Validating | Succeeded | Failed.
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
if isTrue("Degraded") then
  return {status = "Degraded", message = said(condition("Degraded"))}
end
local retrain = status.retrain
if retrain ~= nil and retrain.phase == "Failed" then
  local last = ""
  if retrain.steps ~= nil and #retrain.steps > 0 then
    local step = retrain.steps[#retrain.steps]
    last = ": " .. tostring(step.step) .. ": " .. tostring(step.message or "")
  end
  return {status = "Degraded", message = "retraining " .. tostring(retrain.job) .. " failed" .. last}
end
if isTrue("Progressing") then
  return {status = "Progressing", message = said(condition("Progressing"))}
end
if retrain ~= nil and (retrain.phase == "Running" or retrain.phase == "Validating") then
  return {status = "Progressing", message = "retraining " .. tostring(retrain.job) .. " is " .. retrain.phase}
end
local ready = condition("Ready")
if ready ~= nil and ready.status == "True" then
  return {status = "Healthy", message = said(ready)}
end
if ready ~= nil then
  return {status = "Progressing", message = said(ready)}
end
return {status = "Progressing", message = "waiting for the first check"}
