"""The closed loop's traffic shift, shared by the e2e test, `make demo` and
bench/loop_quality.py: the same five topics in a vocabulary the first model never saw.

`coded` (the loop's shift): a client's gateway pseudonymises text before it reaches the
model, as a privacy filter does: every word of six letters or more becomes a stable code
word (the same word always gives the same code). The topics do not change, but most of the
words that tell them apart do, so the quickstart model's accuracy drops by 22-26
points; because the codes are stable, labelled traffic teaches them and a retrain wins most
of it back (bench/results/loop_quality.json). `noisy` is the benchmark's other shift
(letters replaced, dropped or doubled, as OCR sends them): its drop is mostly noise, and
retraining wins back only a few points.

Every text comes from an article no model of the loop trains on as base data: the base
dataset is the quickstart's `builtin://bbc-news` with `maxSamples`, so the training split's
articles after the first `maxSamples` are never trained on. The traffic is the same in
every run (seeded), and interleaved by topic so that any prefix of it is balanced.
"""

from __future__ import annotations

import hashlib
import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

NOISE = 0.2
"""`noisy`: the share of letters that come out wrong (replaced, dropped or doubled)."""
CODED_MIN_LETTERS = 6
"""`coded`: words of at least this many letters are replaced."""
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Traffic:
    """(text, true label) in the order users send them."""

    shifted: list[tuple[str, str]]
    """Shifted never-trained-on articles, topics interleaved."""
    original: list[tuple[str, str]]
    """Unchanged never-trained-on articles (the traffic the first model was trained for)."""


def code_word(word: str) -> str:
    """The stable code of `word` (case-insensitive): two or three consonant-vowel pairs."""
    digest = hashlib.sha256(word.lower().encode()).digest()
    pairs = 2 + digest[0] % 2
    return "".join(_CONSONANTS[digest[1 + 2 * i] % len(_CONSONANTS)]
                   + _VOWELS[digest[2 + 2 * i] % len(_VOWELS)] for i in range(pairs))


def coded(text: str, _seed: int = 0) -> str:
    """`text` with every word of CODED_MIN_LETTERS letters or more replaced by its code."""
    return _WORD.sub(lambda m: code_word(m.group(0)) if len(m.group(0)) >= CODED_MIN_LETTERS
                     else m.group(0), text)


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


SHIFTS: dict[str, Callable[[str, int], str]] = {"coded": coded, "noisy": noisy}


def unseen_articles(*, max_samples: int, seed: int = 42,
                    validation_split: float = 0.05) -> list[tuple[str, str]]:
    """Training-side articles after the first `max_samples`: in no model's base data.
    BBC News holds some articles twice; a text that is also in the base data or the
    validation split is left out, and each text comes once."""
    from modelloop_trainer.datasets import DatasetSpec, load_splits

    splits = load_splits(DatasetSpec(uri="builtin://bbc-news", seed=seed,
                                     validation_split=validation_split))
    seen = {*splits.train.texts[:max_samples], *splits.validation.texts}
    out: list[tuple[str, str]] = []
    for text, label in list(zip(splits.train.texts, splits.train.labels,
                                strict=True))[max_samples:]:
        if text not in seen:
            seen.add(text)
            out.append((text, label))
    return out


def _interleave(by_label: dict[str, list[tuple[str, str]]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pools = [list(v) for _, v in sorted(by_label.items())]
    while any(pools):
        for pool in pools:
            if pool:
                out.append(pool.pop(0))
    return out


def traffic(*, shift: Callable[[str, int], str] = coded, max_samples: int = 150,
            validation_split: float = 0.05, seed: int = 7) -> Traffic:
    """The shifted and the original traffic, each balanced over the five topics, from
    articles a TrainingJob on `builtin://bbc-news` with these settings never trains on
    (the quickstart's e2e settings by default)."""
    articles = unseen_articles(max_samples=max_samples, validation_split=validation_split)
    random.Random(seed).shuffle(articles)
    shifted: dict[str, list[tuple[str, str]]] = {}
    original: dict[str, list[tuple[str, str]]] = {}
    for index, (text, label) in enumerate(articles):
        if index % 8 == 0:  # an eighth stays unchanged: the original domain, for comparison
            original.setdefault(label, []).append((text, label))
        else:
            shifted.setdefault(label, []).append((shift(text, seed * 100_000 + index), label))
    return Traffic(shifted=_interleave(shifted), original=_interleave(original))
