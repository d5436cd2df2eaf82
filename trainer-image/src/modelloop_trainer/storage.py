"""Storage URIs: where models and datasets come from and where outputs go.

Schemes: `file:///abs/path`, `pvc://claim/path` (a claim the operator mounted at
`${MODELLOOP_PVC_ROOT:-/mnt/pvc}/claim`), `s3://bucket/key` through fsspec/s3fs, and
`memory://` (fsspec's in-process filesystem, for tests). `builtin://` names are resolved by
the callers that know them (datasets.py, models.py), not here.

Remote locations are used through a local mirror: inputs are downloaded once, outputs are
written to a local staging directory and uploaded (`publish`), which keeps the training
code free of I/O branches and makes an upload all-or-nothing per file. Every failure names
the URI, because that is what the user has to fix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from modelloop_trainer.errors import StorageError

LOCAL_SCHEMES = ("file", "pvc")
REMOTE_SCHEMES = ("s3", "memory")
PVC_ROOT_ENV = "MODELLOOP_PVC_ROOT"
DEFAULT_PVC_ROOT = "/mnt/pvc"


@dataclass(frozen=True)
class Location:
    """A parsed storage URI."""

    uri: str
    scheme: str
    # Local path for file:// and pvc://; the fsspec path (bucket/key) for remote schemes.
    path: str

    @property
    def is_local(self) -> bool:
        return self.scheme in LOCAL_SCHEMES

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise StorageError(f"{self.uri}: not a local location")
        return Path(self.path)

    def child(self, name: str) -> Location:
        """The location of `name` inside this one (a file or a subdirectory)."""
        return Location(
            uri=self.uri.rstrip("/") + "/" + name,
            scheme=self.scheme,
            path=self.path.rstrip("/") + "/" + name,
        )

    def filesystem(self) -> Any:
        """The fsspec filesystem of a remote location (imported lazily: s3fs is optional)."""
        import fsspec  # type: ignore[import-untyped]

        try:
            return fsspec.filesystem(self.scheme)
        except (ImportError, ValueError) as exc:
            raise StorageError(f"{self.uri}: no filesystem for {self.scheme}:// ({exc})") from exc

    def exists(self) -> bool:
        if self.is_local:
            return self.local_path.exists()
        return bool(_remote_call(self, "exists", self.path))

    def is_dir(self) -> bool:
        if self.is_local:
            return self.local_path.is_dir()
        return bool(_remote_call(self, "isdir", self.path))


def parse_uri(uri: str) -> Location:
    """Parse and validate a storage URI; a bad one raises StorageError naming it."""
    if not uri or not isinstance(uri, str):
        raise StorageError(f"empty storage URI {uri!r}")
    parsed = urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise StorageError(f"{uri}: file URIs must be absolute (file:///path), got a host")
        if not parsed.path.startswith("/"):
            raise StorageError(f"{uri}: file URIs must be absolute (file:///path)")
        return Location(uri=uri, scheme="file", path=parsed.path)
    if scheme == "pvc":
        claim, rest = parsed.netloc, parsed.path.strip("/")
        if not claim:
            raise StorageError(f"{uri}: pvc URIs are pvc://<claim>/<path>; the claim is missing")
        if ".." in Path(rest).parts:
            raise StorageError(f"{uri}: '..' is not allowed in a pvc path")
        root = Path(os.environ.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT))
        return Location(uri=uri, scheme="pvc", path=str(root / claim / rest))
    if scheme in REMOTE_SCHEMES:
        if scheme == "s3" and not parsed.netloc:
            raise StorageError(f"{uri}: s3 URIs are s3://<bucket>/<key>; the bucket is missing")
        path = (parsed.netloc + parsed.path).rstrip("/")
        if scheme == "memory":
            path = "/" + path.lstrip("/")
        return Location(uri=uri, scheme=scheme, path=path)
    if not scheme:
        raise StorageError(
            f"{uri}: not a URI; use file:///abs/path, pvc://claim/path or s3://bucket/key"
        )
    raise StorageError(f"{uri}: unsupported scheme {scheme}:// (supported: file, pvc, s3, memory)")


def fetch(location: Location, cache_dir: Path | None = None) -> Path:
    """A local path holding the location's content (a file or a directory).

    Local locations are returned as they are (after checking they exist); remote ones are
    downloaded into `cache_dir` (a fresh temporary directory by default).
    """
    if location.is_local:
        if not location.local_path.exists():
            raise StorageError(f"{location.uri}: does not exist ({location.local_path})")
        return location.local_path
    if not location.exists():
        raise StorageError(f"{location.uri}: does not exist")
    target_root = cache_dir or Path(tempfile.mkdtemp(prefix="modelloop-fetch-"))
    target = target_root / (Path(location.path).name or "content")
    if location.is_dir():
        _remote_call(location, "get", location.path.rstrip("/") + "/", str(target), recursive=True)
    else:
        _remote_call(location, "get", location.path, str(target))
    return target


def publish(local: Path, location: Location) -> None:
    """Copy a local file or directory to `location` (no-op when it already is that path)."""
    if location.is_local:
        dest = location.local_path
        if dest.resolve() == local.resolve():
            return
        if local.is_dir():
            shutil.copytree(local, dest, dirs_exist_ok=True)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(local, dest)
        return
    if local.is_dir():
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            remote = location.child(file.relative_to(local).as_posix())
            _remote_call(remote, "put_file", str(file), remote.path)
    else:
        _remote_call(location, "put_file", str(local), location.path)


def remove(location: Location) -> None:
    """Delete a file or directory tree at `location` if it exists."""
    if location.is_local:
        if location.local_path.is_dir():
            shutil.rmtree(location.local_path)
        elif location.local_path.exists():
            location.local_path.unlink()
        return
    if location.exists():
        _remote_call(location, "rm", location.path, recursive=True)


def list_names(location: Location) -> list[str]:
    """Names of the entries directly inside a directory location (empty if it is absent)."""
    if location.is_local:
        if not location.local_path.is_dir():
            return []
        return sorted(p.name for p in location.local_path.iterdir())
    if not location.exists():
        return []
    entries = _remote_call(location, "ls", location.path, detail=False)
    return sorted(str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries)


def check_writable(location: Location) -> None:
    """Fail fast, before hours of training, when outputs could not be written."""
    if location.is_local:
        path = location.local_path
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".modelloop-write-probe"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"{location.uri}: cannot write to {path}: {exc}") from exc
        return
    remote_probe = location.child(".modelloop-write-probe")
    fs = location.filesystem()
    try:
        fs.pipe_file(remote_probe.path, b"ok")
        fs.rm_file(remote_probe.path)
    except Exception as exc:
        raise StorageError(f"{location.uri}: cannot write: {exc}") from exc


def _remote_call(location: Location, method: str, *args: Any, **kwargs: Any) -> Any:
    """Call an fsspec method, turning any failure into a StorageError naming the URI."""
    fs = location.filesystem()
    try:
        return getattr(fs, method)(*args, **kwargs)
    except FileNotFoundError as exc:
        raise StorageError(f"{location.uri}: not found ({exc})") from exc
    except Exception as exc:  # network, credentials, permissions: all mean "cannot reach"
        raise StorageError(f"{location.uri}: {method} failed: {exc}") from exc
