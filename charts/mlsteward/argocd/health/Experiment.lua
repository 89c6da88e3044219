-- Argo CD health of an Experiment (resource.customizations.health.mlsteward.io_Experiment): status.phase
-- Pending | Running | Concluded | Stopped and the conditions Ready and Degraded (a sample-ratio mismatch).
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
local function with(text, c)
  if c == nil then return text end
  return text .. ", " .. said(c)
end
local phase = status.phase or "Pending"
local ready = condition("Ready")
if phase == "Concluded" then
  return {status = "Healthy", message = with("Concluded", ready)}
end
-- Stopped without a conclusion (stopping.maxDuration): nothing is wrong and nothing more happens on its own.
if phase == "Stopped" then
  return {status = "Suspended", message = with("Stopped", ready)}
end
if phase == "Pending" or phase == "Running" then
  return {status = "Progressing", message = with(phase, condition("Progressing") or ready)}
end
return {status = "Unknown", message = "unknown phase " .. tostring(phase)}
