"""The closed loop's inputs for the e2e test: a traffic shift and the data to retrain on.

The shift is in the topic mix: 60% of the requests are about sport, 10% about each other
topic, where the model was trained (and profiled) on an even mix. Its predicted-class PSI
against the reference profile is about 0.7, far over the 0.2 threshold. The retraining
data has the new mix, so the retrained model's reference profile (its predictions on its
own validation split) matches the traffic and the PSI falls back to sampling noise.
Traffic texts come from the quickstart's validation split, retraining data from its
training side: the two never overlap.
"""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

from . import loop

Json = dict[str, Any]
SHIFTED_TOPIC = "sports"
DATASET_PATH = "data/shifted-mix.jsonl"
"""Inside the `models` claim: the retraining TrainingJob reads pvc://models/<this>."""
MIX = {"sports": 0.6}
OTHER_SHARE = 0.1


def _splits() -> Any:
    from modelloop_trainer.datasets import DatasetSpec, load_splits

    tj = loop.manifest("10-trainingjob")["spec"]
    return load_splits(DatasetSpec(uri="builtin://bbc-news",
                                   validation_split=tj["dataset"]["validationSplit"],
                                   seed=tj["hyperparameters"].get("seed", 42)))


def traffic_pools() -> dict[str, list[str]]:
    """Validation articles by topic (never trained on by any model of the test)."""
    validation = _splits().validation
    pools: dict[str, list[str]] = {}
    for text, label in zip(validation.texts, validation.labels, strict=True):
        pools.setdefault(label, []).append(text)
    return pools


def shifted_batch(pools: dict[str, list[str]], index: int, size: int = 20) -> list[str]:
    """One batch in the shifted mix; `index` rotates through each topic's articles."""
    batch: list[str] = []
    for label, texts in sorted(pools.items()):
        count = round(size * MIX.get(label, OTHER_SHARE))
        batch += [texts[(index * count + i) % len(texts)] for i in range(count)]
    return batch


def send_shifted(address: str, model: str, pools: dict[str, list[str]], *,
                 batches: int) -> None:
    for index in range(batches):
        loop.predict(address, model, shifted_batch(pools, index))


def write_dataset(path: Path, *, total: int = 300, seed: int = 7) -> None:
    """Training-side articles in the shifted mix, as JSONL (`text`, `label`)."""
    train = _splits().train
    by_label: dict[str, list[str]] = {}
    for text, label in zip(train.texts, train.labels, strict=True):
        by_label.setdefault(label, []).append(text)
    rows: list[Json] = []
    for label, texts in sorted(by_label.items()):
        count = round(total * MIX.get(label, OTHER_SHARE))
        rows += [{"text": text, "label": label} for text in texts[:count]]
    random.Random(seed).shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def monitored_deployment(*, prometheus_url: str) -> Json:
    """The quickstart ModelDeployment with drift monitoring and automatic retraining."""
    mdep = copy.deepcopy(loop.manifest("30-modeldeployment"))
    tj_spec = copy.deepcopy(loop.training_job(loop.E2E)["spec"])
    tj_spec["dataset"] = {"uri": f"pvc://models/{DATASET_PATH}", "validationSplit": 0.4}
    tj_spec["hyperparameters"]["epochs"] = 2
    tj_spec["output"] = {"uri": "pvc://models/retrained"}
    oj_spec = copy.deepcopy(loop.manifest("20-optimizationjob")["spec"])
    del oj_spec["source"]
    oj_spec["output"] = {"uri": "pvc://models/retrained-int8"}
    mdep["spec"]["monitoring"] = {
        "prometheusUrl": prometheus_url, "interval": "5s", "window": "1m",
        "failureLimit": 2, "minSamples": 100, "onMissingData": "Inconclusive",
        "drift": {"max": 0.2}}
    mdep["spec"]["retrain"] = {
        "enabled": True, "promotion": "auto", "cooldown": "1h", "maxInFlight": 1,
        "maxPerDay": 1, "trainingJobTemplate": {"spec": tj_spec},
        "optimizationJobTemplate": {"spec": oj_spec}}
    return mdep
