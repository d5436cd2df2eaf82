"""The whole local stack for the end-to-end tier and `make demo`, started and stopped as one.

Order matters and mirrors a real installation: control plane -> CRDs -> a node that runs
pods (the pod runner as `local-0`) -> a namespace with a `models` claim bound to a
local-directory PV -> the operator. Teardown runs in reverse and is safe after a partial
start (Ctrl-C during bring-up), so nothing is left running: every process we start is in
its own process group and dies with us (PR_SET_PDEATHSIG) if we are killed outright.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.conftest import CRD_DIR, RunningOperator
from tests.harness.binaries import REPO_ROOT, locate
from tests.harness.controlplane import ControlPlane
from tests.harness.images import image
from tests.harness.podrunner import (
    PodRunner,
    local_pv_manifest,
    local_storage_class_manifest,
)
from tests.harness.processes import free_port

Json = dict[str, Any]

NODE_NAME = "local-0"
MODELS_CLAIM = "models"

SOURCE_PATH = ":".join(str(REPO_ROOT / package / "src")
                       for package in ("operator", "trainer-image", "server-image"))
"""PYTHONPATH of the operator (and of pods in the process runtime): this checkout's code.
The environment in ~/.cache/modelloop is shared by every clone with the same requirements,
and its editable installs point at whichever clone ran hack/python-env.sh last."""
RUNTIME = os.environ.get("MODELLOOP_POD_RUNTIME", "podman")
"""`podman`: every pod runs from the project's images (built by hack/images.sh from this
checkout). `process`: pods are local processes of the venv (faster to iterate on)."""
PROCESS_IMAGES = ("ghcr.io/modelloop/trainer:local", "ghcr.io/modelloop/server:local")


class StackError(RuntimeError):
    """Something in the stack did not come up or a wait timed out; says what and why."""


@dataclass
class Stack:
    """Handles on every running part; build with :func:`start_stack`, end with `stop()`."""

    workdir: Path
    namespace: str
    cluster: ControlPlane | None = None
    runner: PodRunner | None = None
    trainer_image: str = PROCESS_IMAGES[0]
    server_image: str = PROCESS_IMAGES[1]
    operator: RunningOperator | None = None
    timings: dict[str, float] = field(default_factory=dict)
    pod_dirs: list[Path] = field(default_factory=list)
    """Where pod processes live besides `workdir` (the runner's short /tmp/mlp-* root, kept
    short so Unix socket paths fit): the orphan check looks there too."""

    @property
    def plane(self) -> ControlPlane:
        if self.cluster is None:
            raise StackError("control plane not started")
        return self.cluster

    @property
    def models_dir(self) -> Path:
        """Host directory behind the `models` claim (what `pvc://models/...` means)."""
        return self.workdir / "storage" / MODELS_CLAIM

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.plane.kubectl(*args, input=input, check=check).stdout

    def apply(self, obj: Json) -> None:
        self.kubectl("apply", "-n", self.namespace, "-f", "-", input=json.dumps(obj))

    def get(self, kind: str, name: str) -> Json | None:
        """The object, or None while it does not exist."""
        out = self.plane.kubectl("get", kind, name, "-n", self.namespace, "-o", "json",
                                 check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def list(self, kind: str, selector: str = "") -> list[Json]:
        args = ["get", kind, "-n", self.namespace, "-o", "json"]
        if selector:
            args += ["-l", selector]
        items: list[Json] = json.loads(self.kubectl(*args))["items"]
        return items

    def check_alive(self) -> None:
        """Raise with the failing part's log tail if a component died."""
        self.plane.check_alive()
        if self.operator is not None:
            self.operator.check_running()

    def wait_for(self, what: str, probe: Callable[[], Any], timeout: float,
                 interval: float = 1.0) -> Any:
        """Poll `probe` until truthy; on timeout raise with the last value seen."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            self.check_alive()
            time.sleep(interval)
        tail = self.operator.log_tail(30) if self.operator else ""
        raise StackError(f"timed out after {timeout:.0f}s waiting for {what}; last value: "
                         f"{value!r}\noperator log tail:\n{tail}")

    def pod_log(self, pod: str, container: str) -> str:
        if self.runner is None:
            return ""
        path = self.runner.log_path(self.namespace, pod, container)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def stop(self) -> None:
        """Operator, then pods (the runner kills its processes), then the control plane."""
        if self.operator is not None:
            with contextlib.suppress(Exception):
                self.operator.stop()
            self.operator = None
        if self.runner is not None:
            self.runner.stop()
            self.runner = None
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def start_stack(workdir: Path, *, namespace: str = "quickstart",
                on_step: Callable[[str], None] = lambda _: None) -> Stack:
    """Bring everything up in `workdir` (must be empty or absent); stops what it started
    if any step fails or is interrupted."""
    workdir.mkdir(parents=True, exist_ok=True)
    stack = Stack(workdir=workdir.resolve(), namespace=namespace)
    try:
        if RUNTIME == "podman":
            _timed(stack, "images (hack/images.sh)", on_step, lambda: _images(stack))
        _timed(stack, "control plane", on_step, lambda: _start_control_plane(stack))
        _timed(stack, "CRDs", on_step, lambda: _apply_crds(stack))
        _timed(stack, f"pod runner ({NODE_NAME})", on_step, lambda: _start_runner(stack))
        _timed(stack, "namespace and models claim", on_step, lambda: _prepare_namespace(stack))
        _timed(stack, "operator", on_step, lambda: _start_operator(stack))
    except BaseException:
        stack.stop()
        raise
    return stack


def _timed(stack: Stack, name: str, on_step: Callable[[str], None],
           action: Callable[[], None]) -> None:
    on_step(f"starting {name}")
    started = time.monotonic()
    action()
    stack.timings[name] = time.monotonic() - started
    on_step(f"{name} ready in {stack.timings[name]:.1f}s")


def _images(stack: Stack) -> None:
    stack.trainer_image, stack.server_image = image("trainer"), image("server")


def _start_control_plane(stack: Stack) -> None:
    stack.cluster = ControlPlane(stack.workdir / "controlplane", locate(), tie_to_parent=True)
    stack.cluster.start()


def _apply_crds(stack: Stack) -> None:
    paths = sorted(CRD_DIR.glob("*.yaml"))
    if not paths:
        raise StackError(f"no CRDs in {CRD_DIR}: run `make crds`")
    for path in paths:
        stack.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    names = [f"crd/{path.name.removesuffix('.yaml')}" for path in paths]
    stack.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)


def _start_runner(stack: Stack) -> None:
    # Advertised capacity is generous so that the scheduler never blocks the loop on
    # requests sized for real nodes; limits are enforced in the podman runtime.
    env = {"TOKENIZERS_PARALLELISM": "false"}
    if RUNTIME == "process":
        env.update({"PYTHONPATH": SOURCE_PATH, "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1"})
    stack.runner = PodRunner(
        kubeconfig=stack.plane.kubeconfig, node_name=NODE_NAME,
        workdir=stack.workdir / "pods", cpu="16", memory="64Gi", gpus=0, env=env,
        backoff_initial=2.0, backoff_max=20.0, runtime=RUNTIME)
    stack.runner.start()
    settings = getattr(getattr(stack.runner, "_core", None), "settings", None)
    short_root = getattr(settings, "short_root", None)
    if short_root is not None:
        stack.pod_dirs.append(Path(short_root))


def _prepare_namespace(stack: Stack) -> None:
    ns = stack.namespace
    stack.kubectl("create", "namespace", ns)
    stack.wait_for(f"ServiceAccount default in {ns}",
                   lambda: stack.get("serviceaccount", "default"), timeout=60, interval=0.3)
    stack.models_dir.mkdir(parents=True, exist_ok=True)
    for obj in (local_storage_class_manifest(),
                local_pv_manifest(f"{ns}-models", stack.models_dir, capacity="10Gi",
                                  claim_ref=(ns, MODELS_CLAIM))):
        stack.kubectl("apply", "-f", "-", input=json.dumps(obj))
    stack.kubectl("apply", "-n", ns, "-f",
                  str(REPO_ROOT / "examples" / "quickstart" / "00-models-claim.yaml"))
    stack.wait_for(f"PersistentVolumeClaim {MODELS_CLAIM} Bound",
                   lambda: (stack.get("pvc", MODELS_CLAIM) or {}).get("status", {})
                   .get("phase") == "Bound", timeout=90, interval=0.5)


def _start_operator(stack: Stack) -> None:
    # Every pod shares this host's network and torch's TCPStore listens on all addresses,
    # so the gangs' rendezvous port must be one nothing else on the machine holds (other
    # DDP tests often hold the default 29500); in a cluster each pod has its own.
    stack.operator = RunningOperator(
        cluster=stack.plane, log=stack.workdir / "operator.log",
        env_overrides={"MODELLOOP_TRAINER_IMAGE": stack.trainer_image,
                       "MODELLOOP_SERVER_IMAGE": stack.server_image,
                       "MODELLOOP_RESYNC_SECONDS": "2", "PYTHONPATH": SOURCE_PATH,
                       "MODELLOOP_MASTER_PORT": str(free_port())})
    stack.operator.start(timeout=120)
