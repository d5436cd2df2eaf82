"""The TrainingJob's command line and gang template (docs/contracts.md, section 1).

Every pod runs ``modelloop_trainer.train`` under torchrun: rank from the Job's completion
index, rank 0's stable DNS name as master address, one process per GPU (one on CPU).
Flags are spelled out in full (defaults included) so that ``kubectl get job -o yaml``
shows exactly what ran, whatever the image's own defaults become.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from ..api.common import DatasetSpec, pvc_claim
from ..api.trainingjob import DEFAULT_IMAGE_SIZE, CapturedData, Task, TrainingJobSpec
from .job import GangJobTemplate, Owner, master_address
from .labels import TRAINING_JOB

TRAINER_MODULE: Final = "modelloop_trainer.train"
CONTAINER: Final = "trainer"
COMPONENT: Final = "training"
SNAPSHOT_DIR: Final = "dataset"
"""Where, under its output, the trainer writes the data a run trained on."""


def number_flag(value: float | int) -> str:
    """Floats as the shortest exact text (``5e-05``), ints without a decimal point."""
    return repr(value) if isinstance(value, float) else str(value)


def dataset_flags(data: DatasetSpec) -> list[str]:
    """The dataset flags both trainer commands share (docs/contracts.md)."""
    flags = [
        f"--dataset-uri={data.uri}",
        f"--text-field={data.text_field}",
        f"--label-field={data.label_field}",
    ]
    if data.validation_uri is not None:
        flags.append(f"--validation-uri={data.validation_uri}")
    else:
        flags.append(f"--validation-split={number_flag(data.validation_split)}")
    if data.max_samples is not None:
        flags.append(f"--max-samples={data.max_samples}")
    return flags


def rfc3339(moment: datetime) -> str:
    """A UTC timestamp as the trainer's flags take it (``2026-12-06T12:00:00Z``)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def captured_flags(captured: CapturedData) -> list[str]:
    """The labelled-traffic flags of ``modelloop-train``."""
    flags = [f"--captured-uri={captured.uri}"]
    if captured.since is not None:
        flags.append(f"--captured-since={rfc3339(captured.since)}")
    return [*flags, f"--captured-max-rows={captured.max_rows}",
            f"--captured-min-rows={captured.min_rows}",
            f"--holdout-fraction={number_flag(captured.holdout_fraction)}"]


def task_size_flag(spec: TrainingJobSpec) -> str:
    """How big one example is: tokens for text, pixels (square) for images."""
    if spec.task == Task.IMAGE_CLASSIFICATION:
        return f"--image-size={spec.hyperparameters.image_size or DEFAULT_IMAGE_SIZE}"
    return f"--max-length={spec.hyperparameters.max_length}"


def build_trainer_flags(*, spec: TrainingJobSpec) -> list[str]:
    """``modelloop-train`` flags for the spec, in the contract's order."""
    data, hp = spec.dataset, spec.hyperparameters
    flags = [f"--task={spec.task.value}", f"--model-uri={spec.model.uri}",
             *dataset_flags(data)]
    if data.captured is not None:
        flags += captured_flags(data.captured)
    flags += [
        f"--output-uri={spec.output.uri}",
        f"--epochs={hp.epochs}",
        f"--batch-size={hp.batch_size}",
        f"--learning-rate={number_flag(spec.learning_rate)}",
        f"--weight-decay={number_flag(hp.weight_decay)}",
        f"--warmup-ratio={number_flag(hp.warmup_ratio)}",
        f"--gradient-accumulation-steps={hp.gradient_accumulation_steps}",
        task_size_flag(spec),
        f"--seed={hp.seed}",
        f"--checkpoint-every={hp.checkpoint_every}",
        f"--metric={spec.evaluation.metric.value}",
    ]
    if spec.evaluation.min_score is not None:
        flags.append(f"--min-score={number_flag(spec.evaluation.min_score)}")
    flags.append("--termination-log=/dev/termination-log")
    return flags


def build_torchrun_command(
    *, num_nodes: int, gpus_per_node: int, master_addr: str, master_port: int,
    module: str, flags: list[str],
) -> list[str]:
    """``torchrun`` launching ``module`` as one rank of the gang.

    ``$(JOB_COMPLETION_INDEX)`` is expanded by the kubelet from the container's env.
    """
    return [
        "torchrun",
        f"--nnodes={num_nodes}",
        "--node_rank=$(JOB_COMPLETION_INDEX)",
        f"--nproc_per_node={max(gpus_per_node, 1)}",
        f"--master_addr={master_addr}",
        f"--master_port={master_port}",
        "-m", module,
        *flags,
    ]


def training_uris(spec: TrainingJobSpec) -> list[str]:
    """Every URI the trainer reads or writes (their pvc:// claims get mounted)."""
    uris = [spec.model.uri, spec.dataset.uri, spec.output.uri]
    if spec.dataset.validation_uri is not None:
        uris.append(spec.dataset.validation_uri)
    if spec.dataset.captured is not None:
        uris.append(spec.dataset.captured.uri)
    return uris


def build_training_template(
    *, owner: Owner, spec: TrainingJobSpec, attempt: int, default_image: str,
    default_cpu: str, default_memory: str, master_port: int,
) -> GangJobTemplate:
    """The gang template of one attempt of a TrainingJob."""
    command = build_torchrun_command(
        num_nodes=spec.num_nodes, gpus_per_node=spec.resources.gpus,
        master_addr=master_address(name=owner.name, namespace=owner.namespace, attempt=attempt,
                                   num_nodes=spec.num_nodes),
        master_port=master_port, module=TRAINER_MODULE, flags=build_trainer_flags(spec=spec))
    claims = tuple(c for c in (pvc_claim(u) for u in training_uris(spec)) if c is not None)
    return GangJobTemplate(
        owner=owner, owner_label=TRAINING_JOB, component=COMPONENT, container=CONTAINER,
        image=spec.image or default_image, command=tuple(command),
        num_nodes=spec.num_nodes, resources=spec.resources, default_cpu=default_cpu,
        default_memory=default_memory, rendezvous_port=master_port,
        scheduling=spec.scheduling, storage=spec.storage,
        pod_metadata=spec.pod_template.metadata, pvc_claims=claims,
    )
