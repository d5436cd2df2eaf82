"""The trainer image, built by ``hack/images.sh``: its default command, its user, and a
real training run of the tiny model inside it as the pod runs it (non-root, read-only root
filesystem, no capabilities, no network: the weights and data come from mounts)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tests.harness.images import podman

from .conftest import make_examples, train_flags, write_jsonl

LOCKED_DOWN = ("--rm", "--read-only", "--tmpfs=/tmp", "--cap-drop=ALL",
               "--security-opt=no-new-privileges", "--network=none")
USER = 10001


def test_its_default_command_shows_the_training_flags_as_its_user(trainer_image: str) -> None:
    helped = podman("run", *LOCKED_DOWN, trainer_image).stdout
    assert helped.startswith("usage: modelloop-train") and "--captured-uri" in helped
    who = podman("run", *LOCKED_DOWN, "--entrypoint=id", trainer_image).stdout.split()
    assert who[:2] == [f"uid={USER}(trainer)", f"gid={USER}(trainer)"]
    optimize = podman("run", *LOCKED_DOWN, trainer_image, "modelloop-optimize", "--help")
    assert optimize.stdout.startswith("usage: modelloop-optimize")


def test_it_trains_the_tiny_model_offline(
        trainer_image: str, tiny_model_dir: Path, tmp_path: Path) -> None:
    # Readable by the image's user, as a volume's files would be (pytest's dirs are 0700).
    models = Path(shutil.copytree(tiny_model_dir, tmp_path / "models"))
    data = write_jsonl(tmp_path / "topics.jsonl", make_examples(48, 3))
    for path in (models, data, *models.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    out = tmp_path / "out"
    out.mkdir()
    os.chown(out, USER, USER)
    flags = train_flags(Path("/models"), Path("/data/topics.jsonl"), Path("/work/out/model"),
                        "--epochs", "2", "--termination-log", "/work/out/termination.json")
    result = podman("run", *LOCKED_DOWN, f"--volume={models}:/models:ro",
                    f"--volume={data}:/data/topics.jsonl:ro", f"--volume={out}:/work/out",
                    trainer_image, "modelloop-train", *flags, check=False, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((out / "termination.json").read_text())
    assert summary["status"] == "Succeeded" and summary["outputUri"] == "file:///work/out/model"
    manifest = json.loads((out / "model" / "modelloop.json").read_text())
    assert manifest["labels"] == ["business", "sport", "tech"]
    assert (out / "model" / "reference_profile.json").is_file()
