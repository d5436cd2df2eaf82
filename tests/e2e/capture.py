"""Capture and feedback on the local stack: a second ModelDeployment of the quickstart's
archive with capture, the collector, and the accuracy and inputDrift checks.

Steps (each waits for the promised transition, asserting nothing: the test does):
1. in-domain traffic (BBC validation articles) and truthful feedback: accuracy Healthy;
2. the same articles again, with feedback that says every answer was wrong: accuracy
   falls under its bound, the deployment turns Degraded;
3. out-of-domain traffic (Rotten Tomatoes film reviews): the input PSI rises over 0.2.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import loop
from .prometheus import Prometheus
from .stack import Stack

Json = dict[str, Any]
NAME = "labelled"
ACCURACY_MIN = 0.6
INPUT_DRIFT_MAX = 0.2
SINK_PATH = "captures/labelled"
COLLECTOR_PORT = 8080


def deployment(archive: str) -> Json:
    return {
        "apiVersion": "modelloop.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": NAME},
        "spec": {
            "model": {"archiveUri": archive},
            "replicas": 1,
            "resources": {"cpu": "1", "memory": "2Gi"},
            "server": {"workers": 1, "batchSize": 4, "maxBatchDelayMs": 20},
            "scheduling": {"nodeSelector": {"modelloop.dev/local-runner": "true"}},
            "capture": {"sink": f"pvc://models/{SINK_PATH}", "sampleRate": 1.0,
                        "maxSegmentAge": "5s"},
            "monitoring": {
                "prometheusUrl": "http://127.0.0.1:9090",  # replaced with the test's
                "interval": "5s", "window": "2m", "failureLimit": 2, "minSamples": 50,
                "accuracy": {"min": ACCURACY_MIN, "minSamples": 50},
                "inputDrift": {"max": INPUT_DRIFT_MAX},
            },
        },
    }


def post_json(url: str, body: Json, *, headers: dict[str, str] | None = None,
              timeout: float = 60) -> tuple[int, Json, dict[str, str]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def out_of_domain_texts(count: int) -> list[str]:
    """Film reviews: nothing like the news the model was trained on."""
    from modelloop_trainer.datasets import DatasetSpec, load_splits

    splits = load_splits(DatasetSpec(uri="builtin://rotten-tomatoes", seed=7,
                                     validation_split=0.1))
    return list(splits.train.texts[:count])


@dataclass
class Observed:
    healthy: Json = field(default_factory=dict)
    degraded: Json = field(default_factory=dict)
    first_accuracy: float | None = None
    wrong_accuracy: float | None = None
    in_domain_input_psi: float | None = None
    out_of_domain_input_psi: float | None = None
    out_of_domain_class_psi: float | None = None
    single: tuple[int, Json, dict[str, str]] = (0, {}, {})
    feedback_answers: list[tuple[int, Json]] = field(default_factory=list)
    captures: list[Json] = field(default_factory=list)
    labelled: list[Json] = field(default_factory=list)


def run(stack: Stack, prom: Prometheus, *, archive: str) -> Observed:
    seen = Observed()
    manifest = deployment(archive)
    manifest["spec"]["monitoring"]["prometheusUrl"] = prom.url
    stack.apply(manifest)
    loop.wait_phase(stack, "modeldeployment", NAME, {"Ready"}, timeout=600)
    address = loop.wait_serving_address(stack, NAME)
    model = loop.model_name_of(archive)
    collector = stack.wait_for("the collector's address", lambda: collector_ip(stack),
                               timeout=180)
    feedback_url = f"http://{collector}:{COLLECTOR_PORT}/v1/models/{NAME}/feedback"
    ns = stack.namespace

    # a single request with the client's own id, and its feedback
    held_out = loop.held_out_examples(per_class=20)
    seen.single = post_json(f"http://{address}:8080/predictions/{model}",
                            {"text": held_out.texts[0]}, headers={"X-Request-Id": "e2e-1"})

    captured = [1]  # the single request above

    def labelled_batch(texts: list[str], labels: list[str], *, wrong: bool) -> None:
        status, body, _ = post_json(f"http://{address}:8080/predictions/{model}",
                                    {"texts": texts})
        assert status == 200, body
        # Feedback joins captures the collector has: the servers send theirs within a second.
        captured[0] += len(texts)
        stack.wait_for(f"{captured[0]} captures at the collector", lambda: _collector_metric(
            collector, "modelloop_captured_total") >= captured[0], timeout=60)
        items = []
        for prediction, truth in zip(body["predictions"], labels, strict=True):
            label = truth
            if wrong:  # a label other than the prediction: every answer was wrong
                label = next(x for x in sorted(prediction["scores"])
                             if x != prediction["label"])
            items.append({"requestId": prediction["requestId"], "label": label})
        seen.feedback_answers.append(_post_feedback(feedback_url, items))

    # 1. in-domain traffic, truthful feedback
    for start in range(0, len(held_out.texts), 20):
        labelled_batch(held_out.texts[start:start + 20], held_out.labels[start:start + 20],
                       wrong=False)
    seen.healthy = stack.wait_for("accuracy Healthy", lambda: _check(stack, "accuracy",
                                                                     "Healthy"), timeout=180)
    seen.first_accuracy = _check_value(seen.healthy, "accuracy")
    # this deployment's pods only: the quickstart's own deployment serves in the namespace too
    pods = f'namespace="{ns}",pod=~"{NAME}-[a-z0-9]+-[a-z0-9]+"'
    input_query = f'max(modelloop_drift_psi{{distribution="input",{pods}}})'
    seen.in_domain_input_psi = stack.wait_for("the input PSI in Prometheus", lambda: (
        lambda v: (v,) if v is not None else None)(prom.value(input_query)), timeout=60)[0]

    # 2. the same articles, feedback saying each answer was wrong
    for start in range(0, len(held_out.texts), 20):
        labelled_batch(held_out.texts[start:start + 20], held_out.labels[start:start + 20],
                       wrong=True)
    seen.degraded = stack.wait_for("Degraded on accuracy", lambda: _degraded(stack),
                                   timeout=240)
    seen.wrong_accuracy = _check_value(seen.degraded, "accuracy")

    # 3. out-of-domain traffic
    reviews = out_of_domain_texts(200)
    for start in range(0, len(reviews), 20):
        loop.predict(address, model, reviews[start:start + 20])

    def input_psi_over() -> float | None:
        value = prom.value(input_query)
        return value if value is not None and value > INPUT_DRIFT_MAX else None

    seen.out_of_domain_input_psi = stack.wait_for("input PSI over its bound", input_psi_over,
                                                  timeout=120)
    seen.out_of_domain_class_psi = prom.value(
        f'max(modelloop_drift_psi{{distribution="class",{pods}}})')

    sink = stack.models_dir / SINK_PATH
    seen.captures = stack.wait_for("closed capture segments", lambda: _records(
        sink, "captures", at_least=len(held_out.texts) * 2), timeout=60)
    seen.labelled = stack.wait_for("closed labelled segments", lambda: _records(
        sink, "labelled", at_least=len(held_out.texts) * 2), timeout=60)
    return seen


def remove(stack: Stack) -> None:
    """Delete the deployment and wait for its pods to be gone (they hold CPU and metrics)."""
    stack.kubectl("delete", "-n", stack.namespace, "modeldeployment", NAME, "--wait=true",
                  "--timeout=120s")

    def left() -> list[str]:
        return [f"{p['metadata']['name']} {p['status'].get('phase')} deleting since "
                f"{p['metadata'].get('deletionTimestamp')} owners "
                f"{[o['kind'] for o in p['metadata'].get('ownerReferences', [])]}"
                for p in stack.list("pods", f"modelloop.dev/modeldeployment={NAME}")]

    deadline = time.monotonic() + 120
    while (pods := left()) and time.monotonic() < deadline:
        time.sleep(1)
    if pods:
        raise AssertionError(f"pods of {NAME} still there 120 s after its deletion: {pods}")


def _post_feedback(url: str, items: list[Json]) -> tuple[int, Json]:
    status, body, _ = post_json(url, {"feedback": items})
    return status, body


def _collector_metric(address: str, name: str) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://{address}:{COLLECTOR_PORT}/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def diagnose(stack: Stack) -> str:
    """What to look at when a step timed out: the analysis, the collector's counters."""
    obj = stack.get("modeldeployment", NAME)
    lines = [f"analysis: {json.dumps(loop.dig(obj, 'status', 'analysis'))}",
             f"capture: {json.dumps(loop.dig(obj, 'status', 'capture'))}"]
    address = collector_ip(stack)
    if address:
        for name in ("modelloop_captured_total", "modelloop_feedback_total",
                     "modelloop_feedback_rejected_total", "modelloop_capture_rejected_total"):
            try:
                lines.append(f"{name}: {_collector_metric(address, name)}")
            except OSError as exc:
                lines.append(f"{name}: {exc}")
    return "\n".join(lines)


def collector_ip(stack: Stack, deployment: str = NAME) -> str | None:
    """The address of `deployment`'s collector once its pod is Ready."""
    pod = stack.get("pod", f"{deployment}-collector-0")
    if pod is None or (loop.condition(pod, "Ready") or {}).get("status") != "True":
        return None
    ip: str | None = pod["status"].get("podIP")
    return ip


def _check(stack: Stack, name: str, result: str) -> Json | None:
    obj = stack.get("modeldeployment", NAME)
    checks = loop.dig(obj, "status", "analysis", "checks") or []
    return obj if any(c["name"] == name and c["result"] == result for c in checks) else None


def _check_value(obj: Json, name: str) -> float | None:
    for check in loop.dig(obj, "status", "analysis", "checks") or []:
        if check["name"] == name:
            value = check.get("value")
            return float(value) if value is not None else None
    return None


def _degraded(stack: Stack) -> Json | None:
    obj = stack.get("modeldeployment", NAME)
    condition = loop.condition(obj, "Degraded") or {}
    if condition.get("status") == "True" and "accuracy" in condition.get("message", ""):
        return obj
    return None


def _records(sink: Path, stream: str, *, at_least: int) -> list[Json] | None:
    records = [json.loads(line) for path in sorted(sink.glob(f"{stream}/*/*.jsonl"))
               for line in path.read_text().splitlines() if line.strip()]
    return records if len(records) >= at_least else None
