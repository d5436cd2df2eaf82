"""ModelDeployment monitoring and retraining: what to watch, and what to do about it.

Kept apart from the deployment itself because the loop (monitor -> retrain -> optimize ->
promote) has its own controller and its own tests.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from .base import SpecModel, StatusModel
from .common import Duration, HttpURL, ServedModel, TriggerCheck
from .markers import Rule, k8s
from .optimizationjob import ComparisonReport, OptimizationJobSettings
from .scalars import Annotations, Labels, check_pattern
from .trainingjob import Task, TrainingJobSpec

PROMQL_MAX_LENGTH = 4096
_LABELLED_NEEDS_GATE = (
    "retrain.data.labelled needs an optimizationJobTemplate: the promotion gate that "
    "compares the candidate with the served model runs in the optimization step")
CHECK_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class Bounds(SpecModel):
    """An acceptable range: a value below min or above max fails the check."""

    model_config = ConfigDict(json_schema_extra=k8s(
        Rule("has(self.min) || has(self.max)", "set min, max or both"),
        Rule("!has(self.min) || !has(self.max) || self.min <= self.max",
             "min must not be greater than max"),
    ))

    min: float | None = None
    """Lowest healthy value."""

    max: float | None = None
    """Highest healthy value."""

    @model_validator(mode="after")
    def _min_or_max(self) -> Bounds:
        if self.min is None and self.max is None:
            raise ValueError("set min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not be greater than max")
        return self

    def contains(self, value: float) -> bool:
        """Whether ``value`` is healthy."""
        return (self.min is None or value >= self.min) and (
            self.max is None or value <= self.max)


class FeedbackBounds(Bounds):
    """A bound on a figure computed from ground-truth feedback (spec.capture must be set)."""

    min_samples: Annotated[int, Field(ge=0, le=100_000_000)] | None = None
    """Fewest labelled requests in the window for the check to count; monitoring.minSamples
    when absent. Feedback is usually sparser than traffic."""


class MetricCheck(Bounds):
    """A custom PromQL check. The query must return one number; ``$window`` and
    ``$selector`` in it are replaced by the monitoring window (e.g. 5m) and the label
    matchers selecting this deployment's pods (e.g. namespace="ml",pod=~"bbc-.*")."""

    name: Annotated[str, AfterValidator(lambda v: check_pattern(
        v, CHECK_NAME_PATTERN, "a DNS label: lowercase letters, digits and '-'")), Field(
        min_length=1, max_length=63, json_schema_extra={"pattern": CHECK_NAME_PATTERN})]
    """Check name (a DNS label), unique within the deployment."""

    query: Annotated[str, Field(min_length=1, max_length=PROMQL_MAX_LENGTH)]
    """PromQL expression returning the checked value."""

    samples_query: Annotated[str, Field(min_length=1, max_length=PROMQL_MAX_LENGTH)] | None = (
        None)
    """PromQL expression returning how many observations the value rests on; when it is
    below monitoring.minSamples the check is Inconclusive. Defaults to the request count."""


class OnMissingData(StrEnum):
    """What a check with no data (or too few samples) counts as."""

    INCONCLUSIVE = "Inconclusive"
    """Neither healthy nor failed: it does not count toward failureLimit."""

    FAIL = "Fail"
    """Counts as a failed evaluation, for deployments that must always be observed."""


class MonitoringSpec(SpecModel):
    """Periodic health checks of the served model on Prometheus metrics."""

    model_config = ConfigDict(json_schema_extra=k8s(Rule(
        "has(self.drift) || has(self.inputDrift) || has(self.confidence)"
        " || has(self.errorRate) || has(self.accuracy) || has(self.macroF1)"
        " || (has(self.checks) && size(self.checks) > 0)",
        "monitoring needs at least one of drift, inputDrift, confidence, errorRate, "
        "accuracy, macroF1 or checks",
    )))

    prometheus_url: HttpURL
    """Prometheus server scraping the model servers, e.g. http://prometheus.monitoring:9090."""

    interval: Duration = "1m"
    """Time between evaluations."""

    window: Duration = "5m"
    """Range each evaluation looks back over."""

    failure_limit: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive failed evaluations before the deployment is Degraded (and a retrain
    may start)."""

    min_samples: Annotated[int, Field(ge=0, le=100_000_000)] = 300
    """Fewest requests in the window for a check to count; fewer is missing data. Drift
    over few samples is noise: on an unchanged distribution its 95th percentile is 0.10
    at 100 samples and 0.05 at 200."""

    on_missing_data: OnMissingData = OnMissingData.INCONCLUSIVE
    """What a check without enough data counts as. Missing data is never Healthy."""

    drift: Bounds | None = None
    """Bound on the prediction-distribution drift score against the training reference
    profile (e.g. max: 0.2)."""

    input_drift: Bounds | None = None
    """Bound on the drift of the inputs themselves: the PSI of the live window's encoder
    embeddings (a fixed projection) against the training reference (e.g. max: 0.2). It
    rises on out-of-domain traffic even when the predicted classes do not move."""

    confidence: Bounds | None = None
    """Bound on the mean top-class confidence (e.g. min: 0.6)."""

    accuracy: FeedbackBounds | None = None
    """Bound on live accuracy from ground-truth feedback over the window (e.g. min: 0.8):
    correct over labelled predictions of the served model version. Needs spec.capture."""

    macro_f1: FeedbackBounds | None = None
    """Bound on the live macro-averaged F1 from feedback over the window (e.g. min: 0.75).
    Needs spec.capture."""

    error_rate: Bounds | None = None
    """Bound on the fraction of failed inference requests (e.g. max: 0.05)."""

    checks: Annotated[list[MetricCheck], Field(max_length=32)] = Field(
        default_factory=list,
        json_schema_extra=k8s(list_type="map", list_map_keys=("name",)))
    """Custom PromQL checks."""

    @model_validator(mode="after")
    def _something_to_check(self) -> MonitoringSpec:
        if not (self.drift or self.input_drift or self.confidence or self.error_rate
                or self.accuracy or self.macro_f1 or self.checks):
            raise ValueError(
                "monitoring needs at least one of drift, inputDrift, confidence, errorRate, "
                "accuracy, macroF1 or checks")
        names = [c.name for c in self.checks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"check names must be unique (repeated: {', '.join(duplicates)})")
        return self


class TemplateMetadata(SpecModel):
    """Labels and annotations for the objects created from a template."""

    labels: Labels = Field(default_factory=dict)
    """Extra labels."""

    annotations: Annotations = Field(default_factory=dict)
    """Extra annotations."""


RETRAIN_TASK_MESSAGE: Final = (
    "retraining takes task text-classification only: image-classification models are "
    "trained by TrainingJobs but not yet optimized, served or retrained")


class TrainingJobTemplate(SpecModel):
    """The TrainingJob an automatic retrain creates. The operator names it
    <deployment>-rt-<n>, appends that name to output.uri so runs never overwrite each
    other, and sets an ownerReference to the deployment."""

    model_config = ConfigDict(json_schema_extra=k8s(Rule(
        "!has(self.spec.task) || self.spec.task == 'text-classification'",
        RETRAIN_TASK_MESSAGE, field_path=".spec.task")))

    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata)
    """Labels and annotations of the created TrainingJob."""

    spec: TrainingJobSpec = Field(json_schema_extra=k8s(template=True))
    """Spec of the created TrainingJob."""

    @model_validator(mode="after")
    def _text_only(self) -> TrainingJobTemplate:
        if self.spec.task != Task.TEXT_CLASSIFICATION:
            raise ValueError(RETRAIN_TASK_MESSAGE)
        return self


class OptimizationJobTemplate(SpecModel):
    """The OptimizationJob run on each retrained model. The operator sets its source to
    the new TrainingJob and appends the job name to output.uri."""

    metadata: TemplateMetadata = Field(default_factory=TemplateMetadata)
    """Labels and annotations of the created OptimizationJob."""

    spec: OptimizationJobSettings = Field(json_schema_extra=k8s(template=True))
    """Spec of the created OptimizationJob, without source."""


class Promotion(StrEnum):
    """What happens to a retrained model that passed its gates."""

    AUTO = "auto"
    """Roll it out at once, through spec.rollout."""

    MANUAL = "manual"
    """Record it in status.candidateModel; a person promotes it either by annotating the
    ModelDeployment with modelloop.dev/approve-promotion: <TrainingJob or OptimizationJob
    name> (metadata, not spec, so Argo CD does not revert it), or by pointing spec.model
    at it (a Git change)."""


class LabelledData(SpecModel):
    """Labelled captured traffic (captures joined with feedback) since the model being
    served started serving, added to the template's base dataset."""

    min_rows: Annotated[int, Field(ge=1, le=10_000_000)] = 100
    """Fewest labelled requests before a retrain may start; below it the Retraining
    condition says RetrainWaitingForLabels."""

    max_rows: Annotated[int, Field(ge=1, le=10_000_000)] = 20_000
    """Most labelled rows trained on (the newest are kept)."""

    holdout_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    """Fraction of labelled requests (by a hash of the request id) never trained on,
    kept for the promotion gate."""


class RetrainData(SpecModel):
    """What a retrain learns from."""

    labelled: LabelledData | None = None
    """Train on labelled production traffic too (needs spec.capture and an
    optimizationJobTemplate, where the promotion gate runs)."""

    warm_start: bool = False
    """Fine-tune the served model's own weights (its TrainingJob's output) instead of the
    template's base model; the base model when the served model has no TrainingJob.
    bench/loop_quality.py measures both."""


class PromotionGate(SpecModel):
    """Champion/challenger rules a retrained model must pass before it is promoted (auto
    or manual), checked in its OptimizationJob against the model being served."""

    min_improvement: Annotated[float, Field(ge=-1, le=1)] = 0.0
    """Candidate accuracy on the labelled holdout minus the served model's must be at
    least this (0: not worse on recent traffic)."""

    max_original_drop: Annotated[float, Field(ge=0, le=1)] = 0.01
    """The served model's accuracy on the original validation data minus the
    candidate's must be at most this (0.01 = one point)."""

    min_holdout_rows: Annotated[int, Field(ge=1, le=10_000_000)] = 20
    """Fewest holdout rows to compare on; fewer is Rejected, never promoted blind."""


class RetrainSpec(SpecModel):
    """Automatic retraining when monitoring marks the deployment Degraded."""

    model_config = ConfigDict(json_schema_extra=k8s(Rule(
        "!self.enabled || has(self.trainingJobTemplate)",
        "retrain.enabled needs a trainingJobTemplate",
        field_path=".trainingJobTemplate",
    ), Rule(
        "!has(self.data) || !has(self.data.labelled) || has(self.optimizationJobTemplate)",
        _LABELLED_NEEDS_GATE, field_path=".data.labelled",
    )))

    enabled: bool = False
    """Whether the operator may create TrainingJobs on its own."""

    training_job_template: TrainingJobTemplate | None = None
    """The TrainingJob to create."""

    optimization_job_template: OptimizationJobTemplate | None = None
    """The OptimizationJob to run on the result; without it the trained model is
    served as-is."""

    cooldown: Duration = "1h"
    """Least time between two triggered retrains."""

    max_in_flight: Annotated[int, Field(ge=1, le=10)] = 1
    """Most retrains running at once."""

    max_per_day: Annotated[int, Field(ge=1, le=1000)] = 3
    """Most retrains triggered in any 24 hours."""

    promotion: Promotion = Promotion.MANUAL
    """auto: roll out an accepted model at once; manual: wait for a person to approve it
    with the annotation modelloop.dev/approve-promotion: <TrainingJob or OptimizationJob
    name> on this ModelDeployment, or to point spec.model at it."""

    data: RetrainData = Field(default_factory=RetrainData, json_schema_extra=k8s(default={}))
    """Training data beyond the template's dataset, and the starting weights."""

    gate: PromotionGate = Field(default_factory=PromotionGate,
                                json_schema_extra=k8s(default={}))
    """Rules against the served model; applied to every retrain on labelled traffic
    (data.labelled) while a model is being served."""

    @model_validator(mode="after")
    def _template_when_enabled(self) -> RetrainSpec:
        if self.enabled and self.training_job_template is None:
            raise ValueError("retrain.enabled needs a trainingJobTemplate")
        if self.data.labelled is not None and self.optimization_job_template is None:
            raise ValueError(_LABELLED_NEEDS_GATE)
        return self


# --- status -----------------------------------------------------------------------------

class CheckResult(StrEnum):
    """Outcome of one check or of a whole evaluation."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"
    INCONCLUSIVE = "Inconclusive"


class CheckStatus(StatusModel):
    """One check's latest evaluation."""

    name: Annotated[str, Field(min_length=1, max_length=63)]
    """Check name (drift, confidence, errorRate or a custom check)."""

    result: CheckResult
    """Healthy, Unhealthy or Inconclusive."""

    value: float | None = None
    """Observed value; absent when there was no data."""

    samples: float | None = None
    """Observations the value rests on."""

    min: float | None = None
    """Lower bound checked against."""

    max: float | None = None
    """Upper bound checked against."""

    message: Annotated[str, Field(max_length=1024)] = ""
    """Why the result is what it is (e.g. only 12 samples, 100 needed)."""


class AnalysisStatus(StatusModel):
    """The latest monitoring evaluation."""

    time: datetime | None = None
    """When it ran."""

    result: CheckResult | None = None
    """Unhealthy if any check was Unhealthy, else Inconclusive if any was, else Healthy."""

    consecutive_failures: Annotated[int, Field(ge=0)] = 0
    """Failed evaluations in a row, compared with monitoring.failureLimit."""

    checks: Annotated[list[CheckStatus], Field(max_length=64)] = Field(
        default_factory=list,
        json_schema_extra=k8s(list_type="map", list_map_keys=("name",)))
    """Each check's result."""


class RetrainOutcome(StrEnum):
    """Where a retrain stands."""

    RUNNING = "Running"
    AWAITING_PROMOTION = "AwaitingPromotion"
    PROMOTED = "Promoted"
    REJECTED = "Rejected"
    FAILED = "Failed"


class RetrainRecord(StatusModel):
    """One automatic retrain."""

    training_job: Annotated[str, Field(max_length=253)]
    """The TrainingJob it created."""

    optimization_job: Annotated[str, Field(max_length=253)] | None = None
    """The OptimizationJob it created."""

    triggered_at: datetime | None = None
    """When it was triggered."""

    finished_at: datetime | None = None
    """When it reached a final outcome."""

    outcome: RetrainOutcome = RetrainOutcome.RUNNING
    """Running, AwaitingPromotion, Promoted, Rejected or Failed."""

    checks: Annotated[list[TriggerCheck], Field(max_length=64)] = Field(default_factory=list)
    """The failed checks that triggered it."""

    previous_model: ServedModel | None = None
    """On promotion: the model it replaced, i.e. where to roll back to."""

    dataset_digest: Annotated[str, Field(max_length=128)] | None = None
    """sha256:<hex> of the data its TrainingJob trained on."""

    gate: ComparisonReport | None = None
    """The promotion gate: candidate and served model on the holdout and the original
    validation data, and the verdict."""

    message: Annotated[str, Field(max_length=1024)] = ""
    """Details (e.g. why it was rejected)."""


class RetrainStatus(StatusModel):
    """Automatic retrains: the last ones and the budget used."""

    history: Annotated[list[RetrainRecord], Field(max_length=20)] = Field(
        default_factory=list)
    """Most recent retrains, newest first (at most 20)."""

    in_flight: Annotated[int, Field(ge=0)] = 0
    """Retrains not yet finished."""

    last_triggered: datetime | None = None
    """When the latest retrain was triggered (cooldown starts here)."""
