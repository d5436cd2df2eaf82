"""Where the API server is and who the operator is to it, found as kubectl finds it.

``KUBECONFIG`` (several files merged, the first to set a value wins), else
``~/.kube/config``, else the pod's service account. Supported users: a bearer token
(inline or ``tokenFile``), client certificates (files or ``-data``), basic auth, and
exec credential plugins (``client.authentication.k8s.io/v1`` and ``v1beta1``: EKS, GKE,
AKS kubelogin, ...). Anything else (an ``auth-provider``, impersonation) is refused with
a message rather than ignored: acting as another identity than the one configured is
worse than not starting.

Written here rather than borrowed from a client library: kubernetes_asyncio's loader
imports its whole generated API (1,200 modules, about 60 MiB of the operator's memory)
just to read this file, and kopf imports that library too whenever it is installed.

Certificates given inline (``*-data``) are written to private files (0600, removed at
exit): TLS and kopf's own connection both need paths. Tokens are read when a request is
made, never logged: a service-account token file is re-read every minute (it rotates,
as client-go assumes) and a plugin's token is kept until its ``expirationTimestamp``.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import yaml

from .errors import CredentialsError

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_FILE_REFRESH_SECONDS: Final = 60.0
"""How long a token read from a file is used before the file is read again (client-go:
one minute; kubelet rotates projected tokens well before they expire)."""
EXEC_TIMEOUT_SECONDS: Final = 60.0
EXEC_EXPIRY_MARGIN_SECONDS: Final = 10.0
"""A plugin's token is renewed this long before it expires, so no request carries one
that expires on the way."""
EXEC_API_VERSIONS: Final = ("client.authentication.k8s.io/v1",
                            "client.authentication.k8s.io/v1beta1")


class Authorization(Protocol):
    """The ``Authorization`` header of the next request, or None for none."""

    async def header(self) -> str | None: ...

    def invalidate(self) -> None:
        """The server refused the last header (401): make a fresh one next time."""


@dataclass
class NoAuthorization:
    """Client certificates alone (or an anonymous server)."""

    async def header(self) -> str | None:
        return None

    def invalidate(self) -> None:
        pass


@dataclass
class StaticToken:
    token: str

    async def header(self) -> str | None:
        return f"Bearer {self.token}"

    def invalidate(self) -> None:
        pass

    def __repr__(self) -> str:
        return "StaticToken(<hidden>)"


@dataclass
class BasicAuth:
    username: str
    password: str

    async def header(self) -> str | None:
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode()

    def invalidate(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"BasicAuth({self.username!r}, <hidden>)"


@dataclass
class TokenFile:
    """A token file (a pod's service account, kubeconfig ``tokenFile``), re-read every
    :data:`TOKEN_FILE_REFRESH_SECONDS`; a failed re-read keeps the last good token."""

    path: Path
    refresh_seconds: float = TOKEN_FILE_REFRESH_SECONDS
    _token: str = field(default="", repr=False)
    _read_at: float = field(default=-1e18, repr=False)

    async def header(self) -> str | None:
        now = time.monotonic()
        if now - self._read_at >= self.refresh_seconds:
            try:
                token = (await asyncio.to_thread(self.path.read_text)).strip()
            except OSError as exc:
                if not self._token:
                    raise CredentialsError(f"cannot read the token file {self.path}: "
                                           f"{exc.strerror or exc}") from exc
            else:
                self._token = token
            self._read_at = now
        return f"Bearer {self._token}" if self._token else None

    def invalidate(self) -> None:
        self._read_at = -1e18


@dataclass
class ExecPlugin:
    """A kubeconfig ``exec`` credential plugin: run on first use and again when the
    token it gave expires (one run at a time, whatever the number of requests)."""

    command: str
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    api_version: str = EXEC_API_VERSIONS[0]
    install_hint: str = ""
    cluster: Mapping[str, Any] | None = None
    """The cluster as the plugin is told it (``provideClusterInfo``), else None."""
    _token: str = field(default="", repr=False)
    _expires: float | None = field(default=None, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def header(self) -> str | None:
        async with self._lock:
            if not self._token or (self._expires is not None
                                   and time.time() >= self._expires):
                self._token, self._expires = await self._run()
        return f"Bearer {self._token}"

    def invalidate(self) -> None:
        self._token, self._expires = "", None

    async def _run(self) -> tuple[str, float | None]:
        spec: dict[str, Any] = {"interactive": False}
        if self.cluster is not None:
            spec["cluster"] = dict(self.cluster)
        exec_info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": spec}
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(exec_info)}
        what = f"exec credential plugin {self.command!r}"
        try:
            # stderr passes through, as with kubectl: plugins report there for people.
            process = await asyncio.create_subprocess_exec(
                self.command, *self.args, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE)
        except OSError as exc:
            hint = f" ({self.install_hint.strip()})" if self.install_hint.strip() else ""
            raise CredentialsError(f"{what} cannot be run: {exc.strerror or exc}{hint}") \
                from exc
        try:
            stdout, _ = await asyncio.wait_for(process.communicate(), EXEC_TIMEOUT_SECONDS)
        except TimeoutError as exc:
            process.kill()
            await process.wait()
            raise CredentialsError(f"{what} gave no answer in {EXEC_TIMEOUT_SECONDS:.0f} s") \
                from exc
        if process.returncode != 0:
            raise CredentialsError(f"{what} failed with exit code {process.returncode}")
        return parse_exec_credential(stdout, api_version=self.api_version, what=what)


def parse_exec_credential(output: bytes, *, api_version: str,
                          what: str) -> tuple[str, float | None]:
    """The token and its expiry (Unix seconds, the margin taken off) from a plugin's
    ExecCredential answer."""
    try:
        answer = json.loads(output)
    except ValueError as exc:
        raise CredentialsError(f"{what} printed no ExecCredential JSON: {exc}") from exc
    if not isinstance(answer, dict) or answer.get("kind") != "ExecCredential":
        raise CredentialsError(f"{what} printed something other than an ExecCredential")
    if answer.get("apiVersion") != api_version:
        raise CredentialsError(f"{what} answered apiVersion {answer.get('apiVersion')!r}, "
                               f"the kubeconfig asks for {api_version!r}")
    status = answer.get("status") or {}
    token = status.get("token")
    if not token:
        if status.get("clientCertificateData"):
            raise CredentialsError(f"{what} gave a client certificate; modelloop supports "
                                   "plugins that give a token")
        raise CredentialsError(f"{what} gave no token")
    expires: float | None = None
    stamp = status.get("expirationTimestamp")
    if stamp:
        try:
            moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError as exc:
            raise CredentialsError(f"{what} gave an unreadable expirationTimestamp "
                                   f"{stamp!r}") from exc
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        expires = moment.timestamp() - EXEC_EXPIRY_MARGIN_SECONDS
    return str(token), expires


@dataclass(frozen=True)
class Connection:
    """Everything needed to talk to one API server as one identity."""

    server: str
    authorization: Authorization = field(default_factory=NoAuthorization)
    ca_file: str | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    proxy_url: str | None = None
    client_certificate_file: str | None = None
    client_key_file: str | None = None
    source: str = ""
    """Where it came from (a kubeconfig file and context, or the service account)."""


def default_kubeconfig_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The kubeconfig files kubectl would read: ``KUBECONFIG``'s list, else
    ``~/.kube/config`` when it exists, else none (then: the service account)."""
    env = os.environ if environ is None else environ
    listed = env.get("KUBECONFIG", "")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    default = Path("~/.kube/config").expanduser()
    return [default] if default.exists() else []


def load_connection(*, context: str | None = None) -> Connection:
    """The connection kubectl would use: the kubeconfig files, else the service account."""
    files = default_kubeconfig_files()
    if files:
        return load_kubeconfig(files, context=context)
    return load_incluster()


def load_incluster(*, environ: Mapping[str, str] | None = None,
                   directory: Path = SERVICE_ACCOUNT_DIR) -> Connection:
    """The pod's service account: ``KUBERNETES_SERVICE_HOST``/``_PORT``, its CA and its
    (rotating) token."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise CredentialsError(
            "no kubeconfig (KUBECONFIG unset, no ~/.kube/config) and not in a pod "
            "(KUBERNETES_SERVICE_HOST/PORT unset): cannot find the API server")
    token, ca = directory / "token", directory / "ca.crt"
    if not token.is_file():
        raise CredentialsError(f"in a pod, but its service-account token {token} is missing"
                               " (automountServiceAccountToken: false?)")
    host = f"[{host}]" if ":" in host else host
    return Connection(server=f"https://{host}:{port}", authorization=TokenFile(token),
                      ca_file=str(ca) if ca.is_file() else None,
                      source=f"service account ({directory})")


def load_kubeconfig(files: Sequence[Path], *, context: str | None = None) -> Connection:
    """The connection of ``context`` (default: ``current-context``) in the merged
    ``files``; files that do not exist are skipped, as kubectl does."""
    merged = _merge(files)
    name = context or merged.current_context
    if not name:
        raise CredentialsError(f"kubeconfig {_names(files)}: no current-context set")
    ctx = merged.contexts.get(name)
    if ctx is None:
        raise CredentialsError(f"kubeconfig {_names(files)}: no context {name!r}")
    cluster_name, user_name = str(ctx.get("cluster") or ""), str(ctx.get("user") or "")
    cluster_entry = merged.clusters.get(cluster_name)
    if cluster_entry is None:
        raise CredentialsError(f"kubeconfig context {name!r}: no cluster {cluster_name!r}")
    cluster, cluster_dir = cluster_entry
    user, user_dir = merged.users.get(user_name, ({}, Path()))
    where = f"kubeconfig context {name!r}"
    server = str(cluster.get("server") or "")
    if not server:
        raise CredentialsError(f"{where}: cluster {cluster_name!r} has no server")
    cert = _file_or_data(user, "client-certificate", user_dir, where)
    key = _file_or_data(user, "client-key", user_dir, where)
    if bool(cert) != bool(key):
        raise CredentialsError(f"{where}: user {user_name!r} has a client certificate "
                               "without its key, or a key without its certificate")
    return Connection(
        server=server.rstrip("/"),
        authorization=_authorization(user, user_dir, cluster=cluster, where=where),
        ca_file=_file_or_data(cluster, "certificate-authority", cluster_dir, where),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=str(cluster.get("tls-server-name") or "") or None,
        proxy_url=str(cluster.get("proxy-url") or "") or None,
        client_certificate_file=cert, client_key_file=key,
        source=f"{where} of {_names(files)}")


@dataclass
class _Merged:
    current_context: str = ""
    clusters: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    users: dict[str, tuple[dict[str, Any], Path]] = field(default_factory=dict)
    contexts: dict[str, dict[str, Any]] = field(default_factory=dict)


def _merge(files: Sequence[Path]) -> _Merged:
    merged, found = _Merged(), False
    for path in files:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise CredentialsError(f"cannot read kubeconfig {path}: {exc.strerror}") from exc
        found = True
        try:
            document = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise CredentialsError(f"kubeconfig {path} is not YAML: {exc}") from exc
        if not isinstance(document, dict):
            raise CredentialsError(f"kubeconfig {path} is not a mapping")
        merged.current_context = merged.current_context or str(
            document.get("current-context") or "")
        directory = path.resolve().parent
        for entry in _entries(document, "clusters", path):
            merged.clusters.setdefault(entry[0], (entry[1], directory))
        for entry in _entries(document, "users", path):
            merged.users.setdefault(entry[0], (entry[1], directory))
        for entry in _entries(document, "contexts", path):
            merged.contexts.setdefault(entry[0], entry[1])
    if not found:
        raise CredentialsError(f"no kubeconfig file exists of {_names(files)}")
    return merged


def _entries(document: Mapping[str, Any], section: str,
             path: Path) -> list[tuple[str, dict[str, Any]]]:
    key = {"clusters": "cluster", "users": "user", "contexts": "context"}[section]
    result = []
    for item in document.get(section) or []:
        if not isinstance(item, dict) or not item.get("name"):
            raise CredentialsError(f"kubeconfig {path}: an entry of {section} has no name")
        body = item.get(key) or {}
        if not isinstance(body, dict):
            raise CredentialsError(f"kubeconfig {path}: {section} {item['name']!r} "
                                   "is not a mapping")
        result.append((str(item["name"]), body))
    return result


def _authorization(user: Mapping[str, Any], directory: Path, *, cluster: Mapping[str, Any],
                   where: str) -> Authorization:
    for unsupported, why in (("auth-provider", "use an exec credential plugin instead, "
                                               "as kubectl itself now does"),
                             ("as", "impersonation is not supported"),
                             ("as-groups", "impersonation is not supported"),
                             ("as-uid", "impersonation is not supported")):
        if user.get(unsupported):
            raise CredentialsError(f"{where}: the user's {unsupported!r} is not supported "
                                   f"by modelloop: {why}")
    if user.get("token"):
        return StaticToken(str(user["token"]))
    if user.get("tokenFile"):
        return TokenFile(_resolve(str(user["tokenFile"]), directory))
    if user.get("exec"):
        return _exec_plugin(user["exec"], directory, cluster=cluster, where=where)
    if user.get("username") or user.get("password"):
        return BasicAuth(str(user.get("username") or ""), str(user.get("password") or ""))
    return NoAuthorization()


def _exec_plugin(spec: Any, directory: Path, *, cluster: Mapping[str, Any],
                 where: str) -> ExecPlugin:
    if not isinstance(spec, dict) or not spec.get("command"):
        raise CredentialsError(f"{where}: the user's exec plugin has no command")
    api_version = str(spec.get("apiVersion") or "")
    if api_version not in EXEC_API_VERSIONS:
        raise CredentialsError(f"{where}: exec plugin apiVersion {api_version!r} is not "
                               f"supported (use one of {', '.join(EXEC_API_VERSIONS)})")
    if spec.get("interactiveMode") == "Always":
        raise CredentialsError(f"{where}: the exec plugin needs a terminal "
                               "(interactiveMode: Always); the operator has none")
    command = str(spec["command"])
    # As client-go: a relative command with a path separator is relative to the file.
    if os.sep in command and not Path(command).is_absolute():
        command = str(directory / command)
    env = {}
    for item in spec.get("env") or []:
        if isinstance(item, dict) and item.get("name"):
            env[str(item["name"])] = str(item.get("value") or "")
    shown = None
    if spec.get("provideClusterInfo"):
        shown = {"server": cluster.get("server"),
                 "insecure-skip-tls-verify": bool(cluster.get("insecure-skip-tls-verify")),
                 **{k: cluster[k] for k in ("certificate-authority-data", "tls-server-name",
                                            "proxy-url") if cluster.get(k)}}
    return ExecPlugin(command=command, args=[str(a) for a in spec.get("args") or []],
                      env=env, api_version=api_version,
                      install_hint=str(spec.get("installHint") or ""), cluster=shown)


def _resolve(path: str, directory: Path) -> Path:
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else directory / resolved


def _file_or_data(section: Mapping[str, Any], key: str, directory: Path,
                  where: str) -> str | None:
    data = section.get(f"{key}-data")
    if data:
        try:
            content = base64.b64decode(str(data), validate=True)
        except ValueError as exc:
            raise CredentialsError(f"{where}: {key}-data is not base64") from exc
        return _private_file(content)
    if section.get(key):
        path = _resolve(str(section[key]), directory)
        if not path.is_file():
            raise CredentialsError(f"{where}: {key} {path} does not exist")
        return str(path)
    return None


@functools.cache
def _private_dir() -> str:
    """One directory per process (0700), removed at exit."""
    directory = tempfile.mkdtemp(prefix="modelloop-credentials-")
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


@functools.cache
def _private_file(content: bytes) -> str:
    """``content`` in a file only this user can read (mkstemp: 0600); one file per
    content, however often the kubeconfig is read (every login of kopf's)."""
    handle, name = tempfile.mkstemp(dir=_private_dir())
    with os.fdopen(handle, "wb") as out:
        out.write(content)
    return name


def _names(files: Sequence[Path]) -> str:
    return os.pathsep.join(str(f) for f in files)
