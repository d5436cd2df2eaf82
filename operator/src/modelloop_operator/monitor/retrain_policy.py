"""Whether a Degraded deployment may start a retrain now, and what it is called.

Exactly one TrainingJob per trigger, even across operator restarts and concurrent
reconciles, rests on two facts rather than on remembering what was done:

* **names are deterministic**: run ``n`` of deployment ``d`` is the TrainingJob
  ``d-rt-<n>``, with ``n`` one more than the highest run known from status *and* from the
  TrainingJobs the deployment owns (listed by label). A run created just before a crash,
  whose record never reached status, is still listed, so the next pass adopts it instead
  of starting another;
* **creation is create-only**: two reconciles that both decide on ``d-rt-<n>`` race on
  the API server, which lets one create it and answers the other AlreadyExists, which
  means "already claimed".

The budget (``maxInFlight``, ``cooldown``, ``maxPerDay``) is counted over the same union
of recorded and listed runs, so neither a crash nor a trimmed history (status keeps 20)
can hand out an extra retrain.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from ..api.common import parse_duration
from ..api.modeldeployment import DeploymentModelSource
from ..api.monitoring import RetrainSpec

DAY: Final = timedelta(days=1)


class Refusal:
    """Why a Degraded deployment does not retrain now (Event and condition reasons)."""

    DISABLED: Final = "RetrainDisabled"
    IN_FLIGHT: Final = "RetrainInFlight"
    COOLDOWN: Final = "RetrainCoolingDown"
    DAILY_LIMIT: Final = "RetrainDailyLimit"
    WAITING_FOR_LABELS: Final = "RetrainWaitingForLabels"


def training_job_name(*, deployment: str, run: int) -> str:
    """The TrainingJob of retrain ``run``."""
    return f"{deployment}-rt-{run}"


def optimization_job_name(*, deployment: str, run: int) -> str:
    """The OptimizationJob of retrain ``run``. Not the TrainingJob's name: each job kind
    names its batch Job ``<name>-a<attempt>``, and two kinds sharing a name would collide."""
    return f"{deployment}-rt-{run}-o"


def run_number(name: str, *, deployment: str) -> int | None:
    """``n`` of a retrain TrainingJob name, None for any other name."""
    found = re.fullmatch(re.escape(deployment) + r"-rt-([1-9][0-9]*)", name)
    return int(found.group(1)) if found else None


def next_run(*, deployment: str, names: Iterable[str]) -> int:
    """One more than the highest run among ``names`` (recorded and listed runs)."""
    runs = [n for n in (run_number(x, deployment=deployment) for x in names) if n is not None]
    return max(runs, default=0) + 1


def source_fingerprint(source: DeploymentModelSource) -> str:
    """A short stable digest of ``spec.model``. Each retrain carries the one it started
    from, so a Git change to the model (which wins) is told apart from any other spec
    change: runs started for an older model are never promoted over the new one."""
    raw = json.dumps(source.model_dump(mode="json", by_alias=True, exclude_none=True),
                     sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class KnownRun:
    """A retrain known from status or from the owned TrainingJobs."""

    name: str
    triggered_at: datetime | None
    finished: bool


@dataclass(frozen=True)
class Permission:
    """The answer: allowed, or the reason and a message saying until when."""

    allowed: bool
    reason: str = ""
    message: str = ""


def may_retrain(spec: RetrainSpec | None, *, runs: Sequence[KnownRun],
                last_triggered: datetime | None, now: datetime) -> Permission:
    """Whether a new retrain may start now (the deployment is already Degraded)."""
    if spec is None or not spec.enabled:
        return Permission(False, Refusal.DISABLED, "retrain is not enabled")
    running = [r.name for r in runs if not r.finished]
    if len(running) >= spec.max_in_flight:
        return Permission(False, Refusal.IN_FLIGHT,
                          f"{len(running)} retrain(s) in flight ({', '.join(sorted(running))}),"
                          f" maxInFlight {spec.max_in_flight}")
    times = [t for t in (*(r.triggered_at for r in runs), last_triggered) if t is not None]
    cooldown = parse_duration(spec.cooldown)
    if times and now < max(times) + cooldown:
        return Permission(False, Refusal.COOLDOWN,
                          f"cooling down until {(max(times) + cooldown).isoformat()} "
                          f"(cooldown {spec.cooldown})")
    today = sorted({r.name: r.triggered_at for r in runs
                    if r.triggered_at is not None and r.triggered_at > now - DAY}.values())
    if len(today) >= spec.max_per_day:
        reopens = today[len(today) - spec.max_per_day] + DAY
        return Permission(False, Refusal.DAILY_LIMIT,
                          f"{len(today)} retrains in the last 24h, maxPerDay "
                          f"{spec.max_per_day}; next allowed at {reopens.isoformat()}")
    return Permission(True)
