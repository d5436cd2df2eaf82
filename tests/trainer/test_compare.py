"""Champion/challenger in modelloop-optimize: the pure rules, then whole runs on the tiny model
with the trained model (as a .mar) as champion and its int8 quantization as candidate."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
from modelloop_trainer.artifact import load_artifact
from modelloop_trainer.optimize import main as optimize_main
from modelloop_trainer.optimize.cli import load_champion
from modelloop_trainer.optimize.compare import (
    Figures,
    Rules,
    Side,
    compact_report,
    comparison_report,
    decide,
    figures,
)
from modelloop_trainer.optimize.package import ServingConfig, build_archive
from modelloop_trainer.termination import LIMIT_BYTES

from .conftest import make_examples, optimize_flags

LABELS = ["business", "sport", "tech"]
HANDLER = '''"""A stand-in TorchServe handler for packaging tests."""
def handle(data, context):
    return data
'''


def fig(accuracy: float, samples: int = 100) -> Figures:
    return Figures(accuracy=accuracy, macro_f1=accuracy, samples=samples)


def run_decide(
    *,
    champion: Side,
    candidate: Side,
    rules: Rules | None = None,
    champion_labels: list[str] | None = LABELS,
    holdout_rows: int | None = 120,
    problems: tuple[str, ...] = (),
) -> tuple[bool, list[str]]:
    result = decide(
        rules or Rules(),
        champion=champion,
        candidate=candidate,
        champion_labels=champion_labels,
        candidate_labels=LABELS,
        holdout_rows=holdout_rows,
        problems=problems,
    )
    return result.passed, result.reasons


# --- decide() -------------------------------------------------------------------------


def test_a_candidate_as_good_on_both_datasets_passes() -> None:
    passed, reasons = run_decide(
        champion=Side(original=fig(0.95), holdout=fig(0.70, 120)),
        candidate=Side(original=fig(0.945), holdout=fig(0.70, 120)),
    )
    assert passed and reasons == []


def test_worse_on_the_holdout_fails_with_the_figures() -> None:
    passed, reasons = run_decide(
        champion=Side(original=fig(0.95), holdout=fig(0.845, 120)),
        candidate=Side(original=fig(0.95), holdout=fig(0.712, 120)),
    )
    assert not passed
    assert reasons == ["holdout accuracy 0.7120 < champion 0.8450 + minImprovement 0.0000 (n=120)"]


def test_min_improvement_is_required_on_the_holdout() -> None:
    champion = Side(original=fig(0.9), holdout=fig(0.80, 50))
    better = Side(original=fig(0.9), holdout=fig(0.85, 50))
    assert run_decide(champion=champion, candidate=better, rules=Rules(min_improvement=0.05))[0]
    passed, reasons = run_decide(
        champion=champion, candidate=better, rules=Rules(min_improvement=0.1)
    )
    assert not passed and "+ minImprovement 0.1000 (n=50)" in reasons[0]


def test_a_drop_on_the_original_data_beyond_the_budget_fails() -> None:
    passed, reasons = run_decide(
        champion=Side(original=fig(0.95, 222), holdout=fig(0.6)),
        candidate=Side(original=fig(0.92, 222), holdout=fig(0.9)),
    )
    assert not passed
    assert reasons == [
        "original accuracy 0.9200 < champion 0.9500 - maxOriginalDrop 0.0100 "
        "(drop 0.0300, n=222)"
    ]
    # Exactly at the budget passes (no float noise in the way).
    assert run_decide(
        champion=Side(original=fig(0.95)),
        candidate=Side(original=fig(0.94)),
        holdout_rows=None,
    )[0]


def test_different_label_sets_fail_with_both_named() -> None:
    passed, reasons = run_decide(
        champion=Side(),
        candidate=Side(original=fig(0.9)),
        champion_labels=["business", "sport", "politics"],
    )
    assert not passed and len(reasons) == 1
    assert "labels differ" in reasons[0]
    assert "only the champion has politics" in reasons[0]
    assert "only the candidate has tech" in reasons[0]


def test_too_few_holdout_rows_fail_and_are_never_compared_blind() -> None:
    passed, reasons = run_decide(
        champion=Side(original=fig(0.9)),
        candidate=Side(original=fig(0.9)),
        holdout_rows=3,
    )
    assert not passed
    assert reasons == ["holdout has 3 rows, minHoldoutRows 20 (too few to compare)"]
    assert not run_decide(
        champion=Side(original=fig(0.9)), candidate=Side(original=fig(0.9)), holdout_rows=0
    )[0]


def test_without_a_holdout_only_the_original_rule_applies() -> None:
    passed, reasons = run_decide(
        champion=Side(original=fig(0.9)), candidate=Side(original=fig(0.9)), holdout_rows=None
    )
    assert passed and reasons == []


def test_a_champion_that_cannot_be_read_fails_and_missing_figures_never_pass() -> None:
    passed, reasons = run_decide(
        champion=Side(),
        candidate=Side(original=fig(0.9)),
        champion_labels=None,
        holdout_rows=None,
        problems=("champion file:///x.mar cannot be read: corrupt archive",),
    )
    assert not passed and reasons == ["champion file:///x.mar cannot be read: corrupt archive"]
    passed, reasons = run_decide(champion=Side(), candidate=Side(), holdout_rows=50)
    assert not passed and len(reasons) == 2 and all("not evaluated" in r for r in reasons)


def test_figures_and_the_compact_report() -> None:
    f = figures([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], LABELS)
    assert f.accuracy == pytest.approx(0.6) and f.samples == 5
    assert f.per_class_recall == {"business": 0.5, "sport": 1.0, "tech": 0.0}
    many = Figures(
        accuracy=1 / 3,
        macro_f1=0.123456789,
        samples=30,
        per_class_recall={f"label-{i:02d}": i / 30 for i in range(30)},
    )
    side = Side(original=many, holdout=many)
    section = comparison_report(
        champion_name="bbc-v1",
        champion=side,
        candidate=side,
        rules=Rules(),
        comparison=decide(
            Rules(),
            champion=side,
            candidate=side,
            champion_labels=LABELS,
            candidate_labels=LABELS,
            holdout_rows=30,
        ),
    )
    assert section["passed"] is True and section["rules"] == {
        "minImprovement": 0.0,
        "maxOriginalDrop": 0.01,
        "minHoldoutRows": 20,
    }
    assert len(section["champion"]["original"]["perClassRecall"]) == 30
    compact = compact_report(section)
    original = compact["champion"]["original"]
    assert original["accuracy"] == 0.3333 and original["macroF1"] == 0.1235
    recall = original["perClassRecall"]
    assert len(recall) == 20 and "label-00" in recall and "label-29" not in recall  # worst kept
    bare = compact_report(section, with_recall=False)
    assert "perClassRecall" not in bare["candidate"]["holdout"]


# --- modelloop-optimize with a champion ------------------------------------------------


@pytest.fixture(scope="module")
def champion_mar(trained_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model packaged the way the optimizer packages it."""
    tmp = tmp_path_factory.mktemp("champion")
    handler = tmp / "handler.py"
    handler.write_text(HANDLER)
    return build_archive(
        artifact_dir=trained_artifact,
        handler=handler,
        name="champion",
        version="1.0",
        serving=ServingConfig(),
        export_dir=tmp,
    )


def write_labelled(directory: Path, rows: list[dict[str, str]], prefix: str = "req") -> Path:
    """Labelled records (modelloop.dev/labelled/v1) as a capture sink's collector writes them."""
    day = directory / "2026-12-06"
    day.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, row in enumerate(rows):
        record = {
            "schema": "modelloop.dev/labelled/v1",
            "requestId": f"{prefix}-{i:04d}",
            "time": f"2026-12-06T12:{i // 60 % 60:02d}:{i % 60:02d}.000Z",
            "labelledAt": "2026-12-06T13:00:00.000Z",
            "model": {"name": "topics", "version": "v1", "digest": "sha256:" + "0" * 64},
            "text": row["text"],
            "label": row["label"],
            "predicted": row["label"],
            "confidence": 0.9,
        }
        lines.append(json.dumps(record) + "\n")
    (day / "20261206T120000Z-000001.jsonl").write_text("".join(lines))
    return directory


@pytest.fixture(scope="module")
def holdout_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_labelled(tmp_path_factory.mktemp("sink") / "labelled", make_examples(200, 7))


def run_optimize(
    trained: Path, data: Path, out: Path, *extra: str
) -> tuple[int, dict[str, Any], bytes]:
    flags = optimize_flags(trained, data, out, '[{"type":"quantization"}]',
                           "--max-accuracy-drop", "0.5", *extra, latency_samples=3)
    code = optimize_main(flags)
    raw = (out.parent / f"{out.name}-term.json").read_bytes()
    return code, json.loads(raw), raw


def test_the_int8_candidate_against_its_own_champion_passes_lenient_rules(
    trained_artifact: Path,
    dataset_file: Path,
    champion_mar: Path,
    holdout_dir: Path,
    tmp_path: Path,
) -> None:
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    out = tmp_path / "opt"
    code, summary, raw = run_optimize(
        trained_artifact,
        dataset_file,
        out,
        "--handler",
        str(handler),
        "--archive-name",
        "topics",
        "--champion-uri",
        f"file://{champion_mar}",
        "--champion-name",
        "topics-v1",
        "--holdout-uri",
        f"file://{holdout_dir}",
        "--holdout-fraction",
        "0.2",
        "--min-holdout-rows",
        "10",
        "--min-improvement",
        "-0.25",
        "--max-original-drop",
        "0.25",
    )
    assert code == 0, summary
    assert len(raw) < LIMIT_BYTES - 1024
    comparison = json.loads((out / "report.json").read_text())["comparison"]
    assert comparison["passed"] is True and comparison["reasons"] == []
    assert comparison["rules"] == {
        "minImprovement": -0.25,
        "maxOriginalDrop": 0.25,
        "minHoldoutRows": 10,
    }
    assert comparison["champion"]["name"] == "topics-v1"
    for side in ("champion", "candidate"):
        for data in ("original", "holdout"):
            figures_ = comparison[side][data]
            assert set(figures_) == {"accuracy", "macroF1", "samples", "perClassRecall"}
            assert set(figures_["perClassRecall"]) <= set(LABELS)
    original = comparison["candidate"]["original"]
    assert original["samples"] == 24 and original["accuracy"] >= 0.75
    holdout = comparison["candidate"]["holdout"]
    assert holdout["samples"] == comparison["champion"]["holdout"]["samples"] >= 10
    # The champion (the float model) scores as it did when it was trained and measured.
    report = json.loads((out / "report.json").read_text())
    assert comparison["champion"]["original"]["accuracy"] == pytest.approx(
        report["baseline"]["accuracy"]
    )
    assert summary["accepted"] is True and summary["archiveUri"] == f"file://{out}/topics.mar"
    assert summary["report"]["comparison"]["passed"] is True
    assert "vs topics-v1 passed: holdout accuracy" in summary["message"]

    # An int8 .mar loads as a champion exactly as its directory does (as the server loads it).
    champion = load_champion(f"file://{out}/topics.mar", tmp_path / "int8-champion")
    direct = load_artifact(out)
    assert champion.manifest["weights"]["encoding"] == "dynamic-int8"
    texts = ["shares and profit", "the striker and the coach"]
    assert torch.equal(champion.predict_proba(texts), direct.predict_proba(texts))


def test_a_strict_min_improvement_rejects_with_the_figures_and_no_archive(
    trained_artifact: Path,
    dataset_file: Path,
    holdout_dir: Path,
    tmp_path: Path,
) -> None:
    handler = tmp_path / "handler.py"
    handler.write_text(HANDLER)
    out = tmp_path / "strict"
    code, summary, raw = run_optimize(
        trained_artifact,
        dataset_file,
        out,
        "--handler",
        str(handler),
        "--champion-uri",
        f"file://{trained_artifact}",  # the champion as a model directory
        "--holdout-uri",
        f"file://{holdout_dir}",
        "--min-holdout-rows",
        "10",
        "--min-improvement",
        "0.5",
        "--max-original-drop",
        "0.25",
    )
    assert code == 4, summary
    assert summary["exitCode"] == 4 and summary["status"] == "Failed"
    assert summary["accepted"] is False and summary["archiveUri"] is None
    assert not list(out.glob("*.mar"))
    assert len(raw) < LIMIT_BYTES - 1024
    report = json.loads((out / "report.json").read_text())
    assert report["accepted"] is False
    comparison = report["comparison"]
    assert comparison["passed"] is False and len(comparison["reasons"]) == 1
    reason = comparison["reasons"][0]
    assert reason.startswith("holdout accuracy ") and "+ minImprovement 0.5000 (n=" in reason
    assert comparison["champion"]["name"] == f"file://{trained_artifact}"
    assert f"champion comparison: {reason}" in report["reasons"]
    assert reason in summary["message"] and summary["message"].startswith("optimization rejected")
    assert summary["report"]["comparison"]["reasons"] == [reason]
    assert summary["report"]["comparison"]["candidate"]["holdout"]["samples"] >= 10


def test_a_corrupt_champion_archive_rejects_with_the_reason(
    trained_artifact: Path, dataset_file: Path, champion_mar: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "champion.mar"
    data = bytearray(champion_mar.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 4096] = b"\0" * 4096
    corrupt.write_bytes(bytes(data))
    out = tmp_path / "corrupt"
    code, summary, _ = run_optimize(
        trained_artifact,
        dataset_file,
        out,
        "--no-package",
        "--champion-uri",
        f"file://{corrupt}",
    )
    assert code == 4, summary
    comparison = json.loads((out / "report.json").read_text())["comparison"]
    assert comparison["passed"] is False
    assert comparison["reasons"][0].startswith(f"champion file://{corrupt} cannot be read: ")
    assert comparison["champion"] == {"name": f"file://{corrupt}"}
    assert f"champion file://{corrupt} cannot be read" in summary["message"]

    # Not a zip at all, and a champion that does not exist: the same verdict.
    garbage = tmp_path / "garbage.mar"
    garbage.write_bytes(b"not a model archive")
    for uri in (f"file://{garbage}", f"file://{tmp_path}/missing.mar"):
        code, summary, _ = run_optimize(
            trained_artifact, dataset_file, tmp_path / "again", "--no-package",
            "--champion-uri", uri,
        )
        assert code == 4 and f"champion {uri} cannot be read" in summary["message"]


def test_an_empty_holdout_rejects_and_is_never_accepted_blind(
    trained_artifact: Path, dataset_file: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "labelled"
    (empty / "2026-12-06").mkdir(parents=True)
    (empty / "2026-12-06" / "20261206T120000Z-000001.jsonl").write_text("")
    out = tmp_path / "empty"
    code, summary, _ = run_optimize(
        trained_artifact,
        dataset_file,
        out,
        "--no-package",
        "--champion-uri",
        f"file://{trained_artifact}",
        "--holdout-uri",
        f"file://{empty}",
        "--max-original-drop",
        "0.25",
    )
    assert code == 4, summary
    comparison = json.loads((out / "report.json").read_text())["comparison"]
    assert comparison["passed"] is False
    assert any(r.startswith("holdout ") for r in comparison["reasons"])
    assert "holdout" in summary["message"]
    # The original-data figures are there all the same.
    assert comparison["champion"]["original"]["samples"] == 24
    assert "holdout" not in comparison["champion"] and "holdout" not in comparison["candidate"]


def test_comparison_flags_are_checked_before_any_work(
    trained_artifact: Path, dataset_file: Path, tmp_path: Path
) -> None:
    for extra, text in (
        (["--holdout-uri", f"file://{tmp_path}"], "--holdout-uri needs --champion-uri"),
        (["--champion-uri", "file:///x", "--holdout-since", "yesterday"], "--holdout-since"),
        (["--champion-uri", "file:///x", "--holdout-since", "2026-12-06T12:00:00"], "time zone"),
        (["--champion-uri", "file:///x", "--min-holdout-rows", "0"], "--min-holdout-rows"),
        (["--champion-uri", "file:///x", "--holdout-fraction", "1"], "--holdout-fraction"),
        (["--champion-uri", "file:///x", "--max-original-drop", "-0.1"], "--max-original-drop"),
    ):
        code, summary, _ = run_optimize(
            trained_artifact, dataset_file, tmp_path / "bad", "--no-package", *extra
        )
        assert code == 2, (extra, summary)
        assert text in summary["message"]
        assert not (tmp_path / "bad").exists()


def test_a_mar_member_that_fails_its_crc_is_refused(champion_mar: Path, tmp_path: Path) -> None:
    """A flipped byte inside a stored member: the zip directory is intact, the data is not."""
    broken = tmp_path / "crc.mar"
    with zipfile.ZipFile(champion_mar) as src:
        info = src.getinfo("labels.json")
        offset = info.header_offset + 30 + len(info.filename) + len(info.extra)
    data = bytearray(champion_mar.read_bytes())
    data[offset] ^= 0xFF
    broken.write_bytes(bytes(data))
    with pytest.raises(Exception, match="corrupt archive"):
        load_champion(f"file://{broken}", tmp_path / "work")
