"""Shared API types: URIs, durations, quantities, and readable validation errors."""

from __future__ import annotations

from datetime import timedelta

import pytest
from modelloop_operator.api import (
    Condition,
    DatasetSpec,
    NodeResources,
    RunPolicy,
    Scheduling,
    StorageSpec,
    TrainingJobSpec,
    check_uri,
    describe_validation_error,
    parse_duration,
    pvc_claim,
    uri_scheme,
)
from modelloop_operator.api.common import OUTPUT_URI_SCHEMES, SOURCE_URI_SCHEMES
from pydantic import ValidationError


@pytest.mark.parametrize("text,expected", [
    ("30s", timedelta(seconds=30)),
    ("5m", timedelta(minutes=5)),
    ("1h", timedelta(hours=1)),
    ("1h30m", timedelta(hours=1, minutes=30)),
    ("250ms", timedelta(milliseconds=250)),
    ("2h0m5s", timedelta(hours=2, seconds=5)),
])
def test_parse_duration_reads_go_style_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5 m", "1d", "-5m", "5M", "1.5h", "m5", "5mm"])
def test_parse_duration_rejects_what_the_schema_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="must be a duration such as 30s, 5m or 1h"):
        parse_duration(text)


@pytest.mark.parametrize("uri", [
    "builtin://bbc-news", "file:///data/x.csv", "pvc://models/run1", "pvc://models",
    "pvc://my.claim/a/b/c.jsonl", "s3://bucket/key",
])
def test_source_uris_accepted(uri: str) -> None:
    assert check_uri(uri, SOURCE_URI_SCHEMES) == uri


@pytest.mark.parametrize("uri", [
    "http://x", "https://x/y", "bbc-news", "/data/x.csv", "pvc://Models/x", "pvc://-bad/x",
    "s3://bucket/with space", "file://", "gs://bucket/x",
])
def test_source_uris_rejected_with_the_allowed_schemes(uri: str) -> None:
    with pytest.raises(ValueError, match=r"scheme builtin://, file://, pvc://, s3://"):
        check_uri(uri, SOURCE_URI_SCHEMES)


def test_output_uris_exclude_builtin() -> None:
    with pytest.raises(ValueError, match="scheme file://, pvc://, s3://"):
        check_uri("builtin://bbc-news", OUTPUT_URI_SCHEMES)


def test_uri_helpers_name_scheme_and_claim() -> None:
    assert uri_scheme("s3://b/k") == "s3"
    assert pvc_claim("pvc://models/a/b") == "models"
    assert pvc_claim("pvc://models") == "models"
    assert pvc_claim("s3://models/a") is None


@pytest.mark.parametrize("value", [2, 0, "500m", "4Gi", "1.5", "1e3", "16"])
def test_quantities_accepted(value: int | str) -> None:
    assert NodeResources(cpu=value).cpu == value


@pytest.mark.parametrize("value,words", [
    (-1, "must not be negative"),
    ("4 GB", "must be a Kubernetes quantity"),
    ("-1", "must be a Kubernetes quantity"),
    ("lots", "must be a Kubernetes quantity"),
])
def test_quantities_rejected_readably(value: int | str, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        NodeResources(memory=value)
    assert words in describe_validation_error(err.value)


def test_spec_defaults_match_the_api_sketch() -> None:
    dataset = DatasetSpec(uri="builtin://bbc-news")
    assert (dataset.text_field, dataset.label_field, dataset.validation_split) == (
        "text", "label", 0.1)
    assert dataset.validation_uri is None and dataset.max_samples is None
    assert NodeResources() == NodeResources(gpus=0, cpu=None, memory=None)
    policy = RunPolicy()
    assert (policy.backoff_limit, policy.suspend) == (2, False)
    assert policy.active_deadline_seconds is None and policy.ttl_seconds_after_finished is None
    assert Scheduling().node_selector == {} and Scheduling().tolerations == []
    assert StorageSpec().secret_name is None


def test_specs_accept_camel_and_snake_names_and_dump_camel() -> None:
    by_alias = DatasetSpec.model_validate({"uri": "builtin://bbc-news", "textField": "body"})
    by_name = DatasetSpec.model_validate({"uri": "builtin://bbc-news", "text_field": "body"})
    assert by_alias == by_name
    dumped = by_alias.model_dump(exclude_none=True)
    assert dumped["textField"] == "body" and "text_field" not in dumped
    assert DatasetSpec.model_validate(dumped) == by_alias


def test_specs_reject_unknown_fields() -> None:
    with pytest.raises(ValidationError) as err:
        DatasetSpec.model_validate({"uri": "builtin://bbc-news", "textfield": "x"})
    assert describe_validation_error(err.value) == "textfield: unknown field"


def test_status_models_ignore_unknown_fields() -> None:
    cond = Condition.model_validate({"type": "Ready", "status": "True", "futureField": 1})
    assert cond.type == "Ready" and cond.reason == ""


def test_describe_validation_error_is_one_line_with_yaml_paths() -> None:
    bad = {"model": {"uri": "http://x"}, "numNodes": 0, "output": {"uri": "pvc://m/x"},
           "resources": {"gpus": -1}}
    with pytest.raises(ValidationError) as err:
        TrainingJobSpec.model_validate(bad)
    text = describe_validation_error(err.value, prefix="spec")
    assert "\n" not in text
    assert text.split("; ") == [
        "spec.model.uri: must be a URI with scheme builtin://, file://, pvc://, s3:// "
        "(pvc://<claim>/<path>), without spaces (got 'http://x')",
        "spec.dataset: required",
        "spec.numNodes: should be greater than or equal to 1",
        "spec.resources.gpus: should be greater than or equal to 0",
    ]


def test_describe_validation_error_names_list_items() -> None:
    with pytest.raises(ValidationError) as err:
        Scheduling.model_validate({"tolerations": [{"operator": "Exists"},
                                                   {"operator": "Sometimes"}]})
    assert describe_validation_error(err.value).startswith(
        "tolerations[1].operator: should be 'Exists' or 'Equal'")
