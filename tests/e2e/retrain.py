"""The closed loop's ModelDeployment: the quickstart's, with capture, live accuracy from
feedback, and automatic retraining on base data + labelled traffic behind the
champion/challenger gate.

Two retraining templates: "hasty" (one epoch at a learning rate 100 times the quickstart's,
and no evaluation gate of its own) trains a model that collapses to one class, which only
the promotion gate can stop; "careful" is the quickstart's own training. The loop first
runs with the hasty one (its candidate must be Rejected and never served), then the careful
one (Promoted, and better on the traffic it serves).
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from . import loop

Json = dict[str, Any]
Template = Literal["hasty", "careful"]
SINK_PATH = "captures/quickstart"
"""Inside the `models` claim: the capture sink (captures/, labelled/)."""
MIN_LABELLED = 200
"""retrain.data.labelled.minRows: labelled requests before a retrain may start."""
GATE = {"minImprovement": 0.0, "maxOriginalDrop": 0.05, "minHoldoutRows": 30}
"""maxOriginalDrop 0.05: the original validation split has ~110 articles, where one article
is ~1 point; the default (0.01) suits a real validation set."""


def training_template(settings: loop.Settings, template: Template) -> Json:
    """The retraining TrainingJob spec: the quickstart's (with `settings`), or the hasty one."""
    spec: Json = copy.deepcopy(loop.training_job(settings)["spec"])
    spec["output"] = {"uri": "pvc://models/retrained"}
    if template == "hasty":
        spec["hyperparameters"] = {**spec["hyperparameters"], "epochs": 1,
                                   "learningRate": 0.01}
        del spec["evaluation"]
    return spec


def monitored_deployment(*, prometheus_url: str, settings: loop.Settings,
                         template: Template) -> Json:
    """The quickstart ModelDeployment with capture, accuracy monitoring and retraining."""
    mdep = copy.deepcopy(loop.manifest("30-modeldeployment"))
    oj_spec = copy.deepcopy(loop.manifest("20-optimizationjob")["spec"])
    del oj_spec["source"]
    oj_spec["output"] = {"uri": "pvc://models/retrained-int8"}
    mdep["spec"]["capture"] = {"sink": f"pvc://models/{SINK_PATH}", "sampleRate": 1.0,
                               "maxSegmentAge": "5s"}
    mdep["spec"]["monitoring"] = {
        "prometheusUrl": prometheus_url, "interval": "5s", "window": "2m",
        "failureLimit": 3, "minSamples": 60, "onMissingData": "Inconclusive",
        "accuracy": {"min": settings.live_accuracy_min, "minSamples": 60}}
    mdep["spec"]["retrain"] = {
        "enabled": True, "promotion": "auto", "cooldown": "10s", "maxInFlight": 1,
        "maxPerDay": 3,
        "data": {"labelled": {"minRows": MIN_LABELLED, "holdoutFraction": 0.2}},
        "gate": GATE,
        "trainingJobTemplate": {"spec": training_template(settings, template)},
        "optimizationJobTemplate": {"spec": oj_spec}}
    return mdep
