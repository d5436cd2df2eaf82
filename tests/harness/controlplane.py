"""A real, local Kubernetes control plane for tests and development.

etcd, kube-apiserver (TLS, RBAC, PodSecurity), kube-controller-manager, kube-scheduler and
kwok (fake nodes, simulated pod lifecycles) run as local processes on loopback with free
ports. Nothing is faked above the kubelet: the scheduler binds pods, the Job, ReplicaSet,
garbage-collector and namespace controllers really run, and the API server enforces RBAC and
admission. Only kubelets are simulated, by kwok, and only for nodes annotated
``kwok.x-k8s.io/node=fake`` (``add_node``), so a real local pod runner can own other nodes.

As a library (the pytest ``cluster`` fixture)::

    plane = ControlPlane(workdir, binaries.locate(), tie_to_parent=True)
    plane.start()
    ...
    plane.stop()

As a CLI (``make cluster-up`` / ``make cluster-down``)::

    python -m tests.harness.controlplane up [--workdir DIR] [--apiserver-port N] [--clean]
    eval "$(python -m tests.harness.controlplane env)"
    python -m tests.harness.controlplane down
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.harness import binaries as binaries_mod
from tests.harness.binaries import Binaries
from tests.harness.nodes import node_manifest
from tests.harness.pki import Pki, create_pki
from tests.harness.processes import (
    Component,
    ComponentError,
    ensure_port_free,
    free_port,
    log_tail,
)

KWOK_STAGES_DIR = Path(__file__).resolve().parent / "kwok"
DEFAULT_WORKDIR = binaries_mod.REPO_ROOT / ".cache" / "cluster"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
POD_CIDR = "10.244.0.0/16"  # kwok hands out pod IPs from here
STATE_FILE = "state.json"
DEFAULT_SERVICE_ACCOUNT = "/api/v1/namespaces/default/serviceaccounts/default"
# Start order; teardown runs in reverse so that clients stop before the API server and etcd.
ORDER = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


class ClusterError(RuntimeError):
    """The control plane is misused or in a state we cannot work with (message says why)."""


class KubectlError(RuntimeError):
    def __init__(self, argv: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"`{' '.join(argv)}` failed with exit code {result.returncode}:\n"
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
        self.result = result


class ControlPlane:
    """One local control plane living in ``workdir`` (which holds all of its files)."""

    def __init__(self, workdir: Path, bins: Binaries, *, tie_to_parent: bool,
                 apiserver_port: int | None = None) -> None:
        self.workdir = workdir.resolve()
        self.binaries = bins
        self.tie_to_parent = tie_to_parent
        self.requested_apiserver_port = apiserver_port
        self.components: dict[str, Component] = {}
        self.ports: dict[str, int] = {}
        self.startup_seconds = 0.0
        self._pki: Pki | None = None

    # --- public surface -------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def kubectl_path(self) -> Path:
        return self.binaries.kubectl

    @property
    def helm_path(self) -> Path:
        return self.binaries.helm

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for subprocesses: our kubectl/helm first on PATH, caches in workdir."""
        path = os.pathsep.join([*map(str, self.binaries.bin_dirs), os.environ.get("PATH", "")])
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PATH": path,
            # Keep kubectl's discovery cache and Helm's state inside the work dir.
            "KUBECACHEDIR": str(self.workdir / "client-cache" / "kube"),
            "HELM_CACHE_HOME": str(self.workdir / "client-cache" / "helm" / "cache"),
            "HELM_CONFIG_HOME": str(self.workdir / "client-cache" / "helm" / "config"),
            "HELM_DATA_HOME": str(self.workdir / "client-cache" / "helm" / "data"),
        }

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run our kubectl against this cluster; raises KubectlError on failure if check."""
        argv = [str(self.kubectl_path), *args]
        result = subprocess.run(argv, input=input, capture_output=True, text=True,
                                env=self.env, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise KubectlError(["kubectl", *args], result)
        return result

    def start(self, timeout: float = 180) -> None:
        """Start every component and wait until the cluster can run pods; clean up on failure."""
        self._prepare_workdir()
        began = time.monotonic()
        try:
            self._pki = create_pki(self.workdir / "pki", service_ip=SERVICE_IP)
            self._allocate_ports()
            self._write_kubeconfigs()
            self._start_component("etcd")
            self._wait_for("etcd health", self._etcd_healthy, timeout)
            self._start_component("kube-apiserver")
            # Not earlier: the controller manager exits if RBAC's bootstrap policy is not in
            # place yet when it reads its authentication config; /readyz covers that hook.
            self._wait_for("kube-apiserver /readyz", self._apiserver_ready, timeout)
            for name in ORDER[2:]:
                self._start_component(name)
            self._wait_for("kube-controller-manager /healthz",
                           lambda: self._https_ok(self.ports["kube-controller-manager"]), timeout)
            self._wait_for("kube-scheduler /healthz",
                           lambda: self._https_ok(self.ports["kube-scheduler"]), timeout)
            self._wait_for("kwok /healthz", self._kwok_healthy, timeout)
            # Pods need their namespace's `default` ServiceAccount, which the controller
            # manager creates: its presence shows the controllers really run.
            self._wait_for("the default ServiceAccount (controller manager)",
                           lambda: self._api_exists(DEFAULT_SERVICE_ACCOUNT), timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Stop every component this object started or attached to (always safe to call)."""
        for name in reversed(ORDER):
            component = self.components.get(name)
            if component is not None:
                component.stop()
        self._save_state()

    def check_alive(self) -> None:
        """Raise ComponentError naming the first component that died (with its log tail)."""
        for name in ORDER:
            if name in self.components:
                self.components[name].check_running()

    def restart_apiserver(self, timeout: float = 120) -> None:
        """Stop kube-apiserver and start it again on the same port (for fault tests)."""
        component = self.components["kube-apiserver"]
        component.stop()
        ensure_port_free(self.ports["kube-apiserver"], "kube-apiserver restart")
        component.start(env=self._component_env(), tie_to_parent=self.tie_to_parent)
        self._save_state()
        self._wait_for("kube-apiserver /readyz after restart", self._apiserver_ready, timeout)

    def stop_etcd(self) -> None:
        """Stop etcd (SIGTERM), keeping its data, for fault tests; the API server stays up
        and answers errors until :meth:`start_etcd`. ``check_alive`` fails meanwhile."""
        self.components["etcd"].stop()
        self._save_state()

    def start_etcd(self, timeout: float = 120) -> None:
        """Start a stopped etcd again on its ports and data dir; waits until etcd is
        healthy and the API server's /readyz (which checks etcd) passes again."""
        component = self.components["etcd"]
        if component.running():
            raise ClusterError("start_etcd: etcd is already running")
        ensure_port_free(self.ports["etcd"], "etcd restart")
        component.start(env=self._component_env(), tie_to_parent=self.tie_to_parent)
        self._save_state()
        self._wait_for("etcd health after restart", self._etcd_healthy, timeout)
        self._wait_for("kube-apiserver /readyz after etcd restart", self._apiserver_ready,
                       timeout)

    def add_node(
        self,
        name: str,
        *,
        gpus: int = 0,
        cpu: str = "32",
        memory: str = "256Gi",
        pods: int = 110,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str]] | None = None,
        annotations: Mapping[str, str] | None = None,
        timeout: float = 60,
    ) -> dict[str, Any]:
        """Create a kwok-managed node and wait until it is Ready and schedulable."""
        manifest = node_manifest(name, gpus=gpus, cpu=cpu, memory=memory, pods=pods,
                                 labels=labels, taints=taints, annotations=annotations)
        self.kubectl("create", "-f", "-", input=json.dumps(manifest))
        node: dict[str, Any] = {}

        def ready() -> bool:
            nonlocal node
            node = self.api_get(f"/api/v1/nodes/{name}")
            conditions = node.get("status", {}).get("conditions", [])
            is_ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
            # TaintNodesByCondition admission adds this taint at creation; the node
            # lifecycle controller removes it once the node is Ready.
            not_ready_taint = any(t["key"] == "node.kubernetes.io/not-ready"
                                  for t in node.get("spec", {}).get("taints", []))
            return is_ready and not not_ready_taint

        self._wait_for(f"node {name} to be Ready (kwok) and untainted", ready, timeout)
        return node

    def delete_node(self, name: str) -> None:
        self.kubectl("delete", "node", name, "--ignore-not-found", "--wait=true")

    def api_get(self, path: str) -> dict[str, Any]:
        """GET an API path as the admin (raises urllib.error.HTTPError for non-2xx)."""
        request = urllib.request.Request(self.server + path,
                                         headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, context=self._admin_tls(), timeout=10) as response:
            data: dict[str, Any] = json.load(response)
        return data

    def summary(self) -> str:
        lines = [f"local control plane in {self.workdir}", f"  API server: {self.server}",
                 f"  kubeconfig: {self.kubeconfig}"]
        lines += [f"  {c.name}: pid {c.pid}, log {c.log}" for c in self.components.values()]
        return "\n".join(lines)

    # --- attaching to a running plane (CLI `down` / `env`) ---------------------------------

    @classmethod
    def attach(cls, workdir: Path) -> ControlPlane:
        """The plane described by workdir/state.json (started by another process)."""
        state_path = workdir / STATE_FILE
        try:
            state = json.loads(state_path.read_text())
        except FileNotFoundError as err:
            raise ClusterError(f"no control plane state in {workdir} ({STATE_FILE} missing)"
                               ) from err
        b = state["binaries"]
        bins = Binaries(**{k: Path(v) for k, v in b.items()})
        plane = cls(workdir, bins, tie_to_parent=False)
        plane.ports = {k: int(v) for k, v in state["ports"].items()}
        plane.components = {c["name"]: Component.from_state(c) for c in state["components"]}
        return plane

    def alive_components(self) -> list[str]:
        return [n for n, c in self.components.items() if c.exit_code() is None]

    # --- internals --------------------------------------------------------------------------

    def _prepare_workdir(self) -> None:
        state = self.workdir / STATE_FILE
        if state.exists():
            try:
                previous = ControlPlane.attach(self.workdir)
            except (ValueError, KeyError, TypeError) as err:
                raise ClusterError(f"{state} is unreadable ({err}); remove {self.workdir}"
                                   ) from err
            alive = previous.alive_components()
            if alive:
                raise ClusterError(
                    f"a control plane is already running from {self.workdir} "
                    f"(alive: {', '.join(alive)}); stop it first: "
                    f"python -m tests.harness.controlplane down --workdir {self.workdir}")
            raise ClusterError(
                f"stale work dir {self.workdir}: an earlier control plane left it behind and "
                f"its processes are gone; clean it with `python -m tests.harness.controlplane "
                f"down --workdir {self.workdir}` (or `up --clean`)")
        if self.workdir.exists() and any(self.workdir.iterdir()):
            raise ClusterError(f"work dir {self.workdir} is not empty and holds no control "
                               "plane state; refusing to write into it")
        self.workdir.mkdir(parents=True, exist_ok=True)

    def _allocate_ports(self) -> None:
        names = ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager",
                 "kube-scheduler", "kwok")
        self.ports = {name: free_port() for name in names}
        if self.requested_apiserver_port:
            ensure_port_free(self.requested_apiserver_port, "kube-apiserver")
            self.ports["kube-apiserver"] = self.requested_apiserver_port

    def _component_env(self) -> dict[str, str]:
        # HOME inside the work dir: nothing a component writes to ~ escapes it (kwok, for
        # one, looks for ~/.kwok).
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBE")}
        env["HOME"] = str(home)
        return env

    def _start_component(self, name: str) -> None:
        ensure_port_free(self.ports[name], name)
        component = Component(name=name, argv=self._argv(name),
                              log=self.workdir / "logs" / f"{name}.log")
        self.components[name] = component
        component.start(env=self._component_env(), tie_to_parent=self.tie_to_parent)
        self._save_state()

    def _argv(self, name: str) -> list[str]:
        assert self._pki is not None
        pki, w, p = self._pki, self.workdir, self.ports
        if name == "etcd":
            client, peer = f"http://127.0.0.1:{p['etcd']}", f"http://127.0.0.1:{p['etcd-peer']}"
            return [str(self.binaries.etcd), "--name=modelloop", f"--data-dir={w / 'etcd'}",
                    f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=modelloop={peer}",
                    # Throwaway data: fsync only costs time on a shared disk.
                    "--unsafe-no-fsync=true", "--log-level=warn"]
        if name == "kube-apiserver":
            return [
                str(self.binaries.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{p['etcd']}",
                "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                # The `kubernetes` Service's endpoints may not point at loopback, and nothing
                # in this cluster runs in-cluster clients that would use them.
                "--endpoint-reconciler-type=none",
                f"--secure-port={p['kube-apiserver']}", f"--cert-dir={w / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving.cert}", f"--tls-private-key-file={pki.serving.key}",
                f"--client-ca-file={pki.ca.cert}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                # Allowed cluster-wide so that PodSecurity (not this flag) is what rejects
                # privileged pods in restricted namespaces.
                "--allow-privileged=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.sa_public_key}",
                f"--service-account-signing-key-file={pki.sa_private_key}",
                "--profiling=false",
            ]
        if name == "kube-controller-manager":
            kc = str(w / "kube-controller-manager.kubeconfig")
            return [
                str(self.binaries.kube_controller_manager),
                f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1", f"--secure-port={p['kube-controller-manager']}",
                f"--cert-dir={w / 'kube-controller-manager-certs'}",
                "--controllers=*", "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.sa_private_key}",
                f"--root-ca-file={pki.ca.cert}",
                # One instance: leader election would only delay a restart by a lease period.
                "--leader-elect=false",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
            ]
        if name == "kube-scheduler":
            kc = str(w / "kube-scheduler.kubeconfig")
            config = w / "kube-scheduler-config.yaml"
            config.write_text(yaml.safe_dump({
                "apiVersion": "kubescheduler.config.k8s.io/v1",
                "kind": "KubeSchedulerConfiguration",
                "clientConnection": {"kubeconfig": kc},
                "leaderElection": {"leaderElect": False},
            }))
            return [
                str(self.binaries.kube_scheduler), f"--config={config}",
                f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                "--bind-address=127.0.0.1", f"--secure-port={p['kube-scheduler']}",
                f"--cert-dir={w / 'kube-scheduler-certs'}",
            ]
        if name == "kwok":
            stages = w / "kwok-stages.yaml"
            stages.write_text("\n---\n".join(
                f.read_text() for f in sorted(KWOK_STAGES_DIR.glob("*.yaml"))))
            return [
                str(self.binaries.kwok), f"--kubeconfig={w / 'kwok.kubeconfig'}",
                f"--config={stages}",
                # Only our fake nodes: another runner (the local pod runner) owns `local-0`.
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                "--node-lease-duration-seconds=40",
                f"--cidr={POD_CIDR}", f"--server-address=127.0.0.1:{p['kwok']}",
            ]
        raise ClusterError(f"unknown component {name}")

    def _write_kubeconfigs(self) -> None:
        assert self._pki is not None
        for client, filename in (("admin", "kubeconfig"),
                                 ("kube-controller-manager", "kube-controller-manager.kubeconfig"),
                                 ("kube-scheduler", "kube-scheduler.kubeconfig"),
                                 ("kwok", "kwok.kubeconfig")):
            files = self._pki.clients[client]
            config = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "modelloop-local", "cluster": {
                    "server": self.server,
                    "certificate-authority-data": _b64(self._pki.ca.cert)}}],
                "users": [{"name": client, "user": {
                    "client-certificate-data": _b64(files.cert),
                    "client-key-data": _b64(files.key)}}],
                "contexts": [{"name": "modelloop-local", "context": {
                    "cluster": "modelloop-local", "user": client}}],
                "current-context": "modelloop-local",
            }
            path = self.workdir / filename
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            path.chmod(0o600)

    def _save_state(self) -> None:
        if not self.workdir.exists():
            return
        state = {
            "ports": self.ports,
            "binaries": {k: str(v) for k, v in vars(self.binaries).items()},
            "components": [c.to_state() for c in self.components.values()],
        }
        tmp = self.workdir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.workdir / STATE_FILE)

    def _wait_for(self, what: str, predicate: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            # A crashed component explains a timeout better than the timeout does.
            self.check_alive()
            try:
                if predicate():
                    return
            except (OSError, urllib.error.URLError, ValueError, KubectlError) as err:
                last_error = str(err)
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {c.name} ({c.log}):\n{log_tail(c.log, 10)}"
                                  for c in self.components.values())
                raise ComponentError(
                    f"timed out after {timeout:.0f}s waiting for {what}"
                    + (f" (last error: {last_error})" if last_error else "")
                    + f"\n{tails}")
            time.sleep(0.25)

    def _admin_tls(self) -> ssl.SSLContext:
        assert self._pki is not None or (self.workdir / "pki").exists()
        pki_dir = self.workdir / "pki"
        context = ssl.create_default_context(cafile=str(pki_dir / "ca.crt"))
        context.load_cert_chain(str(pki_dir / "client-admin.crt"),
                                str(pki_dir / "client-admin.key"))
        return context

    def _etcd_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.ports['etcd']}/health"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(json.load(response).get("health") == "true")

    def _apiserver_ready(self) -> bool:
        with urllib.request.urlopen(self.server + "/readyz", context=self._admin_tls(),
                                    timeout=5) as response:
            return bool(response.status == 200)

    def _https_ok(self, port: int) -> bool:
        # The controller manager and scheduler serve /healthz with a self-signed certificate.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=context,
                                    timeout=5) as response:
            return bool(response.status == 200)

    def _kwok_healthy(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['kwok']}/healthz",
                                    timeout=5) as response:
            return bool(response.status == 200)

    def _api_exists(self, path: str) -> bool:
        try:
            self.api_get(path)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return False
            raise
        return True


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


# --- CLI ------------------------------------------------------------------------------------

def _env_lines(plane: ControlPlane) -> str:
    env = plane.env
    keys = ("KUBECONFIG", "PATH", "KUBECACHEDIR", "HELM_CACHE_HOME", "HELM_CONFIG_HOME",
            "HELM_DATA_HOME")
    return "\n".join(f"export {k}={_shell_quote(env[k])}" for k in keys)


def _shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\"'\"'") + "'"


def _cmd_up(args: argparse.Namespace) -> int:
    workdir: Path = args.workdir
    if args.clean and (workdir / STATE_FILE).exists():
        previous = ControlPlane.attach(workdir)
        if previous.alive_components():
            raise ClusterError(f"--clean refuses to remove {workdir}: components are alive "
                               f"({', '.join(previous.alive_components())}); run `down` first")
        shutil.rmtree(workdir)
    plane = ControlPlane(workdir, binaries_mod.locate(), tie_to_parent=False,
                         apiserver_port=args.apiserver_port)
    plane.start(timeout=args.timeout)
    print(plane.summary(), file=sys.stderr)
    print(f"  ready in {plane.startup_seconds:.1f}s; use it with:\n"
          f"  eval \"$(python -m tests.harness.controlplane env --workdir {workdir})\"",
          file=sys.stderr)
    print(_env_lines(plane))
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    workdir: Path = args.workdir
    if not workdir.exists():
        print(f"nothing to do: {workdir} does not exist", file=sys.stderr)
        return 0
    if (workdir / STATE_FILE).exists():
        plane = ControlPlane.attach(workdir)
        plane.stop()
        still = plane.alive_components()
        if still:
            raise ClusterError(f"could not stop: {', '.join(still)}")
    shutil.rmtree(workdir)
    print(f"stopped and removed {workdir}", file=sys.stderr)
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    plane = ControlPlane.attach(args.workdir)
    dead = [n for n in ORDER if n not in plane.alive_components()]
    if dead:
        print(f"warning: not running: {', '.join(dead)}", file=sys.stderr)
    print(_env_lines(plane))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.controlplane",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "env"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                         help=f"where all files live (default {DEFAULT_WORKDIR})")
        if name == "up":
            cmd.add_argument("--apiserver-port", type=int, default=None,
                             help="fixed API server port (default: a free one)")
            cmd.add_argument("--timeout", type=float, default=180)
            cmd.add_argument("--clean", action="store_true",
                             help="remove a stale work dir left by a crashed run first")
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()
    handlers = {"up": _cmd_up, "down": _cmd_down, "env": _cmd_env}
    try:
        return handlers[args.command](args)
    except (ClusterError, ComponentError, binaries_mod.MissingBinariesError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
