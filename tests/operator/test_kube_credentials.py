"""kopf logs in with the credentials kube.py loads (kopf's own logins need libraries we
do not ship), so both talk to the same cluster as the same user."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from modelloop_operator.kube import load_credentials


def write_kubeconfig(path: Path, user: dict[str, str]) -> None:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://10.0.0.1:6443",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))


def read(path: str) -> str:
    return Path(path).read_text()


async def test_a_bearer_token_from_kubeconfig(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config"
    write_kubeconfig(path, {"token": "s3cr3t"})
    monkeypatch.setenv("KUBECONFIG", f"{path}:/nonexistent/second")
    creds = await load_credentials()
    assert creds.server == "https://10.0.0.1:6443"
    assert (creds.scheme, creds.token) == ("Bearer", "s3cr3t")
    assert creds.insecure is True
    assert creds.certificate_path is None and creds.private_key_path is None


async def test_client_certificates_stay_in_files(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "c.crt", tmp_path / "c.key"
    cert.write_text("CERT")
    key.write_text("KEY")
    path = tmp_path / "config"
    write_kubeconfig(path, {"client-certificate": str(cert), "client-key": str(key)})
    monkeypatch.setenv("KUBECONFIG", str(path))
    creds = await load_credentials()
    assert creds.token is None
    assert creds.certificate_path is not None and read(creds.certificate_path) == "CERT"
    assert creds.private_key_path is not None and read(creds.private_key_path) == "KEY"
