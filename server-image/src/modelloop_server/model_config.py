"""Make TorchServe serve with the ModelDeployment's per-model settings, not the archive's.

TorchServe 0.12 reads a model's workers, batch size, batch delay, timeouts and queue size
from two places: the `models` JSON (and `job_queue_size`) of config.properties, which the
operator renders from the ModelDeployment's `server`, and the `model-config.yaml` inside the
`.mar`, which `modelloop-optimize` writes from the OptimizationJob's `packaging` so that the
archive also serves sensibly on its own (`torchserve --models x.mar`). When both set a key,
TorchServe takes the archive's for the models it loads at startup (checked against the real
server in tests/server/test_torchserve_serving.py). A management-API registration with
explicit parameters would win, but only for values other than TorchServe's defaults, and it
needs the model API, which stays disabled so that nothing in the pod can swap the model.

The ModelDeployment owns serving, so it must win for everything it sets. Before TorchServe
starts, `modelloop-serve` therefore compares the archive's model config with the config's
settings and, when they differ, writes a copy of the archive into a private model store
(under its work directory, an emptyDir in a pod) whose model config carries the config's
value for every key the config sets, including keys the archive leaves out (TorchServe
would fill those with its own defaults, not the config's); keys the config leaves out keep
the archive's values (`handler:` and the like are never touched). The original archive,
often on a read-only volume, is never modified; one whose model config already states every
value is served as it is, uncopied.
"""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from modelloop_server.torchserve import ServerConfig

logger = logging.getLogger(__name__)

MANIFEST = "MAR-INF/MANIFEST.json"
DEFAULT_CONFIG_FILE = "model-config.yaml"
# The per-model settings that config.properties' `models` entry and the archive's model
# config share, under the same names.
TUNING_KEYS = (
    "minWorkers",
    "maxWorkers",
    "batchSize",
    "maxBatchDelay",
    "responseTimeout",
    "startupTimeout",
    "jobQueueSize",
)
_COPY_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """A model archive whose manifest or model config cannot be read."""


@dataclass(frozen=True)
class ArchiveConfig:
    """What an archive says about itself: its version and its model config (if any)."""

    version: str | None
    config_file: str | None
    model_config: Mapping[str, Any]


def read_archive_config(archive: Path) -> ArchiveConfig:
    """The version and model config of a `.mar` (a zip with `MAR-INF/MANIFEST.json`)."""
    try:
        with zipfile.ZipFile(archive) as mar:
            names = set(mar.namelist())
            if MANIFEST not in names:
                raise ArchiveError(f"{archive}: not a model archive (no {MANIFEST})")
            manifest = json.loads(mar.read(MANIFEST))
            model = manifest.get("model") if isinstance(manifest, dict) else None
            if not isinstance(model, dict):
                raise ArchiveError(f"{archive}: {MANIFEST} has no model section")
            config_file = model.get("configFile") or None
            if config_file is not None and config_file not in names:
                raise ArchiveError(f"{archive}: the manifest names {config_file}, not in it")
            parsed = yaml.safe_load(mar.read(config_file)) if config_file else None
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError,
            yaml.YAMLError) as exc:
        raise ArchiveError(f"cannot read model archive {archive}: {exc}") from exc
    if not isinstance(parsed, dict | None):
        raise ArchiveError(f"{archive}: {config_file} is not a YAML mapping")
    version = model.get("modelVersion")
    return ArchiveConfig(
        version=str(version) if version is not None else None,
        config_file=config_file,
        model_config=parsed or {},
    )


def deployment_settings(config: ServerConfig, version: str | None) -> dict[str, Any]:
    """The per-model settings config.properties sets for an archive of `version`.

    TorchServe itself only applies the `models` entry of the archive's exact version; the
    config is rendered for this one model, so when no entry has that version, the entry
    marked `defaultVersion` (else the only one) is the ModelDeployment's choice all the same.
    """
    entries = config.model_settings
    entry: Mapping[str, Any] | None = entries.get(version) if version is not None else None
    if entry is None:
        defaults = [e for e in entries.values() if e.get("defaultVersion") is True]
        if len(defaults) == 1:
            entry = defaults[0]
        elif len(entries) == 1:
            entry = next(iter(entries.values()))
    settings = {k: entry[k] for k in TUNING_KEYS if entry is not None and k in entry}
    if "jobQueueSize" not in settings and config.job_queue_size is not None:
        settings["jobQueueSize"] = config.job_queue_size
    return settings


def overridden(model_config: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The archive's values that `settings` replace (key -> the archive's value, or None when
    the archive does not set it); empty when the archive already states every one.

    A key the archive leaves out is replaced too: once an archive has a model config,
    TorchServe fills the keys it lacks with its own defaults (startupTimeout 120 s,
    verified), not with config.properties' values."""
    return {k: model_config.get(k) for k, v in settings.items() if model_config.get(k) != v}


def enforce_deployment_settings(config: ServerConfig, private_store: Path) -> ServerConfig:
    """`config` itself when the archive already agrees with it; otherwise `config` pointing
    at a copy of the archive in `private_store` whose model config says what `config` does."""
    archive = config.model_store / config.mar_file
    found = read_archive_config(archive)
    settings = deployment_settings(config, found.version)
    changes = overridden(found.model_config, settings)
    if not changes:
        return config
    logger.info(
        "the ModelDeployment's settings replace the archive's: %s",
        ", ".join(f"{k} {changes[k]} -> {settings[k]}" for k in sorted(changes)),
    )
    private_store.mkdir(parents=True, exist_ok=True)
    rewrite_archive(
        archive,
        private_store / config.mar_file,
        config_file=found.config_file,
        model_config={**found.model_config, **settings},
    )
    return replace(config, model_store=private_store)


def rewrite_archive(
    source: Path, dest: Path, *, config_file: str | None, model_config: Mapping[str, Any]
) -> None:
    """Copy `source` to `dest` with `model_config` as its model config (added to the
    manifest when the archive had none). Entries are stored uncompressed: TorchServe
    unpacks the copy once at start, and deflating a large model again would only cost CPU."""
    with zipfile.ZipFile(source) as src:
        names = set(src.namelist())
        manifest: dict[str, Any] = json.loads(src.read(MANIFEST))
        if config_file is None:
            config_file = _free_name(names)
            manifest.setdefault("model", {})["configFile"] = config_file
        replaced = {
            config_file: yaml.safe_dump(dict(model_config), sort_keys=False).encode(),
            MANIFEST: json.dumps(manifest, indent=4).encode(),
        }
        partial = dest.with_name(dest.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as out:
            for info in src.infolist():
                copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
                copy.external_attr = info.external_attr
                if info.filename in replaced:
                    out.writestr(copy, replaced.pop(info.filename))
                    continue
                with src.open(info) as reader, out.open(copy, "w") as writer:
                    shutil.copyfileobj(reader, writer, _COPY_CHUNK)
            for name, data in replaced.items():
                out.writestr(name, data)
    partial.replace(dest)


def _free_name(names: set[str]) -> str:
    name, n = DEFAULT_CONFIG_FILE, 1
    while name in names:
        name, n = f"modelloop-config-{n}.yaml", n + 1
    return name
