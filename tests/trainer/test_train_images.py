"""modelloop-train --task image-classification: EfficientNet-Lite0 on builtin://digits end to
end (accuracy, artifact, snapshot, resume after SIGKILL, DDP, warm start), and the image
datasets with their bad inputs."""

from __future__ import annotations

import base64
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import fsspec  # type: ignore[import-untyped]
import pytest
import torch
from modelloop_trainer import train
from modelloop_trainer.artifact import load_artifact, sha256_file
from modelloop_trainer.datasets import DatasetSpec, load_splits
from modelloop_trainer.distributed import World
from modelloop_trainer.errors import ArtifactError, InputError
from modelloop_trainer.image_artifact import load_image_artifact
from modelloop_trainer.image_data import input_pixels, load_image_examples
from modelloop_trainer.loop import LoopSettings, Plan
from modelloop_trainer.vision import ImageTensors, normalise
from PIL import Image
from safetensors.torch import load_file

from .conftest import kill_at_checkpoint, run_cli, run_ddp

DIGITS = [str(d) for d in range(10)]


def image_flags(out: Path, *extra: str, data: str = "builtin://digits") -> list[str]:
    """A short digits run: 320 training images at 32 px, 2 epochs of 20 steps."""
    return [
        "--task",
        "image-classification",
        "--dataset-uri",
        data,
        "--output-uri",
        f"file://{out}",
        "--max-samples",
        "320",
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--learning-rate",
        "5e-3",
        "--image-size",
        "32",
        "--log-every",
        "1",
        *extra,
    ]


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="session")
def digits_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real digits run shared by the tests that need a trained image model."""
    out = tmp_path_factory.mktemp("digits") / "model"
    result = run_cli(
        "modelloop_trainer.train",
        *image_flags(out, "--termination-log", str(out.parent / "termination.json")),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def png(color: tuple[int, int, int], size: tuple[int, int] = (12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def write_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


RED, BLUE = (220, 20, 20), (20, 20, 220)


def test_digits_training_beats_chance_and_writes_an_image_artifact(digits_artifact: Path) -> None:
    metrics = json.loads((digits_artifact / "metrics.json").read_text())
    assert metrics["accuracy"] >= 0.6, metrics  # chance is 0.1 on ten classes
    assert set(metrics["per_class"]) == set(DIGITS)
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == metrics["samples"] == 180
    manifest = json.loads((digits_artifact / "modelloop.json").read_text())
    assert manifest["task"] == "image-classification"
    assert manifest["architecture"] == "efficientnet-lite0"
    assert manifest["image"] == {
        "size": 32,
        "channels": 3,
        "normalization": {"offset": 127.0, "scale": 128.0},
    }
    assert manifest["labels"] == DIGITS and manifest["dataset"]["rows"]["baseTrain"] == 320
    config = json.loads((digits_artifact / "config.json").read_text())
    assert config["numClasses"] == 10 and config["imageSize"] == 32 and config["labels"] == DIGITS
    assert not (digits_artifact / "checkpoints").exists()

    summary = json.loads((digits_artifact.parent / "termination.json").read_text())
    assert summary["status"] == "Succeeded" and summary["labels"] == DIGITS
    assert summary["checksum"] == sha256_file(digits_artifact / "model.safetensors")
    assert summary["samples"] == {"train": 320, "validation": 180}


def test_the_artifact_reloads_and_predicts_what_training_measured(digits_artifact: Path) -> None:
    loaded = load_image_artifact(digits_artifact)
    assert loaded.labels == DIGITS and loaded.image_size == 32
    rows = [
        json.loads(line)
        for line in (digits_artifact / "dataset" / "validation.jsonl").read_text().splitlines()
    ]
    assert {"image", "label", "source"} == set(rows[0])
    pixels = torch.stack([input_pixels(r["image"], "validation", 32) for r in rows])
    with torch.inference_mode():
        predicted = loaded.model(normalise(pixels)).logits.argmax(dim=1).tolist()
    correct = sum(DIGITS[p] == r["label"] for p, r in zip(predicted, rows, strict=True))
    accuracy = correct / len(rows)
    metrics = json.loads((digits_artifact / "metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-9)
    # The text loader refuses an image model by name instead of failing on a tokenizer.
    with pytest.raises(ArtifactError, match="image-classification model"):
        load_artifact(digits_artifact)


def test_a_corrupt_image_artifact_is_refused_with_its_name(
    digits_artifact: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(digits_artifact, tmp_path / "copy"))
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match=r"model\.safetensors does not match the checksum"):
        load_image_artifact(copy)


def test_killed_image_run_resumes_exactly(digits_artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    flags = [*image_flags(out), "--checkpoint-every", "15"]
    assert kill_at_checkpoint(flags, at_step=15) == 15  # mid epoch 1 of 2 (20 steps each)
    result = run_cli("modelloop_trainer.train", *flags)
    assert result.returncode == 0, result.stderr[-2000:]
    seen = events(result.stdout)
    resume = next(e for e in seen if e["event"] == "resume")
    assert resume["step"] == 15 and resume["total_steps"] == 40
    assert next(e["step"] for e in seen if e["event"] == "step") == 16
    resumed = load_file(str(out / "model.safetensors"))
    uninterrupted = load_file(str(digits_artifact / "model.safetensors"))
    assert set(resumed) == set(uninterrupted)
    for name, tensor in uninterrupted.items():  # BatchNorm running statistics included
        assert torch.allclose(resumed[name].float(), tensor.float(), atol=1e-5), name


def test_two_process_ddp_trains_an_image_model(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    result = run_ddp(
        *image_flags(out, "--batch-size", "8"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["worldSize"] == 2 and metrics["train"]["steps"] == 40
    assert metrics["accuracy"] >= 0.4, metrics  # per-rank BatchNorm on 8 images: below 1 process
    assert result.stdout.count('"event": "done"') == 1


def test_warm_start_continues_from_the_artifact(digits_artifact: Path, tmp_path: Path) -> None:
    out = tmp_path / "warm"
    flags = image_flags(out, "--epochs", "1", "--max-samples", "32", "--learning-rate", "1e-7")
    result = run_cli("modelloop_trainer.train", *flags, "--model-uri", f"file://{digits_artifact}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert any(e.get("warm_start") for e in events(result.stdout))
    before = json.loads((digits_artifact / "metrics.json").read_text())["accuracy"]
    after = json.loads((out / "metrics.json").read_text())["accuracy"]
    # Two steps at lr 1e-7 barely move the weights: the trained head and backbone were kept.
    assert after >= before - 0.1, (before, after)


def test_warm_start_with_other_labels_is_refused(digits_artifact: Path, tmp_path: Path) -> None:
    data = write_lines(
        tmp_path / "colours.jsonl",
        [
            {"image": b64(png(RED if i % 2 else BLUE)), "label": "red" if i % 2 else "blue"}
            for i in range(8)
        ],
    )
    term = tmp_path / "term.json"
    code = train.main(
        [
            *image_flags(tmp_path / "out", data=f"file://{data}"),
            "--model-uri",
            f"file://{digits_artifact}",
            "--validation-split",
            "0.25",
            "--termination-log",
            str(term),
        ]
    )
    assert code == 2
    message = json.loads(term.read_text())["message"]
    assert "a warm start needs the same labels" in message
    assert "builtin://efficientnet-lite0" in message  # the image base model, not MiniLM


def test_jsonl_base64_paths_and_folders_load_alike(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "r.png").write_bytes(png(RED))
    jpeg = io.BytesIO()
    Image.new("RGB", (20, 20), BLUE).save(jpeg, format="JPEG")
    data = write_lines(
        tmp_path / "mixed.jsonl",
        [
            {"image": b64(png(RED)), "label": "red"},
            {"path": "img/r.png", "label": "red"},
            {"image": b64(jpeg.getvalue()), "label": 7},
        ],
    )
    examples = load_image_examples(f"file://{data}", "label", 16)
    assert examples.labels == ["red", "red", "7"]
    first, second, third = (input_pixels(x, "test", 16) for x in examples.texts)
    assert first.shape == (3, 16, 16) and first.dtype == torch.uint8
    assert torch.equal(first, second)  # inline and by path: the same pixels
    assert int(third[2].float().mean()) > 180 > int(third[0].float().mean())  # blue survives

    root = tmp_path / "folder"
    for label, colour in (("blue", BLUE), ("red", RED)):
        (root / label).mkdir(parents=True)
        for i in range(3):
            (root / label / f"{i}.png").write_bytes(png(colour))
    (root / "red" / "notes.txt").write_text("not an image, ignored")
    folder = load_image_examples(f"file://{root}", "label", 16)
    assert folder.labels == ["blue"] * 3 + ["red"] * 3
    splits = load_splits(
        DatasetSpec(uri=f"file://{root}", validation_split=0.34),
        lambda uri: load_image_examples(uri, "label", 16),
    )
    assert splits.label_names == ["blue", "red"] and len(splits.validation) == 2


def test_digits_builtin_has_ten_classes_of_resized_greyscale() -> None:
    digits = load_image_examples("builtin://digits", "label", 24)
    assert len(digits) == 1797 and sorted(set(digits.labels)) == DIGITS
    pixels = input_pixels(digits.texts[0], "digits", 24)
    assert pixels.shape == (3, 24, 24)
    assert torch.equal(pixels[0], pixels[1]) and int(pixels.max()) > 200  # grey, full range


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"image": b64(b"not an image at all"), "label": "a"}, "line 2: not a readable image"),
        ({"image": "%%%", "label": "a"}, "line 2: field 'image' is not valid base64"),
        ({"label": "a"}, "line 2 needs exactly one of 'image' and 'path'"),
        ({"image": b64(png(RED))}, "line 2 has no field 'label'"),
        ({"path": "missing.png", "label": "a"}, "line 2: cannot read image 'missing.png'"),
        ({"path": "../x.png", "label": "a"}, "line 2: path '../x.png' must be relative"),
    ],
)
def test_bad_records_name_the_file_and_line(
    tmp_path: Path, row: dict[str, Any], message: str
) -> None:
    data = write_lines(tmp_path / "bad.jsonl", [{"image": b64(png(RED)), "label": "a"}, row])
    with pytest.raises(InputError) as caught:
        load_image_examples(f"file://{data}", "label", 16)
    assert f"dataset file://{data}: " in str(caught.value)
    assert message in str(caught.value)


def test_too_large_and_unreadable_folder_images_are_named(tmp_path: Path) -> None:
    root = tmp_path / "big"
    (root / "a").mkdir(parents=True)
    (root / "a" / "huge.png").write_bytes(png(RED, size=(4097, 4097)))
    with pytest.raises(InputError, match=r"a/huge\.png: image is 4097x4097 pixels, more than"):
        load_image_examples(f"file://{root}", "label", 16)
    (root / "a" / "huge.png").unlink()
    (root / "a" / "broken.jpg").write_bytes(png(RED)[:30])
    with pytest.raises(InputError, match=r"a/broken\.jpg: not a readable image"):
        load_image_examples(f"file://{root}", "label", 16)


def test_cli_rejects_unknown_validation_labels_and_image_flags(tmp_path: Path) -> None:
    train_file = write_lines(
        tmp_path / "train.jsonl",
        [
            {"image": b64(png(RED if i % 2 else BLUE)), "label": "red" if i % 2 else "blue"}
            for i in range(6)
        ],
    )
    validation = write_lines(tmp_path / "val.jsonl", [{"image": b64(png(RED)), "label": "green"}])
    cases = [
        (["--validation-uri", f"file://{validation}"], "validation labels ['green'] never occur"),
        (["--image-size", "4"], "--image-size must be in [16, 512], got 4"),
        (["--captured-uri", f"file://{tmp_path}"], "--captured-uri is for text classification"),
        (["--model-uri", "builtin://resnet"], "unknown built-in image model 'resnet'"),
        (["--model-uri", f"file://{tmp_path}"], "not an image model"),
    ]
    for extra, message in cases:
        term = tmp_path / "term.json"
        flags = image_flags(tmp_path / "out", data=f"file://{train_file}")
        code = train.main([*flags, *extra, "--termination-log", str(term)])
        assert code == 2, extra
        assert message in json.loads(term.read_text())["message"], extra


def test_remote_jsonl_with_paths_and_folders_load_through_fsspec() -> None:
    """memory:// stands in for s3://: a folder, and a JSONL whose paths point next to it."""
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/imgs/set/red/1.png", png(RED))
    fs.pipe_file("/imgs/set/blue/1.png", png(BLUE))
    fs.pipe_file("/imgs/list/pics/r.png", png(RED))
    lines = json.dumps({"path": "pics/r.png", "label": "red"}) + "\n"
    fs.pipe_file("/imgs/list/data.jsonl", lines.encode())
    folder = load_image_examples("memory://imgs/set", "label", 16)
    assert folder.labels == ["blue", "red"]
    listed = load_image_examples("memory://imgs/list/data.jsonl", "label", 16)
    assert listed.labels == ["red"]
    red = input_pixels(folder.texts[1], "t", 16)
    assert torch.equal(input_pixels(listed.texts[0], "t", 16), red)


def test_a_last_batch_of_one_image_joins_the_batch_before_it() -> None:
    """1,617 digits at batch 16 leave one image over; BatchNorm cannot train on it alone."""
    world = World(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    data = ImageTensors(pixels=torch.zeros((33, 3, 16, 16), dtype=torch.uint8), labels=[0] * 33)
    settings = LoopSettings(
        epochs=2,
        batch_size=16,
        learning_rate=1e-3,
        weight_decay=0.0,
        warmup_ratio=0.0,
        gradient_accumulation_steps=1,
        seed=0,
        min_batch_size=2,
    )
    plan = Plan(data, world, settings)
    steps = list(plan.steps(0))
    assert plan.total_steps == len(steps) == 4
    assert [len(group[0]) for _, _, group in steps] == [16, 17, 16, 17]
    assert sorted(i for _, epoch, group in steps if epoch == 0 for i in group[0]) == list(range(33))
    text_plan = Plan(data, world, replace(settings, min_batch_size=1))
    assert text_plan.total_steps == 6  # text keeps its batches as they were
