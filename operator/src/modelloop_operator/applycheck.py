"""Whether a server-side apply of a manifest could change an object as read: pure.

A process remembers what it applied (:class:`modelloop_operator.kube.AppliedVersions`),
but a restarted one remembers nothing, and used to re-apply every child of every object
it resumed: 1,500 server-side applies (the API server's most expensive request) for
1,000 TrainingJobs and 500 ModelDeployments, none of which changed anything
(bench/operator_scale.py). What the object itself shows is enough to tell, the way
controller-runtime users compare with ``equality.Semantic.DeepDerivative``:

* every value the manifest sets is in the object, equal (:func:`contains`): maps may hold
  more keys (defaults, other writers' fields), lists must have the same length and
  items that contain ours (a dropped or added item is a change);
* every field our field manager's last apply owns is still in the manifest
  (:func:`owned_within`): a field we applied before and no longer set would be removed
  by the apply, so it is not a no-op;
* our manager has an ``Apply`` entry at all: an object someone else created is not ours
  until we apply it.

Anything this cannot decide (a quantity the server normalised, ``{}`` it dropped) counts
as a change and is applied, as before.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


def contains(desired: Any, live: Any) -> bool:
    """Whether ``live`` holds everything ``desired`` sets, with the same values."""
    if isinstance(desired, Mapping):
        if not isinstance(live, Mapping):
            return False
        return all(key in live and contains(value, live[key])
                   for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        return all(contains(mine, theirs) for mine, theirs in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    return bool(desired == live)


def _map_paths(manifest: Mapping[str, Any], prefix: tuple[str, ...] = (),
               ) -> Iterator[tuple[str, ...]]:
    for key, value in manifest.items():
        path = (*prefix, key)
        yield path
        if isinstance(value, Mapping):
            yield from _map_paths(value, path)


def _owned_paths(fields: Mapping[str, Any], prefix: tuple[str, ...] = (),
                 ) -> Iterator[tuple[str, ...]]:
    """Map fields of a ``fieldsV1`` set; a list's items (``k:``, ``v:``, ``i:``) are
    left to :func:`contains`, which compares lists whole."""
    for key, value in fields.items():
        if not key.startswith("f:"):
            continue  # "." (the field itself) or a list item
        path = (*prefix, key[2:])
        yield path
        if isinstance(value, Mapping):
            yield from _owned_paths(value, path)


def owned_within(fields_v1: Mapping[str, Any], manifest: Mapping[str, Any]) -> bool:
    """Whether every map field in ``fields_v1`` is also set by ``manifest``."""
    wanted = set(_map_paths(manifest))
    return all(path in wanted for path in _owned_paths(fields_v1))


def applied_entry(live: Mapping[str, Any], manager: str) -> Mapping[str, Any] | None:
    """``manager``'s server-side apply entry in ``managedFields`` (not a subresource)."""
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if (entry.get("manager") == manager and entry.get("operation") == "Apply"
                and not entry.get("subresource")):
            return dict(entry)
    return None


def already_applied(manifest: Mapping[str, Any], live: Mapping[str, Any], *,
                    manager: str) -> bool:
    """Whether applying ``manifest`` as ``manager`` would leave ``live`` as it is."""
    entry = applied_entry(live, manager)
    if entry is None or entry.get("fieldsType", "FieldsV1") != "FieldsV1":
        return False
    if (live.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return owned_within(entry.get("fieldsV1") or {}, manifest) and contains(manifest, live)
