"""The OptimizationJob's command line and gang template (docs/contracts.md, section 2).

An optimization is a gang of one: the same indexed Job, run policy, mounts and security as
a TrainingJob (:mod:`.job`), with ``modelloop-optimize`` as the command. What the spec
leaves to its source (the model to optimize, and the evaluation data when none is given)
arrives already resolved as :class:`OptimizationInputs`, so this module never looks at
another object. Flags are spelled out in full, defaults included, so that the Job shows
exactly what ran.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from ..api.common import DatasetSpec, pvc_claim
from ..api.optimizationjob import OptimizationJobSpec
from .job import GangJobTemplate, Owner
from .labels import OPTIMIZATION_JOB
from .training import dataset_flags, number_flag, rfc3339

OPTIMIZE_COMMAND: Final = "modelloop-optimize"
CONTAINER: Final = "optimizer"
COMPONENT: Final = "optimization"
ARCHIVE_SUFFIX: Final = ".mar"


@dataclass(frozen=True)
class OptimizationInputs:
    """What the optimizer reads, once the source is known: the model directory and the
    evaluation data (the TrainingJob's dataset when the spec names none)."""

    model_uri: str
    dataset: DatasetSpec




def techniques_json(spec: OptimizationJobSpec) -> str:
    """The ``--techniques`` value: compact JSON, in the spec's order, defaults filled in."""
    return json.dumps([t.to_trainer_json() for t in spec.techniques], separators=(",", ":"))


def build_optimize_flags(*, spec: OptimizationJobSpec, inputs: OptimizationInputs) -> list[str]:
    """``modelloop-optimize`` flags for the spec, in the contract's order."""
    data, packaging = inputs.dataset, spec.packaging
    flags = [f"--model-uri={inputs.model_uri}", *dataset_flags(data)]
    flags += [
        f"--techniques={techniques_json(spec)}",
        f"--max-accuracy-drop={number_flag(spec.acceptance.max_accuracy_drop)}",
    ]
    if spec.acceptance.min_speedup is not None:
        flags.append(f"--min-speedup={number_flag(spec.acceptance.min_speedup)}")
    flags += comparison_flags(spec)
    flags += [
        f"--output-uri={spec.output.uri}",
        f"--archive-name={packaging.archive_name}",
        f"--batch-size={packaging.batch_size}",
        f"--workers={packaging.workers}",
        f"--max-batch-delay-ms={packaging.max_batch_delay_ms}",
        f"--response-timeout-s={packaging.response_timeout_seconds}",
        "--termination-log=/dev/termination-log",
    ]
    return flags


def comparison_flags(spec: OptimizationJobSpec) -> list[str]:
    """The champion/challenger flags of ``modelloop-optimize`` (none without a comparison)."""
    comparison = spec.comparison
    if comparison is None:
        return []
    flags = [f"--champion-uri={comparison.champion.uri}"]
    if comparison.champion.name is not None:
        flags.append(f"--champion-name={comparison.champion.name}")
    holdout = comparison.holdout
    if holdout is not None:
        flags.append(f"--holdout-uri={holdout.uri}")
        if holdout.since is not None:
            flags.append(f"--holdout-since={rfc3339(holdout.since)}")
        flags += [f"--holdout-fraction={number_flag(holdout.fraction)}",
                  f"--min-holdout-rows={holdout.min_rows}"]
    return [*flags, f"--min-improvement={number_flag(comparison.min_improvement)}",
            f"--max-original-drop={number_flag(comparison.max_original_drop)}"]


def expected_archive_uri(spec: OptimizationJobSpec) -> str:
    """Where ``modelloop-optimize`` publishes the archive: ``<output>/<archiveName>.mar``.
    Used only when an accepted run's termination message was lost."""
    return f"{spec.output.uri.rstrip('/')}/{spec.packaging.archive_name}{ARCHIVE_SUFFIX}"


def optimization_uris(*, spec: OptimizationJobSpec, inputs: OptimizationInputs) -> list[str]:
    """Every URI the optimizer reads or writes (their pvc:// claims get mounted)."""
    uris = [inputs.model_uri, inputs.dataset.uri, spec.output.uri]
    if inputs.dataset.validation_uri is not None:
        uris.append(inputs.dataset.validation_uri)
    if spec.comparison is not None:
        uris.append(spec.comparison.champion.uri)
        if spec.comparison.holdout is not None:
            uris.append(spec.comparison.holdout.uri)
    return uris


def build_optimization_template(
    *, owner: Owner, spec: OptimizationJobSpec, inputs: OptimizationInputs, default_image: str,
    default_cpu: str, default_memory: str, rendezvous_port: int,
) -> GangJobTemplate:
    """The gang template (one node) of an OptimizationJob. ``rendezvous_port`` is unused
    by a single process but keeps the generic Service and pod ports well-formed."""
    command = (OPTIMIZE_COMMAND, *build_optimize_flags(spec=spec, inputs=inputs))
    uris = optimization_uris(spec=spec, inputs=inputs)
    claims = tuple(c for c in (pvc_claim(u) for u in uris) if c is not None)
    return GangJobTemplate(
        owner=owner, owner_label=OPTIMIZATION_JOB, component=COMPONENT, container=CONTAINER,
        image=spec.image or default_image, command=command, num_nodes=1,
        resources=spec.resources, default_cpu=default_cpu, default_memory=default_memory,
        rendezvous_port=rendezvous_port, scheduling=spec.scheduling, storage=spec.storage,
        pod_metadata=spec.pod_template.metadata, pvc_claims=claims,
    )
