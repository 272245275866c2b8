"""Where a caller's cluster and token come from, and the errors that say to run `burla login`."""

from __future__ import annotations

import json
import time

import pytest

from burla_backend_gcp.settings import CLUSTER_URL_ENV, TOKEN_ENV, GcpSettings, credentials_path
from burla_core.errors import ConfigError, UnauthorizedError


@pytest.fixture(autouse=True)
def no_cluster_env(monkeypatch):
    monkeypatch.delenv(CLUSTER_URL_ENV, raising=False)
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def write_credentials(**values) -> None:
    credentials_path().write_text(json.dumps(values))


def test_a_machine_not_logged_in_is_told_to_run_burla_login():
    with pytest.raises(UnauthorizedError, match="not logged into a burla cluster: run `burla login`"):
        GcpSettings.load()


def test_the_credentials_file_burla_login_writes_is_read():
    write_credentials(cluster_url="https://burla-cluster-x.a.run.app/", token="burla_abc", expires_at=time.time() + 60,
                      project="my-project")
    settings = GcpSettings.load()
    assert settings.cluster_url == "https://burla-cluster-x.a.run.app" and settings.token == "burla_abc"
    assert settings.project == "my-project" and "burla_abc" not in repr(settings)


def test_an_expired_token_in_the_credentials_file_says_run_burla_login():
    write_credentials(cluster_url="https://c.example", token="burla_abc", expires_at=time.time() - 5)
    with pytest.raises(UnauthorizedError, match=r"expired on .*: run `burla login`") as caught:
        GcpSettings.load()
    assert caught.value.__cause__ is None and (caught.value.__context__ is None or caught.value.__suppress_context__)


def test_a_broken_credentials_file_is_a_config_error_naming_it():
    credentials_path().write_text("{not json")
    with pytest.raises(ConfigError, match="burla_credentials.json is not a burla credentials file"):
        GcpSettings.load()


def test_the_environment_wins_and_needs_both_variables(monkeypatch):
    write_credentials(cluster_url="https://from-file.example", token="burla_file")
    monkeypatch.setenv(CLUSTER_URL_ENV, "http://127.0.0.1:9")
    with pytest.raises(UnauthorizedError, match=f"{TOKEN_ENV} is not set"):
        GcpSettings.load()
    monkeypatch.setenv(TOKEN_ENV, "burla_env")
    settings = GcpSettings.load()
    assert (settings.cluster_url, settings.token) == ("http://127.0.0.1:9", "burla_env")
    assert settings.nested_env == {"BURLA_BACKEND": "gcp", CLUSTER_URL_ENV: "http://127.0.0.1:9", TOKEN_ENV: "burla_env"}
