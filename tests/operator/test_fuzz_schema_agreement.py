"""The pydantic models and the generated CRD schema agree on fuzzed manifests.

Both gates see every spec: the API server (schema and CEL) on admission, the models when
the operator reads the object. Where they disagree, either the operator meets a spec it
cannot parse (the API server admitted it) or Python tooling builds a spec the API server
refuses. For mutated examples (tests/operator/fuzz_manifests.py):

* admitted by schema and CEL => accepted by the models as the operator uses them (lax);
* accepted by the models without coercion (strict JSON) => admitted by schema and CEL;
* the models never raise anything but a ValidationError.

Derandomized so CI sees the same examples on every run; a failure prints the manifest.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from .api_cases import example
from .fuzz_manifests import (
    Fuzzed,
    Mutation,
    apply_mutation,
    fuzzed_manifest,
    model_verdict,
    schema_verdict,
)

pytest.importorskip("celpy", reason="cel-python is pinned in hack/requirements.txt")

# No shrinking: each example runs every CEL rule of its kind, so shrinking takes minutes;
# the failure message shows the manifest and the mutations that made it instead.
FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check_agreement(fuzzed: Fuzzed) -> None:
    doc = fuzzed.doc
    server = schema_verdict(doc)
    lax = model_verdict(doc, strict=False)
    strict = model_verdict(doc, strict=True)
    if not server:
        assert lax is None, (
            f"schema and CEL admit what the models reject ({lax})\n{fuzzed.describe()}")
    if strict is None:
        assert not server, (
            f"the models accept what schema or CEL reject ({server})\n{fuzzed.describe()}")


@pytest.mark.parametrize("kind", ["TrainingJob", "OptimizationJob", "ModelDeployment"])
def test_models_and_schema_agree_on_fuzzed_manifests(kind: str) -> None:
    @FUZZ
    @given(fuzzed=fuzzed_manifest(kind))
    def check(fuzzed: Fuzzed) -> None:
        _check_agreement(fuzzed)

    check()


#: Disagreements the fuzzing found once, kept so that they stay fixed.
REGRESSIONS: tuple[tuple[str, str, Mutation], ...] = (
    # Python's `$` matched before a final newline; RE2 (CEL) does not.
    ("pvc-uri-newline", "trainingjob-bbc.yaml",
     Mutation("invalid", ("spec", "output", "uri"), "pvc://models\n")),
    # Integers beyond int64 are not integers to the API server.
    ("quantity-beyond-int64", "optimizationjob-int8.yaml",
     Mutation("invalid", ("spec", "resources", "cpu"), 10**20)),
    # timedelta overflowed (OverflowError, not a ValidationError); Go's limit is ~2.5M h.
    ("duration-overflow", "modeldeployment.yaml",
     Mutation("invalid", ("spec", "retrain", "cooldown"), "9999999999999h")),
    ("duration-beyond-go", "modeldeployment.yaml",
     Mutation("invalid", ("spec", "monitoring", "interval"), "2562048h")),
    # The pod rules: an Equal toleration needs a key; keys and values are label syntax.
    ("toleration-without-key", "modeldeployment-archive.yaml",
     Mutation("valid", ("spec", "scheduling"), {"tolerations": [{"operator": "Equal"}]})),
    ("toleration-seconds-without-noexecute", "trainingjob-rotten-tomatoes-gpu.yaml",
     Mutation("valid", ("spec", "scheduling", "tolerations", 0, "tolerationSeconds"), 5)),
    ("priority-class-not-a-name", "modeldeployment-archive.yaml",
     Mutation("valid", ("spec", "scheduling"), {"priorityClassName": ";\u008eF"})),
    ("label-key-with-space", "trainingjob-bbc.yaml",
     Mutation("valid", ("spec", "podTemplate"),
              {"metadata": {"labels": {"bad key": "v"}}})),
    ("label-key-prefix-too-long", "trainingjob-bbc.yaml",
     Mutation("valid", ("spec", "podTemplate"),
              {"metadata": {"labels": {"a" * 254 + "/team": "v"}}})),
    ("annotation-key-unicode", "optimizationjob-int8.yaml",
     Mutation("valid", ("spec", "podTemplate"),
              {"metadata": {"annotations": {"名前": "v"}}})),
    ("node-selector-value-not-a-label", "trainingjob-rotten-tomatoes-gpu.yaml",
     Mutation("valid", ("spec", "scheduling", "nodeSelector", "nvidia.com/gpu.present"),
              "yes please")),
    ("image-with-spaces", "trainingjob-bbc.yaml",
     Mutation("valid", ("spec", "image"), " example.com/trainer:1")),
    ("queue-name-not-a-label", "trainingjob-rotten-tomatoes-gpu.yaml",
     Mutation("valid", ("spec", "scheduling", "queueName"), "gpu queue")),
)


@pytest.mark.parametrize("base,change", [r[1:] for r in REGRESSIONS],
                         ids=[r[0] for r in REGRESSIONS])
def test_models_and_schema_agree_on_what_fuzzing_found(base: str, change: Mutation) -> None:
    doc = example(base)
    apply_mutation(doc, change)
    fuzzed = Fuzzed(doc=doc, base=base, mutations=(change,))
    _check_agreement(fuzzed)
    # every one of these is invalid: both gates must refuse it
    assert schema_verdict(doc), fuzzed.describe()
    assert model_verdict(doc, strict=False) is not None, fuzzed.describe()
