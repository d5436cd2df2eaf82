"""The sliding window of recent predictions that drift is measured on, shared by all workers.

TorchServe runs each worker as its own process, and every worker sees only its share of the
traffic. A window per worker would export one drift score per worker under the same series,
each overwriting the other's. So the window lives in one small SQLite database that every
worker of the model appends to and reads from (WAL mode; each batch is one short
transaction): the score any worker exports is the pod's score.

The window keeps at most `max_samples` predictions, none older than `max_age_s`: bounded in
count so that a busy server measures recent traffic, bounded in age so that a quiet server
does not keep judging yesterday's predictions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from modelloop_server.drift import WindowCounts

DEFAULT_MAX_SAMPLES = 1000
DEFAULT_MAX_AGE_S = 3600.0
_BUSY_TIMEOUT_S = 5.0


def _schema(input_components: int) -> str:
    """The window's tables. With input components, each prediction row carries its bins
    (`in0` ...) and triggers keep `input_counts` (component, bin -> rows) in step with
    every insert and trim, so that reading k histograms costs k x bins rows, not k scans of
    the window (8 GROUP BYs over 1,000 rows took ~1.1 ms a batch, more than the rest of the
    bookkeeping together)."""
    inputs = "".join(f",\n    in{j} INTEGER NOT NULL" for j in range(input_components))
    schema = f"""
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    class INTEGER NOT NULL,
    confidence_bin INTEGER NOT NULL{inputs}
);
CREATE INDEX IF NOT EXISTS predictions_at ON predictions (at);
"""
    if not input_components:
        return schema
    added = "\n".join(
        f"    INSERT INTO input_counts (component, bin, n) VALUES ({j}, NEW.in{j}, 1)"
        f" ON CONFLICT (component, bin) DO UPDATE SET n = n + 1;"
        for j in range(input_components)
    )
    removed = "\n".join(
        f"    UPDATE input_counts SET n = n - 1 WHERE component = {j} AND bin = OLD.in{j};"
        for j in range(input_components)
    )
    return schema + f"""
CREATE TABLE IF NOT EXISTS input_counts (
    component INTEGER NOT NULL,
    bin INTEGER NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (component, bin)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS input_counts_add AFTER INSERT ON predictions BEGIN
{added}
END;
CREATE TRIGGER IF NOT EXISTS input_counts_remove AFTER DELETE ON predictions BEGIN
{removed}
END;
"""


@dataclass(frozen=True)
class Observation:
    """One prediction as the window stores it: indices only, never the text."""

    class_index: int
    confidence_bin: int
    input_bins: tuple[int, ...] = ()
    """The bin of each input component (empty when the profile has no input section)."""


class PredictionWindow:
    """A count- and age-bounded window of predictions in a SQLite file.

    `num_classes`, `num_confidence_bins` and `input_bins` (bins per input component) size
    the counts returned; observations outside them are rejected, since they mean the caller
    binned against another profile.
    """

    def __init__(
        self,
        path: Path,
        *,
        num_classes: int,
        num_confidence_bins: int,
        max_samples: int = DEFAULT_MAX_SAMPLES,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        input_bins: tuple[int, ...] = (),
    ) -> None:
        if num_classes < 1 or num_confidence_bins < 1:
            raise ValueError("a window needs at least one class and one confidence bin")
        if max_samples < 1:
            raise ValueError(f"max_samples must be >= 1, got {max_samples}")
        if max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0, got {max_age_s}")
        self.path = path
        self.num_classes = num_classes
        self.num_confidence_bins = num_confidence_bins
        self.max_samples = max_samples
        self.max_age_s = max_age_s
        self.input_bins = input_bins
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below), so that a
        # batch's insert, trim and count see one consistent window across processes.
        self._db = sqlite3.connect(
            str(path), timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")  # losing the window in a crash is fine
        self._db.executescript(_schema(len(input_bins)))

    def close(self) -> None:
        self._db.close()

    def record(self, observations: Sequence[Observation], *, now: float) -> WindowCounts:
        """Add `observations` made at time `now` (seconds), trim, and return the window."""
        for obs in observations:
            if not 0 <= obs.class_index < self.num_classes:
                raise ValueError(f"class index {obs.class_index} outside 0..{self.num_classes - 1}")
            if not 0 <= obs.confidence_bin < self.num_confidence_bins:
                raise ValueError(
                    f"confidence bin {obs.confidence_bin} outside 0..{self.num_confidence_bins - 1}"
                )
            if len(obs.input_bins) != len(self.input_bins) or any(
                not 0 <= b < n for b, n in zip(obs.input_bins, self.input_bins, strict=True)
            ):
                raise ValueError(
                    f"input bins {obs.input_bins} do not fit the window's {self.input_bins}"
                )
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            columns = "".join(f", in{j}" for j in range(len(self.input_bins)))
            marks = ", ?" * len(self.input_bins)
            cur.executemany(
                f"INSERT INTO predictions (at, class, confidence_bin{columns}) "
                f"VALUES (?, ?, ?{marks})",
                [(now, o.class_index, o.confidence_bin, *o.input_bins) for o in observations],
            )
            cur.execute("DELETE FROM predictions WHERE at < ?", (now - self.max_age_s,))
            cur.execute(
                "DELETE FROM predictions WHERE id <= (SELECT MAX(id) FROM predictions) - ?",
                (self.max_samples,),
            )
            counts = self._counts(cur)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return counts

    def counts(self, *, now: float) -> WindowCounts:
        """The window as of `now`, without adding anything (age trimming applies)."""
        return self.record([], now=now)

    def _counts(self, cur: sqlite3.Cursor) -> WindowCounts:
        classes = [0] * self.num_classes
        bins = [0] * self.num_confidence_bins
        for index, n in cur.execute("SELECT class, COUNT(*) FROM predictions GROUP BY class"):
            classes[index] = n
        for index, n in cur.execute(
            "SELECT confidence_bin, COUNT(*) FROM predictions GROUP BY confidence_bin"
        ):
            bins[index] = n
        inputs: list[list[int]] = [[0] * size for size in self.input_bins]
        if inputs:
            for component, index, n in cur.execute(
                "SELECT component, bin, n FROM input_counts WHERE n > 0"
            ):
                inputs[component][index] = n
        return WindowCounts(classes=tuple(classes), confidence_bins=tuple(bins),
                            input_bins=tuple(tuple(c) for c in inputs))
