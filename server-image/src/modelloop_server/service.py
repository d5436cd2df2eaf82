"""The TorchServe handler for modelloop's text classifiers.

One instance per worker process. `initialize` loads the model artifact that the `.mar`
carries (via `modelloop_trainer.artifact.load_artifact`, the format's only reader);
`handle` answers one TorchServe batch: each request is validated on its own, the texts of
all valid requests go through the model together (in chunks of `inference_batch`), and each
request gets its own status code. A bad request therefore never fails the others in its
batch, and nothing a client sends can raise out of `handle` and cost the worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from modelloop_trainer.artifact import LoadedArtifact, load_artifact
from modelloop_trainer.profile import ReferenceProfile

from modelloop_server.capture_client import CaptureClient
from modelloop_server.capture_records import (
    REQUEST_ID_HEADER,
    RESPONSE_ID_HEADER,
    CaptureRecord,
    ModelIdentity,
    RecordError,
    check_request_id,
    item_request_id,
    new_request_id,
    utc_timestamp,
)
from modelloop_server.drift import drift_scores
from modelloop_server.metrics import (
    REASON_INTERNAL,
    REASON_INVALID_INPUT,
    REASON_TOO_LARGE,
    ModelMetrics,
)
from modelloop_server.protocol import (
    Prediction,
    RequestError,
    TextRequest,
    parse_request,
    request_payload,
    response_body,
)
from modelloop_server.settings import HandlerSettings
from modelloop_server.window import Observation, PredictionWindow

logger = logging.getLogger(__name__)

JSON = "application/json"


@dataclass
class _Outcome:
    """What one request of a batch gets back."""

    status: int
    body: dict[str, Any]


class TextClassificationHandler:
    """TorchServe custom service (see `modelloop_server/handler.py` for the entry file)."""

    def __init__(self) -> None:
        self.initialized = False
        self.artifact: LoadedArtifact | None = None
        self.settings = HandlerSettings()
        self.metrics: ModelMetrics | None = None
        self.window: PredictionWindow | None = None
        self.capture: CaptureClient | None = None
        self.identity = ModelIdentity(name="", version="", digest="")

    # --- TorchServe's interface -------------------------------------------------------
    def initialize(self, context: Any) -> None:
        properties = context.system_properties
        model_dir = Path(properties["model_dir"])
        self.settings = HandlerSettings.from_env()
        handler_config = (context.model_yaml_config or {}).get("handler") or {}
        artifact_dir = model_dir / str(handler_config.get("artifact_dir", "."))
        device = _device(properties.get("gpu_id"))
        logger.info("loading model artifact from %s on %s", artifact_dir, device)
        self.artifact = load_artifact(artifact_dir, device=device)
        self.metrics = ModelMetrics(context.metrics, model_name=context.model_name)
        profile = self.artifact.reference_profile
        if list(profile.labels) != self.artifact.labels:
            raise ValueError(
                f"reference profile labels {list(profile.labels)} differ from the model's "
                f"{self.artifact.labels}"
            )
        state_dir = self.settings.state_dir or model_dir
        self.window = PredictionWindow(
            state_dir / f"drift-{context.model_name}-{_profile_key(profile)}.sqlite",
            num_classes=len(profile.labels),
            num_confidence_bins=len(profile.confidence.counts),
            max_samples=self.settings.window_samples,
            max_age_s=self.settings.window_seconds,
            input_bins=profile.inputs.bin_counts if profile.inputs is not None else (),
        )
        self._start_capture(context.model_name, model_dir)
        self.initialized = True

    def _start_capture(self, model_name: str, model_dir: Path) -> None:
        artifact = self._loaded()
        digest = self.settings.model_digest or "sha256:" + hashlib.sha256(
            json.dumps(artifact.manifest, sort_keys=True).encode()).hexdigest()
        self.identity = ModelIdentity(name=model_name,
                                      version=self.settings.model_version or model_name,
                                      digest=digest)
        if self.settings.capture_url:
            logger.info("capturing %.0f%% of requests to %s",
                        self.settings.capture_sample_rate * 100, self.settings.capture_url)
            self.capture = CaptureClient(self.settings.capture_url)

    def handle(self, data: list[dict[str, Any]] | None, context: Any) -> list[str] | None:
        if data is None:  # TorchServe's function-style load call; classes get initialize()
            return None
        started = time.perf_counter()
        ids = [_request_id(context, idx) for idx in range(len(data))]
        outcomes = self.answer(data, request_ids=ids, started=started)
        for idx, outcome in enumerate(outcomes):
            context.set_response_status(outcome.status, _phrase(outcome.status), idx)
            context.set_response_content_type(idx, JSON)
            if isinstance(ids[idx], str):
                context.set_response_header(idx, RESPONSE_ID_HEADER, ids[idx])
        self._record_latency(len(outcomes), time.perf_counter() - started)
        return [json.dumps(o.body, separators=(",", ":")) for o in outcomes]

    # --- the work ------------------------------------------------------------------------
    def answer(self, rows: Sequence[dict[str, Any]],
               request_ids: Sequence[str | RecordError] | None = None,
               started: float | None = None) -> list[_Outcome]:
        """One outcome per request row, in order; a 200 body carries its `requestId`."""
        started = time.perf_counter() if started is None else started
        ids = list(request_ids) if request_ids is not None else [
            new_request_id() for _ in rows]
        outcomes: list[_Outcome | None] = [None] * len(rows)
        valid: list[tuple[int, TextRequest]] = []
        errors: list[str] = []
        for idx, row in enumerate(rows):
            try:
                request_id = ids[idx]
                if isinstance(request_id, RecordError):
                    raise RequestError(str(request_id))
                valid.append((idx, parse_request(request_payload(row), self.settings.limits)))
            except RequestError as exc:
                outcomes[idx] = _Outcome(exc.code, exc.body())
                errors.append(REASON_TOO_LARGE if exc.code == 413 else REASON_INVALID_INPUT)
        texts = [text for _, request in valid for text in request.texts]
        if texts:
            try:
                predictions, input_bins = self.predict_batch(texts)
            except Exception:  # the model failed, not the client: answer 500, keep the worker
                logger.exception("inference failed for a batch of %d texts", len(texts))
                internal = RequestError(
                    "inference failed; see the server log", code=500, kind="InternalServerError"
                )
                for idx, _ in valid:
                    outcomes[idx] = _Outcome(500, internal.body())
                    errors.append(REASON_INTERNAL)
            else:
                start = 0
                latency_ms = round((time.perf_counter() - started) * 1000, 3)
                captured: list[CaptureRecord] = []
                for idx, request in valid:
                    mine = predictions[start : start + len(request.texts)]
                    start += len(request.texts)
                    request_id = str(ids[idx])
                    outcomes[idx] = _Outcome(200, with_request_ids(
                        response_body(request, mine), request, request_id))
                    if self._sampled():
                        captured.extend(self._capture_records(
                            request, mine, request_id, latency_ms))
                self._observe(predictions, input_bins)
                self._capture(captured)
        self._record_errors(errors)
        return [o for o in outcomes if o is not None]

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        """Class probabilities for `texts`, as label/confidence/scores."""
        return self.predict_batch(texts)[0]

    def predict_batch(self, texts: Sequence[str]) -> tuple[list[Prediction], list[tuple[int, ...]]]:
        """Predictions for `texts` and, when the profile has an input section, each text's
        input bins (from the same forward pass's pooled embeddings; else empty tuples)."""
        artifact = self._loaded()
        labels = artifact.labels
        chunk = self.settings.inference_batch
        inputs = artifact.reference_profile.inputs
        parts: list[torch.Tensor] = []
        bins: list[tuple[int, ...]] = []
        for i in range(0, len(texts), chunk):
            if inputs is None:
                parts.append(artifact.predict_proba(texts[i : i + chunk]))
                continue
            probabilities, embeddings = artifact.predict_with_embeddings(texts[i : i + chunk])
            parts.append(probabilities)
            bins.extend(inputs.bins(embeddings))
        probabilities = torch.cat(parts)
        confidence, index = probabilities.max(dim=1)
        rows = probabilities.tolist()
        predictions = [
            Prediction(
                label=labels[int(i)],
                confidence=round(float(c), 6),
                scores={label: round(p, 6) for label, p in zip(labels, row, strict=True)},
            )
            for c, i, row in zip(confidence.tolist(), index.tolist(), rows, strict=True)
        ]
        return predictions, bins or [() for _ in predictions]

    # --- capture: off the request path, never failing a request -------------------------
    def _sampled(self) -> bool:
        rate = self.settings.capture_sample_rate
        return self.capture is not None and (rate >= 1.0 or random.random() < rate)

    def _capture_records(self, request: TextRequest, predictions: Sequence[Prediction],
                         request_id: str, latency_ms: float) -> list[CaptureRecord]:
        now = utc_timestamp(time.time())
        return [
            CaptureRecord(
                request_id=request_id if request.single else item_request_id(request_id, i),
                time=now, model=self.identity, pod=self.settings.pod_name, text=text,
                label=p.label, confidence=p.confidence, scores=p.scores,
                latency_ms=latency_ms)
            for i, (text, p) in enumerate(zip(request.texts, predictions, strict=True))
        ]

    def _capture(self, records: Sequence[CaptureRecord]) -> None:
        if self.capture is None:
            return
        try:
            if records:
                self.capture.submit(records)
            dropped = self.capture.take_dropped()
            if dropped and self.metrics is not None:
                self.metrics.capture_dropped(dropped)
        except Exception:
            logger.exception("could not queue capture records")

    # --- metrics: failures are logged, never turned into failed requests ---------------
    def _observe(self, predictions: Sequence[Prediction],
                 input_bins: Sequence[tuple[int, ...]]) -> None:
        artifact = self._loaded()
        if self.metrics is None or self.window is None:
            return
        profile = artifact.reference_profile
        index = {label: i for i, label in enumerate(artifact.labels)}
        try:
            self.metrics.predictions(
                [p.label for p in predictions], [p.confidence for p in predictions]
            )
            counts = self.window.record(
                [
                    Observation(index[p.label], profile.confidence_bin(p.confidence), bins)
                    for p, bins in zip(predictions, input_bins, strict=True)
                ],
                now=time.time(),
            )
            self.metrics.drift(drift_scores(profile, counts))
        except Exception:
            logger.exception("could not update prediction metrics")

    def _record_errors(self, reasons: Sequence[str]) -> None:
        if self.metrics is not None and reasons:
            try:
                self.metrics.errors(reasons)
            except Exception:
                logger.exception("could not update error metrics")

    def _record_latency(self, requests: int, seconds: float) -> None:
        if self.metrics is not None:
            try:
                self.metrics.request_latencies([seconds] * requests)
            except Exception:
                logger.exception("could not update latency metrics")

    def _loaded(self) -> LoadedArtifact:
        if self.artifact is None:
            raise RuntimeError("handler used before initialize()")
        return self.artifact


def _request_id(context: Any, idx: int) -> str | RecordError:
    """The client's `x-request-id` (validated), else TorchServe's id, else a fresh one."""
    try:
        headers = context.get_all_request_header(idx) or {}
    except Exception:  # a context without request properties (tests, older TorchServe)
        headers = {}
    for key, value in dict(headers).items():
        if str(key).lower() == REQUEST_ID_HEADER:
            text = value.decode() if isinstance(value, bytes | bytearray) else str(value)
            try:
                return check_request_id(text.strip())
            except RecordError as exc:
                return exc
    try:
        own = context.get_request_id(idx)
    except Exception:
        own = None
    return str(own) if own else new_request_id()


def with_request_ids(body: dict[str, Any], request: TextRequest,
                     request_id: str) -> dict[str, Any]:
    """`body` with the request's id, and for a batch each prediction's own id."""
    if not request.single:
        for i, prediction in enumerate(body["predictions"]):
            prediction["requestId"] = item_request_id(request_id, i)
    return {"requestId": request_id, **body}


def _device(gpu_id: Any) -> str:
    if gpu_id is not None and torch.cuda.is_available():
        return f"cuda:{int(gpu_id)}"
    return "cpu"


def _profile_key(profile: ReferenceProfile) -> str:
    """A short fingerprint of the profile's bins: a window file is only reused for the same
    labels, confidence bins and input bins (another model version gets a fresh window)."""
    inputs = [list(e) for e in profile.inputs.edges] if profile.inputs is not None else None
    key = json.dumps([list(profile.labels), list(profile.confidence.edges), inputs])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


_PHRASES = {200: "OK", 400: "Bad Request", 413: "Payload Too Large", 500: "Internal Server Error"}


def _phrase(status: int) -> str:
    return _PHRASES.get(status, "")
