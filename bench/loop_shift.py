"""The loop benchmark's traffic shift: a client starts sending text from OCR'd print and
speech-to-text, and a share of the letters in each word comes out wrong. The quickstart
model, trained on clean articles, has never seen such words: its word pieces break apart,
and its live accuracy drops while its predicted-class mix can stay almost even, so only
ground truth from feedback shows the damage. Retraining on the labelled captures teaches
it the noisy forms.

Every text comes from an article no model of the loop trains on as base data: the base
dataset is the quickstart's `builtin://bbc-news` with `maxSamples`, so the training split's
articles after the first `maxSamples` are never trained on; the validation split stays the
held-out set of the quickstart test. The noise is seeded per article, so the traffic is
the same in every run; the pools are interleaved by topic so that any prefix of the
traffic is balanced.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

NOISE = 0.2
"""The share of letters that come out wrong (replaced, dropped or doubled)."""


@dataclass(frozen=True)
class Traffic:
    """(text, true label) in the order users send them."""

    shifted: list[tuple[str, str]]
    """Noisy never-trained-on articles, topics interleaved."""
    original: list[tuple[str, str]]
    """Clean never-trained-on articles (the traffic the first model was trained for)."""


def noisy(text: str, seed: int, rate: float = NOISE) -> str:
    """`text` with `rate` of its letters replaced, dropped or doubled, seeded."""
    rng = random.Random(seed)
    out: list[str] = []
    for char in text:
        if not char.isalpha() or rng.random() >= rate:
            out.append(char)
            continue
        action = rng.randrange(3)
        if action == 0:
            out.append(rng.choice(string.ascii_lowercase))
        elif action == 2:
            out.append(char * 2)
    return "".join(out)


def unseen_articles(*, max_samples: int, seed: int = 42,
                    validation_split: float = 0.05) -> list[tuple[str, str]]:
    """Training-side articles after the first `max_samples`: in no model's base data."""
    from modelloop_trainer.datasets import DatasetSpec, load_splits

    train = load_splits(DatasetSpec(uri="builtin://bbc-news", seed=seed,
                                    validation_split=validation_split)).train
    return list(zip(train.texts, train.labels, strict=True))[max_samples:]


def _interleave(by_label: dict[str, list[tuple[str, str]]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pools = [list(v) for _, v in sorted(by_label.items())]
    while any(pools):
        for pool in pools:
            if pool:
                out.append(pool.pop(0))
    return out


def traffic(*, max_samples: int = 150, validation_split: float = 0.05, noise: float = NOISE,
            seed: int = 7) -> Traffic:
    """The shifted and the original traffic, each balanced over the five topics, from
    articles a TrainingJob on `builtin://bbc-news` with these settings never trains on
    (the quickstart's e2e settings by default)."""
    articles = unseen_articles(max_samples=max_samples, validation_split=validation_split)
    random.Random(seed).shuffle(articles)
    shifted: dict[str, list[tuple[str, str]]] = {}
    original: dict[str, list[tuple[str, str]]] = {}
    for index, (text, label) in enumerate(articles):
        if index % 8 == 0:  # an eighth stays clean: the original domain, for the benchmark
            original.setdefault(label, []).append((text, label))
        else:
            page = noisy(text, seed * 100_000 + index, noise)
            shifted.setdefault(label, []).append((page, label))
    return Traffic(shifted=_interleave(shifted), original=_interleave(original))
