"""The modelloop API (group modelloop.dev, version v1alpha1) as pydantic models.

These models are the single source of truth: the CRDs in ``crds/`` and the chart, and the
field reference in ``docs/reference/``, are generated from them
(``python -m modelloop_operator.crdgen``). Python names are snake_case; YAML names are the
camelCase aliases, which ``model_dump()`` writes by default.
"""

from .common import (
    Condition,
    ConditionStatus,
    DatasetSpec,
    Lineage,
    LocalObjectReference,
    ModelArtifact,
    NodeResources,
    OutputSpec,
    PodMetadata,
    PodTemplateOverrides,
    RetrainTrigger,
    RunPolicy,
    Scheduling,
    StorageSpec,
    Toleration,
    TriggerCheck,
    check_uri,
    parse_duration,
    pvc_claim,
    uri_scheme,
)
from .errors import describe_validation_error
from .meta import API_VERSION, CATEGORY, GROUP, VERSION, KindInfo, ObjectMeta
from .trainingjob import (
    TRAININGJOB_KIND,
    BaseModelSpec,
    EvaluationGate,
    EvaluationMetric,
    Hyperparameters,
    Task,
    TrainingJob,
    TrainingJobPhase,
    TrainingJobSpec,
    TrainingJobStatus,
)

TRAININGJOB_PLURAL = TRAININGJOB_KIND.plural

__all__ = [
    "API_VERSION",
    "CATEGORY",
    "GROUP",
    "TRAININGJOB_KIND",
    "TRAININGJOB_PLURAL",
    "VERSION",
    "BaseModelSpec",
    "Condition",
    "ConditionStatus",
    "DatasetSpec",
    "EvaluationGate",
    "EvaluationMetric",
    "Hyperparameters",
    "KindInfo",
    "Lineage",
    "LocalObjectReference",
    "ModelArtifact",
    "NodeResources",
    "ObjectMeta",
    "OutputSpec",
    "PodMetadata",
    "PodTemplateOverrides",
    "RetrainTrigger",
    "RunPolicy",
    "Scheduling",
    "StorageSpec",
    "Task",
    "Toleration",
    "TrainingJob",
    "TrainingJobPhase",
    "TrainingJobSpec",
    "TrainingJobStatus",
    "TriggerCheck",
    "check_uri",
    "describe_validation_error",
    "parse_duration",
    "pvc_claim",
    "uri_scheme",
]
