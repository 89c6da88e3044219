-- Argo CD health of a ModelVersion (resource.customizations.health.mlsteward.io_ModelVersion): the validation
-- verdict, status.phase Pending | Validating | Ready | Failed with status.reason and status.message.
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
local phase = status.phase or "Pending"
local why = tostring(status.reason or phase) .. ": " .. tostring(status.message or "")
if phase == "Ready" then
  return {status = "Healthy", message = why}
end
if phase == "Failed" then
  return {status = "Degraded", message = why}
end
if phase == "Pending" or phase == "Validating" then
  return {status = "Progressing", message = why}
end
return {status = "Unknown", message = "unknown phase " .. tostring(phase)}
