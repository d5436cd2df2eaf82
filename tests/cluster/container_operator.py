"""The operator from its image: a ``RunningOperator`` whose process is ``podman run``.

The container shares the host's network (the control plane listens on loopback), runs as
the image's non-root user with a read-only root filesystem, no capabilities and a tmpfs
/tmp, as the chart's pod does. A copy of the kubeconfig owned by that user (mode 0400, as
the kubelet projects a service account token) is mounted read-only. ``podman run`` proxies
SIGTERM to the operator, so ``stop`` is a graceful stop; ``kill`` kills the container
itself (killing the podman client alone would leave the container running).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.conftest import RunningOperator
from tests.harness.images import CONTAINERS_CONF, podman

KUBECONFIG_IN_CONTAINER = "/var/run/modelloop/kubeconfig"
USER = 65532
"""The image's user, and the chart's runAsUser."""


@dataclass
class ContainerOperator(RunningOperator):
    image: str = ""
    name: str = field(default_factory=lambda: f"modelloop-operator-{uuid.uuid4().hex[:8]}")

    @property
    def mounted_kubeconfig(self) -> Path:
        return self.log.parent / f"{self.name}.kubeconfig"

    def start(self, *, timeout: float = 60) -> None:
        assert self.kubeconfig is not None, "pass the kubeconfig the container runs with"
        self.mounted_kubeconfig.unlink(missing_ok=True)
        shutil.copyfile(self.kubeconfig, self.mounted_kubeconfig)
        os.chown(self.mounted_kubeconfig, USER, USER)
        self.mounted_kubeconfig.chmod(0o400)
        super().start(timeout=timeout)

    @property
    def argv(self) -> list[str]:
        assert self.image
        env = {**self.operator_env(), "KUBECONFIG": KUBECONFIG_IN_CONTAINER}
        flags = [f"--env={key}={value}" for key, value in sorted(env.items())]
        scope = super().argv[3:]  # after `python -m modelloop_operator.cli`
        return ["env", f"CONTAINERS_CONF={CONTAINERS_CONF}", "podman", "run", "--rm",
                f"--name={self.name}", "--network=host", "--read-only",
                "--tmpfs=/tmp:rw,size=64m", "--cap-drop=ALL",
                "--security-opt=no-new-privileges", f"--user={USER}:{USER}",
                f"--volume={self.mounted_kubeconfig}:{KUBECONFIG_IN_CONTAINER}:ro",
                *flags, self.image, *scope]

    def kill(self) -> None:
        podman("kill", "--signal=KILL", self.name, check=False)
        super().kill()

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(AssertionError):
            podman("rm", "--force", "--ignore", self.name, check=False)
