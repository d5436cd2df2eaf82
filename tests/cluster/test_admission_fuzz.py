"""Fuzzed manifests against the real API server and the running operator.

For each kind, hypothesis mutates the valid examples (tests/operator/fuzz_manifests.py:
wrong types, out-of-range numbers, odd strings, extreme quantities and durations, unknown
and missing fields) and creates them for real. Each one must be either

* rejected by the API server with a message that names a field it touched, exactly when
  the in-process judge (schema + CEL, the one the unit tier compares with the models)
  says so; or
* accepted, readable by the operator's models, and then reconciled: its status gets
  ``observedGeneration`` (a spec the operator finds invalid must say so in a Failed
  condition, not in a traceback), and the operator's log has no exception, failed
  handler or error for any of them.

A quarter of the admitted objects are then updated (PUT) with one more mutation, judged
the same way with the transition rules (immutable fields), and must be reconciled at
their new generation.

Derandomized and bounded (``EXAMPLES`` per kind, no shrinking: every example costs API
calls), so a run takes about a minute and CI sees the same manifests every time. A
failure prints every offending manifest with the mutations that made it.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from tests.cluster.conftest import RunningOperator
from tests.harness.controlplane import ControlPlane
from tests.operator.api_cases import example as example_manifest
from tests.operator.fuzz_manifests import (
    Fuzzed,
    Mutation,
    apply_mutation,
    fuzzed_manifest,
    model_verdict,
    mutation,
    schema_verdict,
    uses_network_outside_loopback,
)

pytestmark = pytest.mark.cluster

#: Examples per kind; MODELLOOP_FUZZ_EXAMPLES raises it for a longer exploratory run, and
#: MODELLOOP_FUZZ_RANDOM=1 draws new examples instead of CI's fixed ones.
EXAMPLES = int(os.environ.get("MODELLOOP_FUZZ_EXAMPLES", "40"))
DERANDOMIZE = os.environ.get("MODELLOOP_FUZZ_RANDOM") != "1"
RECONCILE_TIMEOUT = 60
PLURALS = {"TrainingJob": "trainingjobs", "OptimizationJob": "optimizationjobs",
           "ModelDeployment": "modeldeployments"}
#: What must not appear in the operator's log while it reconciles fuzzed objects.
LOG_PROBLEMS = re.compile(r"Traceback|failed with an exception|failed permanently|\[ERROR")
#: kopf's API client retrying a request (e.g. 429 while the API server starts): not a
#: handler failing, and not about any object.
CLIENT_RETRY = re.compile(r"Request attempt #\d+/\d+ failed; will retry")


def _explicit(base: str, *changes: Mutation) -> Fuzzed:
    doc = example_manifest(base)
    doc["metadata"] = {"name": "explicit"}
    for change in changes:
        apply_mutation(doc, change)
    return Fuzzed(doc=doc, base=base, mutations=changes)


_EMOJI_ANNOTATION = Mutation("valid", ("spec", "podTemplate"),
                             {"metadata": {"annotations": {"note": "\U0001f600"}}})
#: Cases fuzzing found once, run first on every run. A character beyond U+FFFF in a pod
#: annotation made every server-side apply of the child fail (YAML rejected the JSON
#: surrogate-pair escape), so the object never got a status.
EXPLICIT: dict[str, tuple[Fuzzed, ...]] = {
    "TrainingJob": (_explicit("trainingjob-bbc.yaml", _EMOJI_ANNOTATION),),
    "OptimizationJob": (_explicit("optimizationjob-prune-distill.yaml", _EMOJI_ANNOTATION),),
    "ModelDeployment": (_explicit("modeldeployment-archive.yaml", _EMOJI_ANNOTATION),),
}


@dataclass
class FuzzRun:
    """What one kind's run saw: accepted object names, and every broken expectation."""

    kind: str
    namespace: str
    accepted: dict[str, Fuzzed] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    rejected: int = 0
    updated: int = 0


def _create(cluster: ControlPlane, namespace: str, doc: dict[str, Any]) -> tuple[bool, str]:
    result = cluster.kubectl("create", "--validate=strict", "-n", namespace, "-o", "name",
                             "-f", "-", input=json.dumps(doc), check=False)
    return result.returncode == 0, result.stderr.strip()


def _replace(cluster: ControlPlane, namespace: str, doc: dict[str, Any]) -> tuple[bool, str]:
    """An update of the whole spec (read, change the spec, PUT with the resourceVersion
    read), retried on conflicts with the operator's own writes."""
    plural, name = PLURALS[doc["kind"]], doc["metadata"]["name"]
    stderr = ""
    for _ in range(5):
        current = json.loads(cluster.kubectl("get", plural, name, "-n", namespace,
                                             "-o", "json").stdout)
        current.pop("status", None)
        current["spec"] = doc["spec"]
        result = cluster.kubectl("replace", "--validate=strict", "-n", namespace, "-o",
                                 "name", "-f", "-", input=json.dumps(current), check=False)
        stderr = result.stderr.strip()
        if result.returncode == 0:
            return True, stderr
        if "the object has been modified" not in stderr:
            return False, stderr
    return False, stderr


def _judge(run: FuzzRun, fuzzed: Fuzzed, *, accepted: bool, stderr: str,
           judged: list[str], touched: set[str]) -> None:
    """Record what is wrong with the API server's answer to ``fuzzed``."""
    doc = fuzzed.doc
    if not accepted:
        run.rejected += 1
        if "is invalid" not in stderr and "unknown field" not in stderr:
            run.problems.append(f"rejected without a validation message: {stderr[:500]}\n"
                                f"{fuzzed.describe()}")
        elif not any(name in stderr for name in touched):
            run.problems.append(f"the message names none of {sorted(touched)}: "
                                f"{stderr[:500]}\n{fuzzed.describe()}")
        if not judged:
            run.problems.append(f"the API server rejects what schema+CEL in-process admit: "
                                f"{stderr[:500]}\n{fuzzed.describe()}")
        return
    run.accepted[doc["metadata"]["name"]] = fuzzed
    if judged:
        run.problems.append(f"the API server admits what schema+CEL in-process reject "
                            f"({judged})\n{fuzzed.describe()}")
    lax = model_verdict(doc, strict=False)
    if lax is not None:
        run.problems.append(f"admitted but the operator's models reject it: {lax}\n"
                            f"{fuzzed.describe()}")


def _admit_one(cluster: ControlPlane, run: FuzzRun, fuzzed: Fuzzed) -> bool:
    accepted, stderr = _create(cluster, run.namespace, fuzzed.doc)
    _judge(run, fuzzed, accepted=accepted, stderr=stderr, judged=schema_verdict(fuzzed.doc),
           touched=fuzzed.field_names)
    return accepted


def _update_one(cluster: ControlPlane, run: FuzzRun, created: Fuzzed, change: Mutation) -> None:
    """Update an admitted object with one more mutation: transition rules (immutable
    fields) on the server, and the operator's update path once admitted."""
    doc = copy.deepcopy(created.doc)
    apply_mutation(doc, change)
    if uses_network_outside_loopback(doc):
        return
    updated = Fuzzed(doc=doc, base=created.base, mutations=(*created.mutations, change))
    accepted, stderr = _replace(cluster, run.namespace, doc)
    if accepted:
        run.updated += 1
    touched = Fuzzed(doc=doc, base=created.base, mutations=(change,)).field_names
    _judge(run, updated, accepted=accepted, stderr=stderr,
           judged=schema_verdict(doc, old=created.doc), touched=touched)


def _reconciled(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return bool(status.get("observedGeneration") == obj["metadata"].get("generation"))


def _wait_reconciled(cluster: ControlPlane, operator: RunningOperator, run: FuzzRun) -> None:
    plural = PLURALS[run.kind]

    def pending() -> list[str]:
        listed = json.loads(cluster.kubectl("get", plural, "-n", run.namespace,
                                            "-o", "json").stdout)
        seen = {o["metadata"]["name"]: o for o in listed["items"]}
        return [n for n in run.accepted if n not in seen or not _reconciled(seen[n])]

    left = list(run.accepted)

    def all_reconciled() -> bool:
        left[:] = pending()
        return not left

    try:
        operator.wait_for(f"observedGeneration on every accepted {run.kind}", all_reconciled,
                          timeout=RECONCILE_TIMEOUT)
    except pytest.fail.Exception:
        for name in left:
            obj = cluster.kubectl("get", plural, name, "-n", run.namespace, "-o", "json",
                                  check=False).stdout
            run.problems.append(f"{name} never got status.observedGeneration: "
                                f"{obj[-1500:]}\n{run.accepted[name].describe()}")


def _log_problems(log: str, others: set[str]) -> list[str]:
    """Log records (a line and its continuation lines) that show an exception or a failed
    handler. kopf's text log does not tag a record with its object, so every record counts
    except those naming an object of another namespace (``<namespace>/<name>``: earlier
    tests' objects, e.g. while their namespace terminates) and API-client retries."""
    records: list[str] = []
    for line in log.splitlines():
        if line.startswith("[") or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return [record[:3000] for record in records
            if LOG_PROBLEMS.search(record) and not CLIENT_RETRY.search(record)
            and not any(f"{ns}/" in record for ns in others)]


def _namespaces(cluster: ControlPlane) -> set[str]:
    out = cluster.kubectl("get", "namespaces", "-o", "name").stdout.split()
    return {n.removeprefix("namespace/") for n in out}


@pytest.fixture
def log_offset(operator: RunningOperator) -> int:
    """Where the operator's log stands before the test, to read only what it adds."""
    return operator.log.stat().st_size if operator.log.exists() else 0


@pytest.fixture
def earlier_namespaces(cluster: ControlPlane, namespace: str) -> set[str]:
    """Namespaces of earlier tests (their objects may still log while they terminate)."""
    return _namespaces(cluster) - {namespace}


@pytest.fixture
def names() -> Iterator[str]:
    return (f"fz-{i}" for i in itertools.count())


@pytest.mark.parametrize("kind", ["TrainingJob", "OptimizationJob", "ModelDeployment"])
def test_fuzzed_manifests_are_rejected_with_a_message_or_reconciled_cleanly(
        cluster: ControlPlane, operator: RunningOperator, namespace: str, log_offset: int,
        earlier_namespaces: set[str], names: Iterator[str], kind: str) -> None:
    run = FuzzRun(kind=kind, namespace=namespace)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE, database=None,
              phases=(Phase.explicit, Phase.generate),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(fuzzed=fuzzed_manifest(kind), data=st.data())
    def admit(fuzzed: Fuzzed, data: st.DataObject) -> None:
        assume(not uses_network_outside_loopback(fuzzed.doc))
        fuzzed.doc["metadata"]["name"] = next(names)
        if _admit_one(cluster, run, fuzzed) and data.draw(st.integers(0, 3)) == 0:
            _update_one(cluster, run, fuzzed, data.draw(mutation(fuzzed.doc)))

    for case in EXPLICIT[kind]:
        case.doc["metadata"]["name"] = next(names)
        _admit_one(cluster, run, case)
    admit()
    assert run.rejected and run.accepted, (
        f"the strategy should produce both outcomes: {run.rejected} rejected, "
        f"{len(run.accepted)} accepted")
    _wait_reconciled(cluster, operator, run)
    operator.check_running()
    with operator.log.open("rb") as log:
        log.seek(log_offset)
        added = log.read().decode(errors="replace")
    others = (earlier_namespaces | _namespaces(cluster)) - {namespace}
    run.problems += [f"operator log: {p}" for p in _log_problems(added, others)]
    assert not run.problems, (
        f"{len(run.problems)} problem(s) with fuzzed {kind}s "
        f"({run.rejected} rejected, {len(run.accepted)} accepted, {run.updated} updated):\n\n"
        + "\n\n".join(run.problems[:12]))
