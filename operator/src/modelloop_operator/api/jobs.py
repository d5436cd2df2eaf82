"""Pieces shared by the two batch kinds, TrainingJob and OptimizationJob: phase, status
counters for the gang run policy, and the settings both pass to a trainer-image pod."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from .base import StatusModel
from .common import Condition, Lineage
from .markers import k8s


class JobPhase(StrEnum):
    """Summary of a job's state, for printer columns. Succeeded and Failed are final."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"

    @property
    def is_terminal(self) -> bool:
        """Succeeded and Failed never change again; children are never recreated."""
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED)


class JobStatus(StatusModel):
    """What the operator observed about a job. Written only by the operator."""

    phase: JobPhase | None = None
    """Pending, Running, Succeeded, Failed or Suspended."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this status describes."""

    conditions: Annotated[list[Condition], Field(max_length=32)] = Field(
        default_factory=list,
        json_schema_extra=k8s(list_type="map", list_map_keys=("type",)))
    """One per type: Ready, Progressing, Succeeded, Failed, Suspended (and Accepted on an
    OptimizationJob)."""

    attempts: Annotated[int, Field(ge=0)] = 0
    """Number of the current attempt (the -a<n> suffix of the Job now running); 0 before
    the first start."""

    failed_attempts: Annotated[int, Field(ge=0)] = 0
    """Attempts that failed and count against runPolicy.backoffLimit."""

    disruptions: Annotated[int, Field(ge=0)] = 0
    """Gang restarts caused by preemption or eviction; they do not count against
    runPolicy.backoffLimit."""

    start_time: datetime | None = None
    """When the first attempt started."""

    completion_time: datetime | None = None
    """When the job succeeded or failed."""

    lineage: Lineage | None = None
    """Where the result came from and what triggered the job."""

    message: Annotated[str, Field(max_length=32768)] = ""
    """Last human-readable explanation (e.g. why the job failed)."""
