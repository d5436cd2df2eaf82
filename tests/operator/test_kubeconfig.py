"""Finding the API server and the operator's identity as kubectl does: merged kubeconfig
files, paths relative to their file, inline certificates, token files that rotate, exec
credential plugins (real processes), the service account, and clear refusals."""

from __future__ import annotations

import base64
import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from modelloop_operator.errors import CredentialsError
from modelloop_operator.kubeconfig import (
    BasicAuth,
    ExecPlugin,
    NoAuthorization,
    StaticToken,
    TokenFile,
    load_connection,
    load_incluster,
    load_kubeconfig,
    parse_exec_credential,
)


def kubeconfig(path: Path, *, user: dict[str, Any] | None = None,
               cluster: dict[str, Any] | None = None, current: str | None = "c",
               names: tuple[str, str, str] = ("c", "k", "u")) -> Path:
    context, cluster_name, user_name = names
    document: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": cluster_name, "cluster": cluster or {
            "server": "https://10.0.0.1:6443/"}}],
        "users": [{"name": user_name, "user": user or {}}],
        "contexts": [{"name": context, "context": {"cluster": cluster_name,
                                                   "user": user_name}}],
    }
    if current:
        document["current-context"] = current
    path.write_text(yaml.safe_dump(document))
    return path


def test_the_first_file_to_set_a_value_wins_and_missing_files_are_skipped(
        tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", user={"token": "from-a"}, current="c")
    second = kubeconfig(tmp_path / "b", user={"token": "from-b"}, current="other",
                        cluster={"server": "https://b"}, names=("other", "kb", "u"))
    connection = load_kubeconfig([tmp_path / "missing", first, second])
    assert connection.server == "https://10.0.0.1:6443"
    assert connection.authorization == StaticToken("from-a")
    # Context "other" comes from the second file, its user "u" from the first.
    other = load_kubeconfig([first, second], context="other")
    assert other.server == "https://b" and other.authorization == StaticToken("from-a")
    assert "from-a" not in repr(other)


def test_relative_paths_are_relative_to_their_file(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    for name in ("ca.crt", "c.crt", "c.key", "token"):
        (tmp_path / "certs" / name).write_text(name)
    path = kubeconfig(tmp_path / "config",
                      cluster={"server": "https://x", "certificate-authority": "certs/ca.crt",
                               "tls-server-name": "api.internal", "proxy-url": "http://p:1"},
                      user={"client-certificate": "certs/c.crt", "client-key": "certs/c.key",
                            "tokenFile": "certs/token"})
    connection = load_kubeconfig([path])
    assert connection.ca_file == str(tmp_path / "certs" / "ca.crt")
    assert connection.client_certificate_file == str(tmp_path / "certs" / "c.crt")
    assert connection.client_key_file == str(tmp_path / "certs" / "c.key")
    assert connection.authorization == TokenFile(tmp_path / "certs" / "token")
    assert (connection.tls_server_name, connection.proxy_url) == ("api.internal", "http://p:1")


def test_inline_certificates_go_to_private_files(tmp_path: Path) -> None:
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()
    path = kubeconfig(tmp_path / "config",
                      cluster={"server": "https://x", "certificate-authority-data": b64("CA")},
                      user={"client-certificate-data": b64("CERT"),
                            "client-key-data": b64("KEY")})
    connection = load_kubeconfig([path])
    assert connection.ca_file and connection.client_key_file
    assert Path(connection.ca_file).read_text() == "CA"
    assert Path(connection.client_key_file).read_text() == "KEY"
    assert stat.S_IMODE(Path(connection.client_key_file).stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(connection.client_key_file).parent.stat().st_mode) == 0o700


@pytest.mark.parametrize(("user", "cluster", "message"), [
    ({"auth-provider": {"name": "gcp"}}, None, "'auth-provider' is not supported"),
    ({"token": "t", "as": "admin"}, None, "impersonation is not supported"),
    ({"client-certificate-data": "Q0VSVA=="}, None, "without its key"),
    ({"client-key-data": "not base64!"}, None, "client-key-data is not base64"),
    ({"client-certificate": "/nonexistent.crt", "client-key": "/nonexistent.key"}, None,
     "client-certificate /nonexistent.crt does not exist"),
    ({"exec": {"apiVersion": "client.authentication.k8s.io/v1alpha1", "command": "x"}},
     None, "apiVersion 'client.authentication.k8s.io/v1alpha1' is not supported"),
    ({"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "x",
               "interactiveMode": "Always"}}, None, "needs a terminal"),
    ({}, {"insecure-skip-tls-verify": True}, "has no server"),
])
def test_what_cannot_work_is_refused_with_a_message(
        tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any] | None,
        message: str) -> None:
    path = kubeconfig(tmp_path / "config", user=user, cluster=cluster)
    with pytest.raises(CredentialsError, match=message):
        load_kubeconfig([path])


def test_missing_contexts_and_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="no kubeconfig file exists"):
        load_kubeconfig([tmp_path / "none"])
    path = kubeconfig(tmp_path / "config", current=None)
    with pytest.raises(CredentialsError, match="no current-context"):
        load_kubeconfig([path])
    with pytest.raises(CredentialsError, match="no context 'nope'"):
        load_kubeconfig([path], context="nope")
    (tmp_path / "bad").write_text("- just\n- a list\n")
    with pytest.raises(CredentialsError, match="is not a mapping"):
        load_kubeconfig([tmp_path / "bad"])


async def test_basic_auth_and_no_auth(tmp_path: Path) -> None:
    basic = load_kubeconfig([kubeconfig(tmp_path / "a",
                                        user={"username": "me", "password": "pw"})])
    assert basic.authorization == BasicAuth("me", "pw")
    assert await basic.authorization.header() == "Basic " + base64.b64encode(b"me:pw").decode()
    assert "pw" not in repr(basic.authorization)
    anonymous = load_kubeconfig([kubeconfig(tmp_path / "b")])
    assert isinstance(anonymous.authorization, NoAuthorization)
    assert await anonymous.authorization.header() is None


async def test_a_token_file_is_read_again_after_its_refresh_period(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one\n")
    source = TokenFile(path, refresh_seconds=3600)
    assert await source.header() == "Bearer one"
    path.write_text("two")
    assert await source.header() == "Bearer one"  # within the period
    source.invalidate()  # what a 401 does
    assert await source.header() == "Bearer two"
    path.unlink()
    source.invalidate()
    assert await source.header() == "Bearer two"  # a failed re-read keeps the last token
    with pytest.raises(CredentialsError, match="cannot read the token file"):
        await TokenFile(tmp_path / "never").header()


def plugin(tmp_path: Path, *, answer: dict[str, Any], exit_code: int = 0) -> Path:
    """A real exec plugin: counts its runs, records what it was told, prints ``answer``
    with the run number in the token."""
    script = tmp_path / "bin" / "plugin"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"""#!{sys.executable}
import json, os, pathlib, sys
runs = pathlib.Path({str(tmp_path / "runs")!r})
count = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(count))
pathlib.Path({str(tmp_path / "told")!r}).write_text(json.dumps({{
    "info": json.loads(os.environ["KUBERNETES_EXEC_INFO"]),
    "extra": os.environ.get("EXTRA"), "args": sys.argv[1:]}}))
answer = json.loads({json.dumps(json.dumps(answer))})
if "status" in answer and "token" in answer["status"]:
    answer["status"]["token"] += "-" + str(count)
print(json.dumps(answer))
sys.exit({exit_code})
""")
    script.chmod(0o755)
    return script


def credential(token: str | None = "tok", **status: Any) -> dict[str, Any]:
    if token is not None:
        status["token"] = token
    return {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
            "status": status}


async def test_an_exec_plugin_runs_once_until_its_token_expires(tmp_path: Path) -> None:
    plugin(tmp_path, answer=credential(expirationTimestamp="2999-01-01T00:00:00Z"))
    path = kubeconfig(tmp_path / "config", cluster={
        "server": "https://x", "certificate-authority-data": "Q0E="}, user={"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": "bin/plugin",
            "args": ["--flag"], "env": [{"name": "EXTRA", "value": "1"}],
            "provideClusterInfo": True}})
    connection = load_kubeconfig([path])
    auth = connection.authorization
    assert isinstance(auth, ExecPlugin) and auth.command == str(tmp_path / "bin" / "plugin")
    assert [await auth.header() for _ in range(3)] == ["Bearer tok-1"] * 3
    told = json.loads((tmp_path / "told").read_text())
    assert told["extra"] == "1" and told["args"] == ["--flag"]
    assert told["info"]["kind"] == "ExecCredential"
    assert told["info"]["spec"]["interactive"] is False
    assert told["info"]["spec"]["cluster"]["server"] == "https://x"
    assert told["info"]["spec"]["cluster"]["certificate-authority-data"] == "Q0E="
    auth.invalidate()  # the server refused it
    assert await auth.header() == "Bearer tok-2"
    # The operator logs in to kopf with the plugin's current token.
    assert "tok" not in repr(auth)


async def test_an_expired_plugin_token_is_renewed(tmp_path: Path) -> None:
    plugin(tmp_path, answer=credential(expirationTimestamp="2001-01-01T00:00:00Z"))
    auth = ExecPlugin(command=str(tmp_path / "bin" / "plugin"))
    assert await auth.header() == "Bearer tok-1"
    assert await auth.header() == "Bearer tok-2"


@pytest.mark.parametrize(("answer", "exit_code", "message"), [
    (credential(), 3, "failed with exit code 3"),
    (credential(token=None), 0, "gave no token"),
    (credential(token=None, clientCertificateData="x"), 0, "gave a client certificate"),
    ({"kind": "Something"}, 0, "something other than an ExecCredential"),
    (dict(credential(), apiVersion="client.authentication.k8s.io/v1beta1"), 0,
     "answered apiVersion"),
])
async def test_a_failing_plugin_is_an_error_with_its_reason(
        tmp_path: Path, answer: dict[str, Any], exit_code: int, message: str) -> None:
    plugin(tmp_path, answer=answer, exit_code=exit_code)
    with pytest.raises(CredentialsError, match=message):
        await ExecPlugin(command=str(tmp_path / "bin" / "plugin")).header()


async def test_a_missing_plugin_names_its_install_hint(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match=r"cannot be run: .*\(brew install it\)"):
        await ExecPlugin(command=str(tmp_path / "absent"), install_hint="brew install it",
                         ).header()


def test_plugin_expiry_keeps_a_margin() -> None:
    token, expires = parse_exec_credential(
        json.dumps(credential(expirationTimestamp="2030-01-01T00:00:10Z")).encode(),
        api_version="client.authentication.k8s.io/v1", what="p")
    assert token == "tok" and expires == 1893456000.0
    with pytest.raises(CredentialsError, match="no ExecCredential JSON"):
        parse_exec_credential(b"oops", api_version="v", what="p")


def test_the_service_account_in_a_pod(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "ca.crt").write_text("CA")
    connection = load_incluster(environ={"KUBERNETES_SERVICE_HOST": "fd00::1",
                                         "KUBERNETES_SERVICE_PORT": "443"},
                                directory=tmp_path)
    assert connection.server == "https://[fd00::1]:443"
    assert connection.ca_file == str(tmp_path / "ca.crt")
    assert connection.authorization == TokenFile(tmp_path / "token")
    with pytest.raises(CredentialsError, match="not in a pod"):
        load_incluster(environ={}, directory=tmp_path)
    with pytest.raises(CredentialsError, match="automountServiceAccountToken"):
        load_incluster(environ={"KUBERNETES_SERVICE_HOST": "h",
                                "KUBERNETES_SERVICE_PORT": "1"}, directory=tmp_path / "x")


def test_kubeconfig_wins_over_the_service_account(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = kubeconfig(tmp_path / "config", user={"token": "t"})
    monkeypatch.setenv("KUBECONFIG", f"{path}:{tmp_path / 'missing'}")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    assert load_connection().server == "https://10.0.0.1:6443"


def test_reading_the_kubeconfig_again_writes_no_new_files(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "config", cluster={
        "server": "https://x", "certificate-authority-data": base64.b64encode(b"CA2").decode()})
    first, second = load_kubeconfig([path]), load_kubeconfig([path])
    assert first.ca_file is not None and first.ca_file == second.ca_file
