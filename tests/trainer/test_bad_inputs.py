"""Every bad input fails fast with exit code 2 and a message that names the culprit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from modelloop_trainer import train
from modelloop_trainer.optimize import main as optimize_main

from .conftest import make_examples, write_jsonl


def _train(
    tmp_path: Path, model_dir: Path, *flags: str, data: str | None = None
) -> tuple[int, dict[str, Any]]:
    term = tmp_path / "term.json"
    args = [
        "--model-uri",
        f"file://{model_dir}",
        "--output-uri",
        f"file://{tmp_path / 'out'}",
        "--termination-log",
        str(term),
        "--epochs",
        "1",
    ]
    if data is not None:
        args += ["--dataset-uri", data]
    code = train.main([*args, *flags])
    return code, json.loads(term.read_text())


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, str]:
    good = make_examples(12, 0)
    files = {
        "no-label": write_jsonl(tmp_path / "nolabel.jsonl", [{"text": r["text"]} for r in good]),
        "empty": tmp_path / "empty.jsonl",
        "one-class": write_jsonl(tmp_path / "one.jsonl", [{"text": "a b", "label": "x"}] * 5),
        "bad-json": tmp_path / "bad.jsonl",
        "csv": tmp_path / "data.csv",
        "txt": tmp_path / "data.txt",
        "val-unknown": write_jsonl(tmp_path / "val.jsonl", [{"text": "a", "label": "zebra"}]),
        "good": write_jsonl(tmp_path / "good.jsonl", good),
    }
    Path(files["empty"]).write_text("\n")
    Path(files["bad-json"]).write_text('{"text": "a", "label": "b"}\n{oops\n')
    Path(files["csv"]).write_text("body,category\nhello,a\n")
    Path(files["txt"]).write_text("hello")
    return {k: f"file://{v}" for k, v in files.items()}


@pytest.mark.parametrize(
    ("case", "flags", "needle"),
    [
        (
            "missing file",
            ["--dataset-uri", "file:///nonexistent/data.jsonl"],
            "file:///nonexistent/data.jsonl: does not exist",
        ),
        ("bad scheme", ["--dataset-uri", "ftp://host/data.jsonl"], "unsupported scheme ftp://"),
        ("relative path", ["--dataset-uri", "data.jsonl"], "data.jsonl: not a URI"),
        ("unknown builtin", ["--dataset-uri", "builtin://imdb"], "unknown built-in dataset 'imdb'"),
        ("pvc without claim", ["--dataset-uri", "pvc:///x.jsonl"], "the claim is missing"),
        ("s3 without bucket", ["--dataset-uri", "s3:///x.jsonl"], "the bucket is missing"),
        ("label field missing", ["@no-label"], "has no field 'label' (--label-field)"),
        ("empty dataset", ["@empty"], "contains no examples"),
        ("one class", ["@one-class"], "needs at least 2"),
        ("bad json line", ["@bad-json"], "line 2 is not valid JSON"),
        ("csv column missing", ["@csv"], "no column 'text' (--text-field)"),
        ("unknown file type", ["@txt"], "unknown file type"),
        (
            "unknown validation label",
            ["@good", "--validation-uri", "@val-unknown"],
            "validation labels ['zebra']",
        ),
        ("bad number", ["@good", "--epochs", "0"], "--epochs must be >= 1"),
        ("not a number", ["@good", "--batch-size", "many"], "invalid int value: 'many'"),
        ("bad metric", ["@good", "--metric", "auc"], "invalid choice: 'auc'"),
        ("bad split", ["@good", "--validation-split", "1.5"], "--validation-split must be"),
        ("unknown model", ["@good", "--model-uri", "builtin://gpt-9"], "unknown built-in model"),
        ("model not a dir", ["@good", "--model-uri", "file:///etc/hostname"], "no config.json"),
    ],
)
def test_train_rejects_bad_input_with_exit_code_2(
    case: str,
    flags: list[str],
    needle: str,
    bad_files: dict[str, str],
    tmp_path: Path,
    tiny_model_dir: Path,
) -> None:
    resolved: list[str] = []
    for flag in flags:
        if flag.startswith("@"):
            if not resolved or resolved[-1] != "--validation-uri":
                resolved.append("--dataset-uri")
            resolved.append(bad_files[flag[1:]])
        else:
            resolved.append(flag)
    code, summary = _train(tmp_path, tiny_model_dir, *resolved)
    assert code == 2, summary
    assert summary["exitCode"] == 2 and summary["status"] == "Failed"
    assert needle in summary["message"], summary["message"]


def test_unwritable_output_fails_before_training(tmp_path: Path, tiny_model_dir: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    term = tmp_path / "term.json"
    code = train.main(
        [
            "--model-uri",
            f"file://{tiny_model_dir}",
            "--dataset-uri",
            "builtin://bbc-news",
            "--output-uri",
            f"file://{tmp_path}/file/out",
            "--termination-log",
            str(term),
        ]
    )
    assert code == 2
    assert f"file://{tmp_path}/file/out: cannot write" in json.loads(term.read_text())["message"]


def test_flags_fall_back_to_environment_variables(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELLOOP_DATASET_URI", "builtin://from-env")
    code, summary = _train(tmp_path, tiny_model_dir)
    assert code == 2 and "builtin://from-env" in summary["message"]
    monkeypatch.setenv("MODELLOOP_VALIDATION_SPLIT", "1.5")  # converted by the flag's type
    code, summary = _train(tmp_path, tiny_model_dir, data="builtin://bbc-news")
    assert code == 2 and "--validation-split must be between 0 and 1, got 1.5" in summary["message"]
    monkeypatch.setenv("MODELLOOP_MAX_LENGTH", "not-a-number")
    code, summary = _train(tmp_path, tiny_model_dir, data="builtin://bbc-news")
    assert code == 2 and "--max-length: invalid int value" in summary["message"]


@pytest.mark.parametrize(
    ("techniques", "needle"),
    [
        ("[{", "--techniques is not valid JSON"),
        ("{}", "must be a non-empty JSON list"),
        ('[{"type":"sparsify"}]', "unknown type 'sparsify'"),
        ('[{"type":"pruning","amount":1.5}]', "amount must be between 0 and 1"),
        ('[{"type":"pruning","amout":0.5}]', "unknown field(s) ['amout']"),
        ('[{"type":"quantization","embeddings":"yes"}]', "embeddings must be a bool"),
        ('[{"type":"quantization","dtype":"int4"}]', "dtype 'int4' is not supported"),
        ('[{"type":"quantization"},{"type":"pruning"}]', "quantization must be the last"),
        ('[{"type":"distillation","studentLayers":0}]', "studentLayers must be >= 1"),
    ],
)
def test_optimize_rejects_bad_techniques(techniques: str, needle: str, tmp_path: Path) -> None:
    term = tmp_path / "term.json"
    code = optimize_main(
        [
            "--model-uri",
            f"file://{tmp_path}",
            "--dataset-uri",
            "builtin://bbc-news",
            "--techniques",
            techniques,
            "--output-uri",
            f"file://{tmp_path / 'out'}",
            "--no-package",
            "--termination-log",
            str(term),
        ]
    )
    summary = json.loads(term.read_text())
    assert code == 2 and summary["kind"] == "optimize"
    assert needle in summary["message"], summary["message"]


def test_optimize_rejects_a_directory_that_is_not_an_artifact(tmp_path: Path) -> None:
    term = tmp_path / "term.json"
    code = optimize_main(
        [
            "--model-uri",
            f"file://{tmp_path}",
            "--dataset-uri",
            "builtin://bbc-news",
            "--techniques",
            '[{"type":"quantization"}]',
            "--output-uri",
            f"file://{tmp_path}/o",
            "--no-package",
            "--termination-log",
            str(term),
        ]
    )
    assert code == 2
    assert "no modelloop.json" in json.loads(term.read_text())["message"]


def test_optimize_without_a_handler_file_fails_clearly(tmp_path: Path) -> None:
    term = tmp_path / "term.json"
    code = optimize_main(
        [
            "--model-uri",
            f"file://{tmp_path}",
            "--dataset-uri",
            "builtin://bbc-news",
            "--techniques",
            '[{"type":"quantization"}]',
            "--output-uri",
            f"file://{tmp_path}/o",
            "--handler",
            str(tmp_path / "nope.py"),
            "--termination-log",
            str(term),
        ]
    )
    assert code == 2
    assert "nope.py: not found" in json.loads(term.read_text())["message"]
