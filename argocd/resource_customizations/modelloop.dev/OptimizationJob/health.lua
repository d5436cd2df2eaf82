-- Argo CD health of a modelloop.dev OptimizationJob.
-- Argo CD runs this with `obj` set to the live object and reads the returned table. Its Lua
-- VM loads only the base, table and a safe os library: no string.* functions here.
-- Order: stale status first (the operator has not seen the latest spec), then terminal
-- conditions (Failed, Succeeded are sticky; a Succeeded job whose model was not Accepted is
-- Degraded), Suspended, the Ready summary, and the phase
-- only when there are no conditions.

-- BEGIN shared helpers (identical in every modelloop.dev health.lua; a test checks it)
local function find(conditions, kind)
  for _, c in ipairs(conditions or {}) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function explain(c, fallback)
  if c == nil then
    return fallback
  end
  local reason = c.reason or ""
  local message = c.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  if reason ~= "" then
    return reason
  end
  return fallback
end

local function isTrue(c)
  return c ~= nil and c.status == "True"
end

-- END shared helpers

local status = obj.status
if status == nil or status.observedGeneration == nil then
  return {status = "Progressing", message = "Waiting for the modelloop operator to observe this OptimizationJob"}
end
local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration < generation then
  return {status = "Progressing", message = "Waiting for the modelloop operator to observe generation " .. generation .. " (status describes " .. status.observedGeneration .. ")"}
end

local conditions = status.conditions or {}
local failed = find(conditions, "Failed")
if isTrue(failed) then
  return {status = "Degraded", message = explain(failed, "Optimization failed")}
end
local succeeded = find(conditions, "Succeeded")
local accepted = find(conditions, "Accepted")
if isTrue(succeeded) then
  -- A finished optimization whose report missed the acceptance budget is not deployable.
  if accepted ~= nil and accepted.status == "False" then
    return {status = "Degraded", message = explain(accepted, "The optimized model was not accepted")}
  end
  return {status = "Healthy", message = explain(accepted or succeeded, "Optimization succeeded")}
end
local suspended = find(conditions, "Suspended")
if isTrue(suspended) then
  return {status = "Suspended", message = explain(suspended, "Suspended")}
end
local degraded = find(conditions, "Degraded")
if isTrue(degraded) then
  return {status = "Degraded", message = explain(degraded, "Degraded")}
end
local ready = find(conditions, "Ready")
local progressing = find(conditions, "Progressing")
if isTrue(ready) then
  return {status = "Healthy", message = explain(ready, "Ready")}
end
if isTrue(progressing) then
  return {status = "Progressing", message = explain(progressing, "Optimization in progress")}
end
if ready ~= nil and ready.status == "False" then
  -- Not ready, not progressing and not finished: stuck until someone acts.
  return {status = "Degraded", message = explain(ready, "Not ready")}
end
if ready ~= nil then
  return {status = "Progressing", message = explain(ready, "Optimization in progress")}
end

local phases = {
  Pending = "Progressing", Running = "Progressing", Succeeded = "Healthy",
  Failed = "Degraded", Suspended = "Suspended",
}
if status.phase ~= nil and phases[status.phase] ~= nil then
  local message = status.message
  if message == nil or message == "" then
    message = status.phase
  end
  return {status = phases[status.phase], message = message}
end
return {status = "Unknown", message = "The status reports no condition this check understands"}
