"""The quickstart loop, step by step, shared by `make demo` (hack/demo.py) and the e2e test.

Each step applies one manifest of examples/quickstart/ and waits for the transition the
operator promises, returning the object so callers can assert on (or narrate) its status.
Predictions go to the serving pod's own address (the pod runner gives every pod a loopback
IP; there is no kube-proxy), found the way a Service finds it: its selector's Ready pods.
"""

from __future__ import annotations

import copy
import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.harness.binaries import REPO_ROOT

from .stack import Stack, StackError

Json = dict[str, Any]
QUICKSTART_DIR = REPO_ROOT / "examples" / "quickstart"
INFERENCE_PORT = 8080
MODEL_URI_ANNOTATION = "modelloop.dev/model-uri"
"""On every serving pod: the archive it serves (operator builders/serving.py)."""
# Pod addresses are loopback: never let an HTTP(S)_PROXY in the environment intercept them.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Settings:
    """What differs between the demo (the example as written) and the e2e test (smaller)."""

    max_samples: int | None = None
    max_length: int | None = None
    epochs: int | None = None
    validation_split: float | None = None
    min_score: float | None = None
    train_timeout: float = 1800
    optimize_timeout: float = 1200
    serve_timeout: float = 900
    live_accuracy_min: float = 0.8
    """The closed loop's live accuracy bound on coded traffic (tests/e2e/retrain.py): the
    example's model scored 0.69-0.72 live and its retrained one 0.89 (make demo)."""


DEMO = Settings()
E2E = Settings(max_samples=150, max_length=48, epochs=3, live_accuracy_min=0.7)
"""Live accuracy in e2e runs: 0.60-0.64 first, 0.75-0.81 retrained."""


def manifest(name: str) -> Json:
    """One manifest of examples/quickstart/ (e.g. ``10-trainingjob``)."""
    loaded: Json = yaml.safe_load((QUICKSTART_DIR / f"{name}.yaml").read_text())
    return loaded


def training_job(settings: Settings) -> Json:
    """The quickstart TrainingJob with the settings' overrides applied."""
    obj = copy.deepcopy(manifest("10-trainingjob"))
    spec = obj["spec"]
    if settings.max_samples is not None:
        spec["dataset"]["maxSamples"] = settings.max_samples
    if settings.validation_split is not None:
        spec["dataset"]["validationSplit"] = settings.validation_split
    if settings.max_length is not None:
        spec["hyperparameters"]["maxLength"] = settings.max_length
    if settings.epochs is not None:
        spec["hyperparameters"]["epochs"] = settings.epochs
    if settings.min_score is not None:
        spec["evaluation"]["minScore"] = settings.min_score
    return obj


def condition(obj: Json | None, kind: str) -> Json | None:
    """The status condition of type `kind`, if any."""
    for cond in (obj or {}).get("status", {}).get("conditions", []) or []:
        if cond.get("type") == kind:
            found: Json = cond
            return found
    return None


def phase(obj: Json | None) -> str:
    return str((obj or {}).get("status", {}).get("phase", ""))


def wait_phase(stack: Stack, kind: str, name: str, phases: set[str], *, timeout: float,
               fail_on: set[str] = frozenset({"Failed"}),  # type: ignore[assignment]
               on_change: Callable[[Json], None] = lambda _: None,
               on_poll: Callable[[], None] = lambda: None) -> Json:
    """Wait until `kind/name` reaches one of `phases`; raise at once on a `fail_on` phase
    (with the status message), so a failed run does not sit out the whole timeout.
    `on_change` gets the object at each phase change, `on_poll` is called at every poll."""
    last = ""

    def probe() -> Json | None:
        nonlocal last
        on_poll()
        obj = stack.get(kind, name)
        current = phase(obj)
        if obj is not None and current != last:
            last = current
            on_change(obj)
        if current in fail_on:
            status = json.dumps((obj or {}).get("status", {}), indent=1)[:3000]
            raise StackError(f"{kind}/{name} reached phase {current}: {status}")
        return obj if current in phases else None

    found: Json = stack.wait_for(f"{kind}/{name} phase in {sorted(phases)}", probe,
                                 timeout=timeout)
    return found


def trainer_progress(stack: Stack, training_job: str) -> str:
    """The trainer's latest event from its JSON log lines (the pod runner keeps each
    container's log in a file; in a cluster this is `kubectl logs`), e.g. "step 12,
    epoch 1, loss 0.912"; "" before the first one."""
    pods = stack.list("pods", f"modelloop.dev/trainingjob={training_job}")
    if not pods:
        return ""
    log = stack.pod_log(pods[-1]["metadata"]["name"], "trainer")
    for line in reversed(log.splitlines()[-50:]):
        try:
            event = json.loads(line) if line.startswith("{") else None
        except ValueError:
            event = None
        if not isinstance(event, dict):
            continue
        if event.get("event") == "step":
            return (f"step {event.get('step')}, epoch {event.get('epoch')}, loss "
                    f"{float(event.get('loss', 0)):.3f}")
        if event.get("message"):
            return str(event["message"])[:70]
    return ""


# --- serving ----------------------------------------------------------------------------

def serving_pods(stack: Stack, service: str) -> list[tuple[str, str]]:
    """(IP, archive URI or "") of the Ready pods a Service selects: what its EndpointSlice
    would list. The EndpointSlice itself stays empty here: the API server rejects loopback
    addresses in endpoints ("may not be in the loopback range"), and pod runner pods have
    nothing else."""
    svc = stack.get("service", service)
    selector = ",".join(f"{k}={v}" for k, v in
                        sorted(((svc or {}).get("spec", {}).get("selector") or {}).items()))
    if not selector:
        return []
    return [(pod["status"]["podIP"],
             (pod["metadata"].get("annotations") or {}).get(MODEL_URI_ANNOTATION, ""))
            for pod in stack.list("pods", selector)
            if pod["status"].get("podIP") and pod["metadata"].get("deletionTimestamp") is None
            and (condition(pod, "Ready") or {}).get("status") == "True"]


def serving_addresses(stack: Stack, service: str, model_uri: str = "") -> list[str]:
    """IPs of the Ready pods a Service selects (serving `model_uri`, if given)."""
    return [ip for ip, uri in serving_pods(stack, service) if not model_uri or uri == model_uri]


def wait_serving_address(stack: Stack, service: str, *, model_uri: str = "",
                         timeout: float = 120) -> str:
    """The first ready address of `service`, of a pod serving `model_uri` if given: right
    after a promotion the old model's pod is still Ready for a moment."""
    addresses: list[str] = stack.wait_for(f"a ready endpoint of Service {service}",
                                          lambda: serving_addresses(stack, service, model_uri),
                                          timeout=timeout, interval=0.5)
    return addresses[0]


def predict(address: str, model: str, texts: list[str], *, timeout: float = 120) -> list[Json]:
    """POST a batch to TorchServe's inference API; returns one prediction per text."""
    body = json.dumps({"texts": texts}).encode()
    request = urllib.request.Request(
        f"http://{address}:{INFERENCE_PORT}/predictions/{model}", data=body,
        headers={"Content-Type": "application/json"}, method="POST")
    with _DIRECT.open(request, timeout=timeout) as response:
        payload: Json = json.loads(response.read())
    predictions: list[Json] = payload["predictions"]
    return predictions


@dataclass(frozen=True)
class HeldOut:
    """Articles the model never trained on, balanced across topics."""

    texts: list[str]
    labels: list[str]


def held_out_examples(per_class: int, *, seed: int = 42,
                      validation_split: float = 0.05) -> HeldOut:
    """From the TrainingJob's own validation split (same seed and fraction, so the same
    articles): evaluated on, never trained on."""
    from modelloop_trainer.datasets import DatasetSpec, load_splits

    splits = load_splits(DatasetSpec(uri="builtin://bbc-news", seed=seed,
                                     validation_split=validation_split))
    texts: list[str] = []
    labels: list[str] = []
    counts: dict[str, int] = {}
    for text, label in zip(splits.validation.texts, splits.validation.labels, strict=True):
        if counts.get(label, 0) < per_class:
            counts[label] = counts.get(label, 0) + 1
            texts.append(text)
            labels.append(label)
    return HeldOut(texts=texts, labels=labels)


def accuracy(predictions: list[Json], labels: list[str]) -> float:
    hits: int = sum(bool(p["label"] == label) for p, label in zip(predictions, labels, strict=True))
    return hits / len(labels)


def model_name_of(archive_uri: str) -> str:
    """TorchServe's model name: the archive's file name without `.mar`."""
    return Path(archive_uri.rstrip("/")).name.removesuffix(".mar")


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = action()
    return result, time.monotonic() - started


def dig(obj: Mapping[str, Any] | None, *keys: str) -> Any:
    """obj[k1][k2]... or None."""
    value: Any = obj
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value
