"""Configuration: the TOML file, command-line overrides, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from herder.agent.config import AgentConfig, is_loopback_host, load_config


def test_overrides_merge_into_file_sections(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('port = 9000\n[supervision]\nring_lines = 50\ngrace_s = 4\n[env]\nA = "1"\n')
    cfg = load_config(path, {"port": None, "supervision": {"grace_s": 3.0}})
    assert cfg.port == 9000
    assert cfg.supervision.grace_s == 3.0
    assert cfg.supervision.ring_lines == 50
    assert cfg.base_env()["A"] == "1"


def test_unknown_keys_and_bad_values_are_named(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("[supervision]\ngrace = 4\n")
    with pytest.raises(ValidationError, match=r"supervision\.grace"):
        load_config(path, {})
    with pytest.raises(ValidationError, match="deny_hosts"):
        AgentConfig.model_validate({"fetch": {"deny_hosts": ["10.0.0.0/33"]}})


def test_loopback_names() -> None:
    assert is_loopback_host("127.0.0.1")
    assert is_loopback_host("::1")
    assert is_loopback_host("localhost")
    assert not is_loopback_host("0.0.0.0")
    assert not is_loopback_host("example.com")


def test_builds_reach_indexes_the_way_the_host_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build inherits the host's proxies, CA bundle and installer settings; a child does not."""
    monkeypatch.setenv("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("UV_INDEX_URL", "https://mirror.internal/simple")
    monkeypatch.setenv("SECRET_TOKEN", "not for builds")
    config = AgentConfig(env={"UV_INDEX_URL": "https://agent.env.wins/simple"})
    build = config.build_env()
    assert build["SSL_CERT_FILE"] == "/etc/ssl/certs/ca-certificates.crt"
    assert build["HTTPS_PROXY"] == "http://proxy.internal:3128"
    assert build["UV_INDEX_URL"] == "https://agent.env.wins/simple"
    assert "SECRET_TOKEN" not in build
    assert "SSL_CERT_FILE" not in config.base_env()
