"""What this project's images hold besides their entry points, for local containers.

Local processes see the host's filesystem, not an image's. The few files our Dockerfiles
copy to fixed paths, and that configs name (the operator's TorchServe config sets
`metrics_config=/opt/modelloop/metrics.yaml`), are mapped to their source in the checkout
like volume mounts; the images' offline switches become default env. Keep this in step
with server-image/Dockerfile and trainer-image/Dockerfile.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def project_image_paths(repo_root: Path = REPO_ROOT) -> dict[str, str]:
    """Container path -> host path for files the images bake in (COPY to a fixed path)."""
    metrics = repo_root / "server-image" / "src" / "modelloop_server" / "metrics.yaml"
    return {"/opt/modelloop/metrics.yaml": str(metrics)}


# ENV lines of both Dockerfiles that change behaviour (PATH and HOME are the runner's).
PROJECT_IMAGE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "PYTHONUNBUFFERED": "1",
}
