"""Server-side apply bodies survive the API server's YAML parser (found by the admission
fuzzing in tests/cluster/test_admission_fuzz.py: an emoji in a pod annotation made every
apply of the Job fail with "yaml: found invalid Unicode character escape code")."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from modelloop_operator.kube import apply_patch_body


@pytest.mark.parametrize("value", [
    "emoji-\U0001f600", "名前 é", "\x00\x1f\u008e\u2028", "back\\ud83d\\ude00",
    "\\\U0001f600", "plain",
])
def test_apply_body_reads_back_the_same_as_yaml_and_json(value: str) -> None:
    manifest: dict[str, Any] = {"metadata": {"annotations": {"note": value}}, "n": [1, 2.5]}
    body = apply_patch_body(manifest)
    assert yaml.safe_load(body.decode()) == manifest
    assert json.loads(body) == manifest


def test_apply_body_has_no_surrogate_escapes() -> None:
    body = apply_patch_body({"note": "\U0001f600"})
    assert b"\\ud83d" not in body
    assert "\U0001f600".encode() in body
