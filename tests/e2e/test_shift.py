"""The closed loop's traffic shift (pure, no cluster): stable codes, balanced traffic that
no base model trained on."""

from __future__ import annotations

from collections import Counter

from . import shift


def test_coded_replaces_long_words_with_stable_codes_and_keeps_the_rest() -> None:
    text = "Chelsea beat Arsenal, and Chelsea fans sang."
    out = shift.coded(text)
    words = out.replace(",", "").replace(".", "").split()
    assert words[1] == "beat" and words[3] == "and" and words[5] == "fans" and words[6] == "sang"
    assert words[0] == words[4] == shift.code_word("chelsea") != "Chelsea"
    assert shift.code_word("Arsenal") == shift.code_word("arsenal") == words[2]
    assert shift.coded(text) == out


def test_traffic_is_balanced_unseen_and_never_repeats_a_text() -> None:
    from modelloop_trainer.datasets import DatasetSpec, load_splits

    traffic = shift.traffic(max_samples=150)
    splits = load_splits(DatasetSpec(uri="builtin://bbc-news", seed=42, validation_split=0.05))
    base = {*splits.train.texts[:150], *splits.validation.texts}
    originals = {text for text, _ in traffic.original}
    assert not originals & base
    assert len({text for text, _ in traffic.shifted}) == len(traffic.shifted) > 1500
    first = Counter(label for _, label in traffic.shifted[:50])
    assert len(first) == 5 and max(first.values()) - min(first.values()) <= 1, first
