"""The supervisor's decisions, the health endpoints built on them, and the config checks that
run before TorchServe starts."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from modelloop_operator.builders.torchserve_config import (
    TorchServeSettings,
    build_torchserve_config,
)
from modelloop_server.entrypoint import EXIT_BAD_CONFIG, check_metrics_config, main
from modelloop_server.health import HealthState, start_health_server
from modelloop_server.metrics import metrics_config_path
from modelloop_server.supervisor import Phase, Supervisor, Verdict
from modelloop_server.torchserve import (
    ConfigError,
    ModelState,
    Worker,
    java_command,
    load_server_config,
    parse_model_description,
    read_properties,
)

NOT_REGISTERED = ModelState(workers=None)


def workers(*specs: tuple[str, int, str]) -> ModelState:
    return ModelState(workers=tuple(Worker(id=i, pid=p, status=s) for i, p, s in specs))


def supervisor(**kwargs: float) -> Supervisor:
    return Supervisor(model_name="news", started_at=0.0, startup_timeout_s=100.0,
                      unready_timeout_s=30.0, **kwargs)  # type: ignore[arg-type]


class TestSupervisor:
    def test_starting_until_a_worker_is_ready(self) -> None:
        s = supervisor()
        assert s.observe(1, None).phase is Phase.STARTING
        assert s.observe(2, workers(("9000", -1, "UNLOADING"))).phase is Phase.STARTING
        assert s.observe(3, workers(("9000", 11, "UNLOADING"))).phase is Phase.STARTING
        verdict = s.observe(4, workers(("9000", 11, "READY"), ("9001", 12, "UNLOADING")))
        assert verdict == Verdict(Phase.READY, "1/2 workers READY")

    def test_unregistered_model_fails_at_once(self) -> None:
        verdict = supervisor().observe(1, NOT_REGISTERED)
        assert verdict.phase is Phase.FAILED
        assert "not registered" in verdict.message

    def test_worker_restarted_max_load_attempts_times_fails(self) -> None:
        s = supervisor(max_load_attempts=3)
        assert s.observe(1, workers(("9000", 11, "UNLOADING"))).phase is Phase.STARTING
        assert s.observe(2, workers(("9000", 11, "UNLOADING"))).phase is Phase.STARTING
        assert s.observe(3, workers(("9000", 12, "UNLOADING"))).phase is Phase.STARTING
        verdict = s.observe(4, workers(("9000", 13, "UNLOADING")))
        assert verdict.phase is Phase.FAILED
        assert "started 3 times" in verdict.message

    def test_restarts_are_counted_per_worker_slot(self) -> None:
        s = supervisor(max_load_attempts=3)
        s.observe(1, workers(("9000", 11, "UNLOADING"), ("9001", 21, "UNLOADING")))
        verdict = s.observe(2, workers(("9000", 12, "UNLOADING"), ("9001", 22, "UNLOADING")))
        assert verdict.phase is Phase.STARTING  # two slots, two attempts each

    def test_no_ready_worker_within_startup_timeout_fails(self) -> None:
        s = supervisor()
        assert s.observe(99, workers(("9000", 11, "UNLOADING"))).phase is Phase.STARTING
        verdict = s.observe(101, workers(("9000", 11, "UNLOADING")))
        assert verdict.phase is Phase.FAILED and "100 s after start" in verdict.message

    def test_management_never_answering_fails_after_startup_timeout(self) -> None:
        s = supervisor()
        assert s.observe(50, None).phase is Phase.STARTING
        assert s.observe(101, None).phase is Phase.FAILED

    def test_worker_crash_after_serving_is_tolerated_for_a_while(self) -> None:
        s = supervisor(max_load_attempts=2)
        s.observe(1, workers(("9000", 11, "READY")))
        # restarts after having served do not count as load failures
        assert s.observe(2, workers(("9000", 12, "UNLOADING"))).phase is Phase.UNREADY
        assert s.observe(3, workers(("9000", 13, "UNLOADING"))).phase is Phase.UNREADY
        assert s.observe(10, workers(("9000", 13, "READY"))).phase is Phase.READY
        assert s.observe(30, workers(("9000", 14, "UNLOADING"))).phase is Phase.UNREADY
        verdict = s.observe(41, workers(("9000", 14, "UNLOADING")))
        assert verdict.phase is Phase.FAILED and "no READY worker for 31 s" in verdict.message

    def test_management_silence_after_answering(self) -> None:
        s = supervisor()
        s.observe(1, workers(("9000", 11, "READY")))
        assert s.observe(2, None).phase is Phase.READY  # one missed probe
        assert s.observe(31, None).phase is Phase.READY
        assert s.observe(32, None).phase is Phase.FAILED

    def test_failure_is_sticky(self) -> None:
        s = supervisor()
        s.observe(1, NOT_REGISTERED)
        assert s.observe(2, workers(("9000", 1, "READY"))).phase is Phase.FAILED


class TestDescribeModel:
    def test_parses_torchserve_answer(self) -> None:
        body = [{"modelName": "news", "workers": [
            {"id": "9000", "pid": 42, "status": "READY"},
            {"id": "9001", "pid": -1, "status": "UNLOADING"},
        ]}]
        state = parse_model_description(body)
        assert state.workers == (Worker("9000", 42, "READY"), Worker("9001", -1, "UNLOADING"))
        assert [w.ready for w in state.workers] == [True, False]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TestHealthState:
    def test_ready_needs_a_ready_verdict_a_fresh_answer_and_a_process(self) -> None:
        clock, alive = Clock(), [True]
        state = HealthState(process_alive=lambda: alive[0], ready_staleness_s=5, clock=clock)
        assert not state.readiness()[0]
        state.update(Verdict(Phase.READY, "1/1"), answered=True)
        assert state.readiness()[0]
        clock.now = 6.0
        assert not state.readiness()[0]  # stale: the management API stopped answering
        state.update(Verdict(Phase.READY, "1/1"), answered=True)
        alive[0] = False
        assert not state.readiness()[0]

    def test_live_while_starting_then_needs_answers(self) -> None:
        clock = Clock()
        state = HealthState(process_alive=lambda: True, live_staleness_s=30, clock=clock)
        clock.now = 500.0
        assert state.liveness()[0]  # slow model load: not killed by liveness
        state.update(Verdict(Phase.STARTING, "loading"), answered=True)
        clock.now = 531.0
        assert not state.liveness()[0]
        state.update(Verdict(Phase.FAILED, "broken"), answered=True)
        assert not state.liveness()[0]


@pytest.fixture
def health() -> Iterator[tuple[HealthState, int]]:
    state = HealthState(process_alive=lambda: True)
    server = start_health_server(state, host="127.0.0.1", port=0)
    yield state, server.server_address[1]
    server.shutdown()


def get(port: int, path: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


class TestHealthEndpoints:
    def test_readyz_and_livez_follow_the_state(self, health: tuple[HealthState, int]) -> None:
        state, port = health
        assert get(port, "/readyz") == (
            503, {"status": "unavailable", "phase": "starting", "message": "starting"}
        )
        assert get(port, "/livez")[0] == 200
        state.update(Verdict(Phase.READY, "1/1 workers READY"), answered=True)
        assert get(port, "/readyz") == (
            200, {"status": "ok", "phase": "ready", "message": "1/1 workers READY"}
        )
        assert get(port, "/nope")[0] == 404


def write_config(tmp_path: Path, **overrides: object) -> Path:
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    (store / "news.mar").write_bytes(b"not really an archive")
    fields: dict[str, object] = {
        "model_name": "news",
        "mar_file": "news.mar",
        "model_store": str(store),
        "metrics_config": str(metrics_config_path()),
        "temp_dir": str(tmp_path / "tmp"),
        **overrides,
    }
    settings = TorchServeSettings.model_validate(fields)
    path = tmp_path / "config.properties"
    path.write_text(build_torchserve_config(settings))
    return path


class TestServerConfig:
    def test_reads_what_the_operator_builder_writes(self, tmp_path: Path) -> None:
        config = load_server_config(write_config(tmp_path))
        assert config.model_name == "news" and config.mar_file == "news.mar"
        assert config.management_url == "http://127.0.0.1:8081"
        assert config.temp_dir == tmp_path / "tmp"
        check_metrics_config(config)
        command = java_command(config, java="/usr/bin/java")
        assert command[0] == "/usr/bin/java"
        assert f"-Djava.io.tmpdir={tmp_path / 'tmp'}" in command
        assert command[-5:] == ["-f", str(config.path), "-s", str(tmp_path / "store"), "-ncs"]

    def test_properties_unescape_backslashes(self) -> None:
        assert read_properties("# c\nallowed_urls=a\\\\.mar\n\nx = y\n") == {
            "allowed_urls": "a\\.mar", "x": "y"
        }

    def test_management_off_loopback_is_refused(self, tmp_path: Path) -> None:
        path = write_config(tmp_path)
        text = path.read_text().replace("127.0.0.1:8081", "0.0.0.0:8081")
        path.write_text(text)
        with pytest.raises(ConfigError, match="must listen on loopback"):
            load_server_config(path)

    def test_missing_archive_is_refused(self, tmp_path: Path) -> None:
        path = write_config(tmp_path)
        (tmp_path / "store" / "news.mar").unlink()
        with pytest.raises(ConfigError, match="does not exist"):
            load_server_config(path)

    def test_metrics_config_without_our_metrics_is_refused(self, tmp_path: Path) -> None:
        other = tmp_path / "metrics.yaml"
        other.write_text("model_metrics:\n  counter:\n    - name: modelloop_predictions_total\n")
        config = load_server_config(write_config(tmp_path, metrics_config=str(other)))
        with pytest.raises(ConfigError, match="histogram:modelloop_request_latency_seconds"):
            check_metrics_config(config)

    def test_entrypoint_exits_2_on_bad_config_before_starting(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        assert main(["--config", str(tmp_path / "absent.properties")]) == EXIT_BAD_CONFIG
        assert "cannot read TorchServe config" in caplog.text
