"""A real TorchServe, started by `modelloop-serve` from the operator's config builder, serving
a packaged tiny model on loopback. One server for the whole module (a start costs ~20-40 s on
two cores); the tests share it and only read or add traffic. The last test starts a second
one, for an archive packaged differently."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import package_mar
from .serving import Served, http

pytestmark = pytest.mark.torchserve

MODEL = "news"
MAX_REQUEST_BYTES = 8192


@pytest.fixture(scope="module")
def served(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("serve")
    package_mar(tiny_artifact, workdir / "store", name=MODEL)
    server = Served(
        workdir, workdir / "store", model=MODEL, mar=f"{MODEL}.mar",
        env={"MODELLOOP_MAX_TEXTS": "4", "MODELLOOP_MAX_CHARS": "300"},
        batch_size=4, max_batch_delay_ms=50, workers=1, response_timeout_s=90,
        max_request_size_bytes=MAX_REQUEST_BYTES,
    )
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def metrics_text(served: Served) -> str:
    response = http(served.url(served.metrics, "/metrics"))
    assert response.status == 200
    return response.body.decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series `name` whose labels include `labels` (None when absent)."""
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            return float(m.group(2))
    return None


def test_predicts_one_text_and_a_list(served: Served, tiny_labels: tuple[str, ...]) -> None:
    one = served.predict({"text": "shares rose on the market"})
    assert one.status == 200
    body = one.json()
    assert body["label"] in tiny_labels and set(body["scores"]) == set(tiny_labels)
    many = served.predict({"texts": ["goal", "vote", "chip"]})
    assert many.status == 200
    assert len(many.json()["predictions"]) == 3


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"text": ""}, 400, "empty or blank"),
        ({"text": 5}, 400, "must be a string"),
        ({"text": None}, 400, "must be a string"),
        ({"texts": "one text"}, 400, "must be a list"),
        ({"texts": ["fine", 7]}, 400, "texts[1]"),
        ({"text": "a", "texts": ["b"]}, 400, "not both"),
        ({"txt": "typo"}, 400, "unknown field"),
        (["a", "list"], 400, "JSON object"),
        (b"", 400, "body is empty"),
        (b"this is not json", 400, "not valid JSON"),
        (b'{"text": "truncated', 400, "not valid JSON"),
        (b'{"text": "\xff\xfe not utf-8"}', 400, "not UTF-8"),
        ({"texts": ["a", "b", "c", "d", "e"]}, 413, "at most 4"),
        ({"text": "y" * 301}, 413, "at most 300"),
    ],
)
def test_bad_input_gets_4xx_and_the_worker_keeps_serving(
    served: Served, body: object, status: int, message: str
) -> None:
    bad = served.predict(body)
    assert bad.status == status, bad.body
    assert bad.json()["code"] == status
    assert message in bad.json()["message"]
    assert served.predict({"text": "still serving"}).status == 200


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        # urllib's default: application/x-www-form-urlencoded, parsed into form fields
        (b"text=a+form+post", None, "Content-Type: application/json"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png", "not UTF-8"),
        (b"plain words, not JSON", "text/plain", "not valid JSON"),
        (b'{"text": "\xff\xfe"}', "application/octet-stream", "not UTF-8"),
    ],
)
def test_wrong_content_types_get_400_with_a_message(
    served: Served, body: bytes, content_type: str | None, message: str
) -> None:
    bad = served.predict(body, content_type=content_type)
    assert bad.status == 400, bad.body
    assert bad.json()["code"] == 400
    assert message in bad.json()["message"]
    assert served.predict({"text": "still serving"}).status == 200


def test_json_under_another_content_type_is_still_understood(served: Served) -> None:
    assert served.predict({"text": "a film"}, content_type="text/plain").status == 200


def test_oversized_body_is_refused_with_413_before_the_handler(served: Served) -> None:
    # within the handler's limits (4 texts of 300 characters) is far below the body limit,
    # so this is TorchServe's max_request_size (the ModelDeployment's maxRequestBytes) at work
    body = {"text": "x" * (MAX_REQUEST_BYTES * 4)}
    bad = served.predict(body)
    # Netty answers before any TorchServe handler: the status line is the whole message
    assert (bad.status, bad.reason) == (413, "Request Entity Too Large"), bad.body
    assert served.predict({"text": "still serving"}).status == 200
    assert served.predict({"texts": ["y" * 300] * 4}).status == 200


def test_concurrent_good_and_bad_requests_each_get_their_own_answer(served: Served) -> None:
    bodies: list[object] = [{"text": f"story {i}"} if i % 2 else {"text": ""} for i in range(16)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda b: served.predict(b).status, bodies))
    assert statuses == [200 if i % 2 else 400 for i in range(16)]


def test_custom_metrics_are_exported_in_prometheus_format(served: Served) -> None:
    served.predict({"texts": ["a match", "a film"]})
    served.predict({"text": ""})
    text = metrics_text(served)
    predicted = sum(
        float(v) for v in re.findall(
            r'^modelloop_predictions_total\{[^}]*model_name="news"[^}]*\} (\S+)$', text, re.M
        )
    )
    assert predicted >= 2
    assert (sample(text, "modelloop_inference_errors_total", reason="invalid_input") or 0) >= 1
    assert (sample(text, "modelloop_request_latency_seconds_count", model_name=MODEL) or 0) >= 2
    assert sample(text, "modelloop_request_latency_seconds_bucket", le="+Inf") is not None
    assert sample(text, "modelloop_prediction_confidence_count", model_name=MODEL) == predicted
    samples = sample(text, "modelloop_drift_window_samples", model_name=MODEL)
    assert samples is not None and samples >= 2
    for distribution in ("class", "confidence"):
        psi = sample(text, "modelloop_drift_psi", distribution=distribution)
        assert psi is not None and psi >= 0
    assert "# TYPE modelloop_request_latency_seconds histogram" in text


def test_the_modeldeployments_settings_win_over_the_archives_model_config(
    served: Served,
) -> None:
    described = http(served.url(served.management, f"/models/{MODEL}")).json()[0]
    # the archive's model-config.yaml says 2 workers, batchSize 2, maxBatchDelay 7 and
    # responseTimeout 33 (conftest.package_mar); the config (the ModelDeployment) says:
    assert {k: described[k] for k in ("minWorkers", "maxWorkers", "batchSize",
                                      "maxBatchDelay", "responseTimeout")} == {
        "minWorkers": 1, "maxWorkers": 1, "batchSize": 4, "maxBatchDelay": 50,
        "responseTimeout": 90,
    }
    assert len(described["workers"]) == 1
    assert "the ModelDeployment's settings replace the archive's" in served.log.read_text()


def test_management_api_is_not_served_on_the_inference_or_metrics_ports(served: Served) -> None:
    for port in (served.inference, served.metrics):
        assert http(served.url(port, f"/models/{MODEL}")).status == 404
        assert http(served.url(port, "/models?url=x.mar"), data=b"").status in (404, 405)
        scale = http(served.url(port, f"/models/{MODEL}?min_worker=3&synchronous=true"),
                     data=b"", method="PUT")
        assert scale.status in (404, 405), scale.body
        delete = http(served.url(port, f"/models/{MODEL}"), method="DELETE")
        assert delete.status in (404, 405), delete.body
    # ...but it answers on loopback, where modelloop-serve watches the workers,
    described = http(served.url(served.management, f"/models/{MODEL}"))
    assert described.status == 200 and len(described.json()[0]["workers"]) == 1
    # and refuses to register or unregister models even there (enable_model_api=false).
    assert http(served.url(served.management, "/models?url=news.mar"), data=b"").status >= 400
    delete = http(served.url(served.management, f"/models/{MODEL}"), method="DELETE")
    assert delete.status >= 400, delete.body
    assert served.predict({"text": "still served"}).status == 200


def test_management_and_grpc_ports_are_bound_to_loopback_only(served: Served) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    ports = (served.management, served.settings.grpc_management_port,
             served.settings.grpc_inference_port)
    for port in ports:
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((address, port)) != 0, port
        with socket.socket() as s:  # ...while they do listen, on loopback
            s.settimeout(2)
            assert s.connect_ex(("127.0.0.1", port)) == 0, port


def test_request_ids_travel_through_torchserve(served: Served) -> None:
    url = served.url(served.inference, f"/predictions/{served.model}")
    request = urllib.request.Request(url, data=b'{"text": "goal"}', method="POST", headers={
        "Content-Type": "application/json", "X-Request-Id": "client-7"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.loads(response.read())
        header = response.headers.get("x-modelloop-request-id")
        own = response.headers.get("x-request-id")  # TorchServe's internal id, set by it
    assert body["requestId"] == "client-7" and header == "client-7", (body, header)
    assert own and own != "client-7"
    with urllib.request.urlopen(urllib.request.Request(url, data=b'{"text": "goal"}', headers={
            "Content-Type": "application/json"}), timeout=30) as response:
        body = json.loads(response.read())
        assert body["requestId"] == response.headers.get("x-modelloop-request-id") == (
            response.headers.get("x-request-id"))  # without a client id, TorchServe's is ours


def test_health_endpoints(served: Served) -> None:
    ready = http(served.url(served.health, "/readyz"))
    assert ready.status == 200 and ready.json()["phase"] == "ready"
    assert http(served.url(served.health, "/livez")).status == 200


def test_sigterm_stops_torchserve_and_exits_zero(served: Served) -> None:
    assert served.stop() == 0, served.output()
    assert "TorchServe stopped" in served.output()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", served.inference)) != 0


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent for UDP connect
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else str(address)


def test_settings_the_archive_leaves_out_are_the_configs_too(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    """An archive whose model config agrees on the five tuning keys but has no
    startupTimeout: TorchServe alone would take its own default (120 s) over the config's,
    so modelloop-serve writes that key into its copy as well."""
    from modelloop_trainer.optimize.package import ServingConfig, build_archive

    handler = Path(__file__).resolve().parents[2] / "server-image/src/modelloop_server/handler.py"
    store = tmp_path / "store"
    build_archive(artifact_dir=tiny_artifact, handler=handler, name=MODEL, version="1.0",
                  serving=ServingConfig(batch_size=3, workers=1, max_batch_delay_ms=20,
                                        response_timeout_s=60),
                  export_dir=store)
    server = Served(tmp_path, store, model=MODEL, mar=f"{MODEL}.mar", batch_size=3,
                    max_batch_delay_ms=20, response_timeout_s=60, startup_timeout_s=77)
    try:
        server.wait_ready()
        described = http(server.url(server.management, f"/models/{MODEL}")).json()[0]
        assert (described["batchSize"], described["maxBatchDelay"],
                described["responseTimeout"], described["startupTimeout"]) == (3, 20, 60, 77)
        assert "startupTimeout None -> 77" in server.log.read_text()
    finally:
        server.stop()

