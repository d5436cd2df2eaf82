"""Parsing the trainer's termination message: good, truncated, garbage (never raises)."""

from __future__ import annotations

import json

import pytest
from modelloop_operator.reconcilers.termination import MESSAGE_LIMIT, parse_termination_message

GOOD = {"v": 1, "kind": "train", "status": "Succeeded", "exitCode": 0, "message": "done",
        "metrics": {"accuracy": 0.97, "f1_macro": 0.96, "loss": 0.12},
        "outputUri": "pvc://models/run1", "checksum": "sha256:abc",
        "labels": ["business", "entertainment"], "samples": {"train": 1500, "validation": 167}}


def test_a_good_message_gives_every_field() -> None:
    parsed = parse_termination_message(json.dumps(GOOD, separators=(",", ":")))
    assert parsed.error is None
    summary = parsed.summary
    assert summary is not None
    assert summary.metrics == {"accuracy": 0.97, "f1_macro": 0.96, "loss": 0.12}
    assert (summary.status, summary.exit_code, summary.message) == ("Succeeded", 0, "done")
    assert (summary.output_uri, summary.checksum) == ("pvc://models/run1", "sha256:abc")
    assert summary.labels == ("business", "entertainment")
    assert summary.raw["samples"] == {"train": 1500, "validation": 167}


def test_non_numeric_and_non_finite_metrics_are_dropped() -> None:
    doc = {"metrics": {"accuracy": 0.9, "note": "x", "flag": True, "nan": float("nan"),
                       "steps": 10}}
    summary = parse_termination_message(json.dumps(doc)).summary
    assert summary is not None
    assert summary.metrics == {"accuracy": 0.9, "steps": 10.0}


def test_wrong_types_are_ignored_not_fatal() -> None:
    doc = {"metrics": [1, 2], "exitCode": "3", "labels": "a,b", "outputUri": 5}
    summary = parse_termination_message(json.dumps(doc)).summary
    assert summary is not None
    assert summary.metrics == {} and summary.exit_code is None
    assert summary.labels == () and summary.output_uri is None


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_missing_message(text: str | None) -> None:
    parsed = parse_termination_message(text)
    assert parsed.summary is None
    assert parsed.error == "the container left no termination message"


def test_truncated_at_the_kubelet_limit_says_so() -> None:
    text = json.dumps({**GOOD, "message": "x" * 5000})[:MESSAGE_LIMIT]
    parsed = parse_termination_message(text)
    assert parsed.summary is None
    assert parsed.error is not None and "4096-byte limit" in parsed.error


def test_garbage_is_reported_with_a_preview() -> None:
    parsed = parse_termination_message("Traceback (most recent call last):\n  boom")
    assert parsed.summary is None
    assert parsed.error is not None
    assert parsed.error.startswith("termination message is not JSON")
    assert "Traceback" in parsed.error


def test_json_that_is_not_an_object() -> None:
    parsed = parse_termination_message("[1, 2]")
    assert parsed.summary is None
    assert parsed.error == "termination message is JSON but not an object (list)"


def test_pathologically_nested_json_does_not_crash() -> None:
    parsed = parse_termination_message("[" * 100_000)
    assert parsed.summary is None and parsed.error is not None
