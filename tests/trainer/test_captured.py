"""Labelled production traffic as training data: captured.py, and modelloop-train with
--captured-uri (snapshot, digest, resume, the row and label checks) and warm starts."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from modelloop_trainer.artifact import load_artifact, read_manifest
from modelloop_trainer.captured import LABELLED_SCHEMA, bucket, load_captured
from modelloop_trainer.errors import InputError
from modelloop_trainer.optimize import main as optimize_main
from safetensors.torch import load_file

from .conftest import (
    kill_at_checkpoint,
    make_examples,
    optimize_flags,
    run_cli,
    train_flags,
    write_jsonl,
)

DAY = "2026-12-06"


def record(
    request_id: str,
    *,
    text: str = "the match ended with a goal",
    label: str = "sport",
    time: str = f"{DAY}T12:00:00.000Z",
    labelled_at: str = f"{DAY}T13:00:00.000Z",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "schema": LABELLED_SCHEMA,
        "requestId": request_id,
        "time": time,
        "labelledAt": labelled_at,
        "model": {"name": "topics", "version": "v1", "digest": "sha256:00"},
        "text": text,
        "label": label,
        "predicted": label,
        "confidence": 0.9,
        **extra,
    }


def stamp(second: int) -> str:
    """An RFC 3339 time `second` seconds after 12:00 on DAY."""
    return f"{DAY}T{12 + second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}.000Z"


def segment(root: Path, name: str, lines: Sequence[dict[str, Any] | str], day: str = DAY) -> Path:
    directory = root / "labelled" / day
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def uri(path: Path) -> str:
    return f"file://{path}"


# --- captured.py -----------------------------------------------------------------------


def test_bucket_is_the_first_8_bytes_of_sha256_over_2_to_the_64() -> None:
    expected = int.from_bytes(hashlib.sha256(b"req-1").digest()[:8], "big") / 2**64
    assert bucket("req-1") == expected == bucket("req-1")
    assert bucket("req-1") != bucket("req-2")
    values = [bucket(f"id-{i}") for i in range(500)]
    assert all(0.0 <= v < 1.0 for v in values)
    assert bucket("é") == int.from_bytes(hashlib.sha256("é".encode()).digest()[:8], "big") / 2**64


def test_splits_follow_the_buckets_in_the_documented_fractions(tmp_path: Path) -> None:
    n = 2000
    segment(tmp_path, "a.jsonl", [record(f"r{i}", time=stamp(i)) for i in range(n)])
    splits = load_captured(uri(tmp_path), holdout_fraction=0.2, validation_split=0.1)
    assert splits.rows == n and splits.skipped == 0 and splits.since is None
    sizes = len(splits.holdout), len(splits.validation), len(splits.train)
    assert sum(sizes) == n
    # Binomial counts: expected 400 / 160 / 1440, allowed about 3.5 standard deviations.
    assert abs(sizes[0] - 400) <= 63 and abs(sizes[1] - 160) <= 45, sizes

    # Membership is the formula, request by request (texts are made unique to check).
    segment(tmp_path, "a.jsonl", [record(f"r{i}", text=f"r{i}", time=stamp(i)) for i in range(n)])
    splits = load_captured(uri(tmp_path), holdout_fraction=0.2, validation_split=0.1)
    edge = 0.2 + 0.8 * 0.1
    assert set(splits.holdout.texts) == {f"r{i}" for i in range(n) if bucket(f"r{i}") < 0.2}
    assert set(splits.validation.texts) == {
        f"r{i}" for i in range(n) if 0.2 <= bucket(f"r{i}") < edge
    }
    # The holdout does not move with the validation share or the window.
    other = load_captured(
        uri(tmp_path), holdout_fraction=0.2, validation_split=0.5, since=stamp(1000)
    )
    assert set(other.holdout.texts) == {t for t in splits.holdout.texts if int(t[1:]) >= 1000}


def test_later_labels_win_and_every_split_is_sorted_by_time_then_id(tmp_path: Path) -> None:
    def rec(request_id: str, label: str, second: int, **extra: Any) -> dict[str, Any]:
        return record(request_id, text=request_id, label=label, time=stamp(second), **extra)

    # Written newest first, across days and files, to show the output order is its own.
    segment(tmp_path, "b.jsonl", [rec("x", "tech", 5)], day="2026-12-07")
    segment(
        tmp_path,
        "a.jsonl",
        [
            rec("dup", "business", 3, labelled_at=f"{DAY}T14:00:00.000Z"),
            rec("c", "sport", 1),
            rec("b", "sport", 1),
        ],
    )
    segment(
        tmp_path,
        "c.jsonl",
        [
            # An older label read later loses against the newer one above.
            rec("dup", "tech", 3, labelled_at=f"{DAY}T13:30:00.000Z"),
            # Equal labelledAt: the record read last wins.
            rec("tie", "sport", 2),
            rec("tie", "tech", 2),
        ],
    )
    splits = load_captured(uri(tmp_path), holdout_fraction=0.0, validation_split=0.0)
    assert splits.rows == 5 and splits.skipped == 0
    assert splits.train.texts == ["b", "c", "tie", "dup", "x"]  # by time, then requestId
    assert splits.train.labels == ["sport", "sport", "tech", "business", "tech"]
    assert len(splits.validation) == len(splits.holdout) == 0


def test_since_keeps_records_served_at_or_after_it_in_any_offset(tmp_path: Path) -> None:
    segment(tmp_path, "a.jsonl", [record(f"r{i}", text=f"t{i}", time=stamp(i)) for i in range(10)])
    kept = load_captured(uri(tmp_path), since=stamp(4), holdout_fraction=0, validation_split=0)
    assert kept.train.texts == [f"t{i}" for i in range(4, 10)]
    assert kept.rows == 6 and kept.since == stamp(4)
    # 13:00:07+01:00 is 12:00:07Z.
    shifted = load_captured(
        uri(tmp_path), since=f"{DAY}T13:00:07+01:00", holdout_fraction=0, validation_split=0
    )
    assert shifted.train.texts == ["t7", "t8", "t9"]
    with pytest.raises(InputError, match="needs a time zone"):
        load_captured(uri(tmp_path), since=f"{DAY}T12:00:00")
    with pytest.raises(InputError, match="not an RFC 3339 time"):
        load_captured(uri(tmp_path), since="yesterday")


def test_open_segments_and_other_files_are_ignored_and_bad_lines_counted(tmp_path: Path) -> None:
    segment(tmp_path, "20261206T120000Z-000001.jsonl", [record("good-1"), record("good-2")])
    segment(tmp_path, "20261206T121000Z-000002.jsonl.partial", [record("open")])
    segment(tmp_path, "notes.txt", [record("txt")])
    no_time = record("no-time")
    del no_time["time"]
    bad = [
        "{not json",
        json.dumps([1, 2]),
        json.dumps(record("capture", schema="modelloop.dev/capture/v1")),
        json.dumps(record("no-text", text="")),
        json.dumps({**record("int-label"), "label": 3}),
        json.dumps(record("", text="no id")),
        json.dumps(no_time),
        json.dumps(record("bad-time", time="noon")),
        "",  # blank lines are not records, and not counted
    ]
    segment(tmp_path, "20261206T122000Z-000003.jsonl", bad)
    (tmp_path / "labelled" / DAY / "20261206T123000Z-000004.jsonl").write_bytes(b"\xff\xfe\n")
    splits = load_captured(uri(tmp_path / "labelled"), holdout_fraction=0.0, validation_split=0.0)
    assert splits.rows == 2 and len(splits.train) == 2
    assert splits.skipped == 9
    # The sink itself works too: only its labelled/ directory is read (not captures/).
    (tmp_path / "captures" / DAY).mkdir(parents=True)
    (tmp_path / "captures" / DAY / "a.jsonl").write_text(json.dumps({"schema": "x"}) + "\n")
    from_sink = load_captured(uri(tmp_path), holdout_fraction=0.0, validation_split=0.0)
    assert (from_sink.rows, from_sink.skipped) == (2, 9)


def test_max_rows_keeps_the_newest_training_rows_and_the_whole_holdout(tmp_path: Path) -> None:
    n = 300
    segment(tmp_path, "a.jsonl", [record(f"r{i}", text=str(i), time=stamp(i)) for i in range(n)])
    full = load_captured(uri(tmp_path), holdout_fraction=0.3, validation_split=0.2)
    capped = load_captured(uri(tmp_path), holdout_fraction=0.3, validation_split=0.2, max_rows=50)
    assert capped.holdout == full.holdout and capped.rows == full.rows == n
    assert len(capped.train) + len(capped.validation) == 50
    pool = sorted(int(t) for t in full.train.texts + full.validation.texts)
    kept = sorted(int(t) for t in capped.train.texts + capped.validation.texts)
    assert kept == pool[-50:]  # the newest
    assert set(capped.validation.texts) <= set(full.validation.texts)


def test_a_missing_directory_names_the_uri_and_remote_sinks_are_read(tmp_path: Path) -> None:
    missing = uri(tmp_path / "nowhere")
    with pytest.raises(InputError, match=f"captured data {missing}: does not exist"):
        load_captured(missing)
    with pytest.raises(InputError, match="holdout-fraction"):
        load_captured(uri(tmp_path), holdout_fraction=1.0)

    import fsspec  # type: ignore[import-untyped]

    fs = fsspec.filesystem("memory")
    lines = "".join(json.dumps(record(f"m{i}", time=stamp(i))) + "\n" for i in range(20))
    fs.pipe_file(f"/captured-test/labelled/{DAY}/a.jsonl", lines.encode())
    fs.pipe_file(f"/captured-test/labelled/{DAY}/b.jsonl.partial", lines.encode())
    try:
        remote = load_captured("memory://captured-test/labelled", holdout_fraction=0.0)
    finally:
        fs.rm("/captured-test", recursive=True)
    assert remote.rows == 20 and len(remote.train) + len(remote.validation) == 20


def test_pvc_uris_resolve_under_the_pvc_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELLOOP_PVC_ROOT", str(tmp_path))
    segment(tmp_path / "capture", "a.jsonl", [record("p1"), record("p2")])
    splits = load_captured("pvc://capture/labelled", holdout_fraction=0.0, validation_split=0.0)
    assert splits.rows == 2


# --- modelloop-train --captured-uri ---------------------------------------------------------

SINCE = stamp(10)


@pytest.fixture(scope="module")
def sink(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """70 labelled topic records (60 from SINCE on), one duplicate, one invalid line."""
    root = tmp_path_factory.mktemp("sink")
    rows = make_examples(70, 7)
    records: list[dict[str, Any] | str] = [
        record(f"req-{i:04d}", text=r["text"], label=r["label"], time=stamp(i))
        for i, r in enumerate(rows)
    ]
    first = rows[20]
    records.append(
        record(
            "req-0020",
            text=first["text"],
            label=first["label"],
            time=stamp(20),
            labelled_at=f"{DAY}T12:59:00.000Z",
        )
    )  # an older duplicate
    records.append("{torn")
    segment(root, "20261206T120000Z-000001.jsonl", records[:40])
    segment(root, "20261206T130000Z-000002.jsonl", records[40:])
    segment(root, "20261206T140000Z-000003.jsonl.partial", [record("open", label="weather")])
    return root


def captured_flags(model_dir: Path, data: Path, out: Path, sink: Path, *extra: str) -> list[str]:
    return [
        *train_flags(model_dir, data, out),
        "--epochs",
        "2",
        "--captured-uri",
        uri(sink / "labelled"),
        "--captured-since",
        SINCE,
        "--termination-log",
        str(out.parent / f"{out.name}-termination.json"),
        *extra,
    ]


@pytest.fixture(scope="module")
def captured_run(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, dataset_file: Path, sink: Path
) -> Path:
    out = tmp_path_factory.mktemp("captured-run") / "model"
    result = run_cli(
        "modelloop_trainer.train", *captured_flags(tiny_model_dir, dataset_file, out, sink)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_training_on_captured_rows_snapshots_the_data_it_used(
    captured_run: Path, sink: Path
) -> None:
    expected = load_captured(uri(sink / "labelled"), since=SINCE, validation_split=0.25)
    assert expected.rows == 60 and expected.skipped == 1
    snapshot_dir = captured_run / "dataset"
    train_bytes = (snapshot_dir / "train.jsonl").read_bytes()
    validation_bytes = (snapshot_dir / "validation.jsonl").read_bytes()
    train = [json.loads(line) for line in train_bytes.splitlines()]
    validation = [json.loads(line) for line in validation_bytes.splitlines()]
    captured_train = [r for r in train if r["source"] == "captured"]
    assert [r["text"] for r in captured_train] == expected.train.texts
    assert [r["label"] for r in captured_train] == expected.train.labels
    assert [r["text"] for r in validation if r["source"] == "captured"] == expected.validation.texts
    assert {r["source"] for r in train} == {"base", "captured"}
    assert set(train[0]) == {"text", "label", "source"}

    rows = {
        "baseTrain": 72,
        "capturedTrain": len(expected.train),
        "baseValidation": 24,
        "capturedValidation": len(expected.validation),
        "holdout": len(expected.holdout),
        "skipped": 1,
    }
    digest = "sha256:" + hashlib.sha256(train_bytes + validation_bytes).hexdigest()
    snapshot = json.loads((snapshot_dir / "snapshot.json").read_text())
    assert snapshot == {
        "digest": digest,
        "rows": rows,
        "datasetUri": snapshot["datasetUri"],
        "capturedUri": uri(sink / "labelled"),
        "since": SINCE,
        "holdoutFraction": 0.2,
    }
    assert (
        len(train) == 72 + rows["capturedTrain"]
        and len(validation) == 24 + rows["capturedValidation"]
    )

    manifest = read_manifest(captured_run)
    assert manifest["dataset"] == {"digest": digest, "rows": rows}
    assert manifest["lineage"]["datasetDigest"] == digest
    assert manifest["lineage"]["captured"] == {"uri": uri(sink / "labelled"), "since": SINCE}
    raw = (captured_run.parent / "model-termination.json").read_text()
    assert len(raw.encode()) < 4096
    summary = json.loads(raw)
    assert summary["status"] == "Succeeded"
    assert summary["dataset"] == {"digest": digest, "rows": rows}
    assert summary["samples"] == {"train": len(train), "validation": len(validation)}
    metrics = json.loads((captured_run / "metrics.json").read_text())
    assert metrics["samples"] == len(validation)


def test_the_snapshot_digest_is_stable_across_runs(
    captured_run: Path, tiny_model_dir: Path, dataset_file: Path, sink: Path, tmp_path: Path
) -> None:
    out = tmp_path / "again"
    # Other training settings, the same data: the same snapshot, byte for byte.
    flags = captured_flags(tiny_model_dir, dataset_file, out, sink, "--epochs", "1")
    result = run_cli("modelloop_trainer.train", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("train.jsonl", "validation.jsonl"):
        assert (out / "dataset" / name).read_bytes() == (
            captured_run / "dataset" / name
        ).read_bytes()
    first = json.loads((captured_run / "dataset" / "snapshot.json").read_text())
    second = json.loads((out / "dataset" / "snapshot.json").read_text())
    assert first["digest"] == second["digest"] and first["rows"] == second["rows"]

    # Without --captured-uri the base data still gets a digest (and a snapshot).
    base_out = tmp_path / "base-only"
    result = run_cli(
        "modelloop_trainer.train",
        *train_flags(tiny_model_dir, dataset_file, base_out, "--epochs", "1"),
        "--termination-log",
        str(tmp_path / "base-term.json"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    base = json.loads((tmp_path / "base-term.json").read_text())["dataset"]
    assert base["rows"] == {
        "baseTrain": 72,
        "capturedTrain": 0,
        "baseValidation": 24,
        "capturedValidation": 0,
        "holdout": 0,
        "skipped": 0,
    }
    base_bytes = b"".join(
        (base_out / "dataset" / n).read_bytes() for n in ("train.jsonl", "validation.jsonl")
    )
    assert base["digest"] == "sha256:" + hashlib.sha256(base_bytes).hexdigest() != first["digest"]
    # The base rows of the captured run are exactly the base-only run's rows.
    base_train = (base_out / "dataset" / "train.jsonl").read_bytes()
    assert (captured_run / "dataset" / "train.jsonl").read_bytes().startswith(base_train)


def test_a_resumed_run_trains_on_its_snapshot_even_when_new_rows_arrived(
    captured_run: Path, tiny_model_dir: Path, dataset_file: Path, sink: Path, tmp_path: Path
) -> None:
    own_sink = tmp_path / "sink"
    shutil.copytree(sink, own_sink)
    out = tmp_path / "resumed"
    flags = captured_flags(
        tiny_model_dir, dataset_file, out, own_sink, "--epochs", "3", "--checkpoint-every", "5"
    )
    kill_at_checkpoint(flags)
    written = (out / "dataset" / "snapshot.json").read_bytes()

    # The collector closes another segment meanwhile.
    rows = make_examples(30, 11)
    segment(
        own_sink,
        "20261206T150000Z-000004.jsonl",
        [
            record(f"new-{i}", text=r["text"], label=r["label"], time=stamp(3600 + i))
            for i, r in enumerate(rows)
        ],
    )
    result = run_cli("modelloop_trainer.train", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert any(e["event"] == "resume" for e in events)
    data = next(e for e in events if e["event"] == "data")
    assert "from the snapshot" in data["message"]
    assert (out / "dataset" / "snapshot.json").read_bytes() == written
    digest = json.loads(written)["digest"]
    assert digest == json.loads((captured_run / "dataset" / "snapshot.json").read_text())["digest"]
    assert read_manifest(out)["dataset"]["digest"] == digest


def test_captured_labels_outside_the_base_label_set_are_refused(
    tiny_model_dir: Path, dataset_file: Path, tmp_path: Path
) -> None:
    own_sink = tmp_path / "sink"
    segment(
        own_sink,
        "a.jsonl",
        [record(f"w{i}", label="weather", time=stamp(20 + i)) for i in range(3)]
        + [record(f"s{i}", time=stamp(30 + i)) for i in range(20)],
    )
    term = tmp_path / "term.json"
    result = run_cli(
        "modelloop_trainer.train",
        *captured_flags(tiny_model_dir, dataset_file, tmp_path / "m", own_sink),
        "--termination-log",
        str(term),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    message = json.loads(term.read_text())["message"]
    assert "labels ['weather'] are not among the base dataset's labels" in message
    assert "['business', 'sport', 'tech']" in message
    assert not (tmp_path / "m" / "dataset").exists()


def test_too_few_captured_rows_fail_before_training(
    tiny_model_dir: Path, dataset_file: Path, sink: Path, tmp_path: Path
) -> None:
    term = tmp_path / "term.json"
    result = run_cli(
        "modelloop_trainer.train",
        *captured_flags(tiny_model_dir, dataset_file, tmp_path / "m", sink),
        "--captured-min-rows",
        "1000",
        "--termination-log",
        str(term),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    expected = load_captured(uri(sink / "labelled"), since=SINCE, validation_split=0.25)
    usable = len(expected.train) + len(expected.validation)
    message = json.loads(term.read_text())["message"]
    assert message.startswith(
        f"only {usable} labelled rows since {SINCE} in {uri(sink / 'labelled')}; 1000 needed"
    )
    result = run_cli(
        "modelloop_trainer.train",
        *captured_flags(tiny_model_dir, dataset_file, tmp_path / "m", sink),
        "--captured-since",
        f"{DAY}T12:00:00",
    )
    assert result.returncode == 2 and "needs a time zone" in result.stderr


# --- warm start ----------------------------------------------------------------------------


def test_a_trained_model_is_a_warm_start_for_the_same_labels(
    trained_artifact: Path, dataset_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "warm"
    result = run_cli(
        "modelloop_trainer.train",
        *train_flags(trained_artifact, dataset_file, out),
        "--epochs",
        "1",
        "--learning-rate",
        "1e-7",
        "--termination-log",
        str(tmp_path / "term.json"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"warm_start": true' in result.stdout
    # One step-size-1e-7 epoch from the trained weights: still those weights, head included,
    # and still the trained model's accuracy (a fresh head would be at chance).
    before = load_file(str(trained_artifact / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert set(before) == set(after)
    for name in ("classifier.weight", "classifier.bias", *before):
        assert torch.allclose(before[name], after[name], atol=1e-4), name
    summary = json.loads((tmp_path / "term.json").read_text())
    trained = json.loads((trained_artifact / "metrics.json").read_text())
    assert summary["metrics"]["accuracy"] == pytest.approx(trained["accuracy"], abs=0.05)
    assert summary["metrics"]["accuracy"] >= 0.9


def test_a_warm_start_with_other_labels_is_refused(trained_artifact: Path, tmp_path: Path) -> None:
    rows = [
        {**r, "label": {"sport": "games"}.get(r["label"], r["label"])} for r in make_examples(30, 3)
    ]
    data = write_jsonl(tmp_path / "relabelled.jsonl", rows)
    term = tmp_path / "term.json"
    result = run_cli(
        "modelloop_trainer.train",
        *train_flags(trained_artifact, data, tmp_path / "m"),
        "--termination-log",
        str(term),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    message = json.loads(term.read_text())["message"]
    assert "a warm start needs the same labels" in message
    assert "['business', 'sport', 'tech']" in message and "'games'" in message


def test_the_reference_describes_the_captured_rows_too_and_the_optimizer_keeps_it(
    captured_run: Path, dataset_file: Path, tmp_path: Path
) -> None:
    snapshot = [
        json.loads(line)
        for name in ("train.jsonl", "validation.jsonl")
        for line in (captured_run / "dataset" / name).read_bytes().splitlines()
    ]
    trained = load_artifact(captured_run).reference_profile
    assert trained.class_source == "labels"
    assert trained.class_counts == tuple(
        sum(r["label"] == name for r in snapshot) for name in trained.labels
    )
    assert trained.inputs is not None and trained.inputs.samples == len(snapshot)
    out = tmp_path / "int8"
    # The base data only as --dataset-uri: the snapshot has the rest.
    code = optimize_main(optimize_flags(captured_run, dataset_file, out,
                                        '[{"type":"quantization"}]', "--max-accuracy-drop", "1",
                                        "--no-package", latency_samples=2))
    assert code == 0, (tmp_path / "int8-term.json").read_text()
    served = load_artifact(out).reference_profile
    assert served.class_counts == trained.class_counts
    assert served.inputs is not None and served.inputs.samples == len(snapshot)
    assert served.inputs.mean != trained.inputs.mean  # the int8 encoder's own embeddings
    # A snapshot of other data (consistent in itself) is refused, not used.
    other = tmp_path / "other"
    shutil.copytree(captured_run, other)
    rows = (other / "dataset" / "train.jsonl").read_bytes().splitlines(keepends=True)
    (other / "dataset" / "train.jsonl").write_bytes(b"".join(rows[1:]))
    meta = json.loads((other / "dataset" / "snapshot.json").read_text())
    meta["digest"] = "sha256:" + hashlib.sha256(
        b"".join(rows[1:]) + (other / "dataset" / "validation.jsonl").read_bytes()
    ).hexdigest()
    (other / "dataset" / "snapshot.json").write_text(json.dumps(meta))
    code = optimize_main([
        "--model-uri", uri(other), "--dataset-uri", uri(dataset_file),
        "--techniques", '[{"type":"quantization"}]', "--output-uri", uri(tmp_path / "x"),
        "--no-package", "--termination-log", str(tmp_path / "bad.json"),
    ])
    assert code != 0
    assert "the manifest records" in (tmp_path / "bad.json").read_text()
