"""Storage URIs (file, pvc, fsspec memory:// standing in for s3://) and dataset loading."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec  # type: ignore[import-untyped]
import pytest
from modelloop_trainer import train
from modelloop_trainer.artifact import load_artifact
from modelloop_trainer.datasets import DatasetSpec, load_examples, load_splits
from modelloop_trainer.errors import StorageError
from modelloop_trainer.storage import fetch, parse_uri, publish

from .conftest import make_examples, train_flags


def test_pvc_uris_resolve_under_the_mount_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELLOOP_PVC_ROOT", "/data/pvcs")
    assert parse_uri("pvc://models/run1/out").local_path == Path("/data/pvcs/models/run1/out")
    monkeypatch.delenv("MODELLOOP_PVC_ROOT")
    assert parse_uri("pvc://models/x").local_path == Path("/mnt/pvc/models/x")
    with pytest.raises(StorageError, match=r"pvc://models/\.\./etc: '\.\.' is not allowed"):
        parse_uri("pvc://models/../etc")


def test_remote_round_trip_through_fsspec(tmp_path: Path) -> None:
    source = tmp_path / "dir"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_text("A")
    (source / "sub" / "b.txt").write_text("B")
    location = parse_uri("memory://bucket/roundtrip")
    publish(source, location)
    copy = fetch(location, tmp_path / "copy")
    assert (copy / "a.txt").read_text() == "A" and (copy / "sub" / "b.txt").read_text() == "B"
    with pytest.raises(StorageError, match="memory://bucket/absent: does not exist"):
        fetch(parse_uri("memory://bucket/absent"))


def test_training_reads_and_writes_remote_uris(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Dataset in and model out through fsspec (memory:// in process, the s3:// code path)."""
    fs = fsspec.filesystem("memory")
    fs.pipe_file(
        "/bucket/data/topics.jsonl",
        "".join(json.dumps(r) + "\n" for r in make_examples(48, 3)).encode(),
    )
    flags = train_flags(tiny_model_dir, Path("/unused"), Path("/unused"))
    flags[flags.index("--dataset-uri") + 1] = "memory://bucket/data/topics.jsonl"
    flags[flags.index("--output-uri") + 1] = "memory://bucket/models/run1"
    code = train.main(
        [
            *flags,
            "--epochs",
            "1",
            "--checkpoint-every",
            "2",
            "--termination-log",
            str(tmp_path / "t.json"),
        ]
    )
    assert code == 0
    assert fs.exists("/bucket/models/run1/model.safetensors")
    assert not fs.exists("/bucket/models/run1/checkpoints")  # superseded by the final model
    local = fetch(parse_uri("memory://bucket/models/run1"), tmp_path / "model")
    assert load_artifact(local).labels == ["business", "sport", "tech"]
    summary = json.loads((tmp_path / "t.json").read_text())
    assert summary["outputUri"] == "memory://bucket/models/run1"


def test_bbc_news_is_read_in_sorted_order_with_five_classes() -> None:
    examples = load_examples("builtin://bbc-news")
    assert len(examples) == 2225
    assert sorted(set(examples.labels)) == [
        "business",
        "entertainment",
        "politics",
        "sports",
        "tech",
    ]
    assert examples.labels[0] == "business" and examples.labels[-1] == "tech"
    assert examples.texts == load_examples("builtin://bbc-news").texts


def test_rotten_tomatoes_keeps_only_labelled_snippets() -> None:
    examples = load_examples("builtin://rotten-tomatoes")
    assert sorted(set(examples.labels)) == ["fresh", "rotten"]
    assert len(examples) == 7403 + 5405


def test_splits_are_seeded_stratified_enough_and_capped(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(
        "body,topic\n"
        + "".join(f'"{r["text"]}, with a comma",{r["label"]}\n' for r in make_examples(60, 0))
    )
    spec = DatasetSpec(
        uri=f"file://{csv_path}",
        text_field="body",
        label_field="topic",
        validation_split=0.2,
        max_samples=30,
        seed=7,
    )
    splits = load_splits(spec)
    assert len(splits.validation) == 12 and len(splits.train) == 30
    assert splits.train.texts[0].endswith(", with a comma")
    assert splits.label_names == ["business", "sport", "tech"]
    assert load_splits(spec).train.texts == splits.train.texts  # same seed, same split
    other = load_splits(DatasetSpec(**{**spec.__dict__, "seed": 8}))
    assert other.train.texts != splits.train.texts
