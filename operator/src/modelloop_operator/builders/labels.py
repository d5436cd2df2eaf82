"""Label and annotation keys the operator puts on what it creates, in one place: the
watches select on them, the builders write them, and the tests assert on them."""

from __future__ import annotations

from typing import Final

MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE: Final = "modelloop"
COMPONENT: Final = "app.kubernetes.io/component"
PART_OF: Final = "app.kubernetes.io/part-of"
ATTEMPT: Final = "modelloop.dev/attempt"
TRAINING_JOB: Final = "modelloop.dev/trainingjob"
OPTIMIZATION_JOB: Final = "modelloop.dev/optimizationjob"
MODEL_DEPLOYMENT: Final = "modelloop.dev/modeldeployment"
TRACK: Final = "modelloop.dev/track"
"""``stable`` or ``canary``: which of a ModelDeployment's Deployments a pod belongs to."""
MODEL_VERSION: Final = "modelloop.dev/model-version"
KUEUE_QUEUE: Final = "kueue.x-k8s.io/queue-name"

MANAGED_SELECTOR: Final = f"{MANAGED_BY}={MANAGED_BY_VALUE}"
"""Server-side label selector for every watch on children (Jobs, pods)."""
