"""Burla's config file, data directory and BURLA_BACKEND: every problem is a BurlaError (a
ConfigError or UnknownBackend) that names the file or variable and says what to do."""

from __future__ import annotations

import pytest

import burla
from burla_core import config


def raised_by_a_call(**kwargs) -> BaseException:
    try:
        burla.remote_parallel_map(abs, [1], spinner=False, **kwargs)
    except burla.BurlaError as error:  # what a user writes; a plain ValueError would escape it
        return error
    raise AssertionError("the call succeeded, but it should have failed")


@pytest.mark.parametrize(
    "content, words",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"backend": 3}', '"backend"'),
        ('{"backend": ""}', '"backend"'),
    ],
)
def test_a_broken_config_file_is_a_burla_error_naming_the_file_and_the_variable(content, words):
    path = config.config_path()
    path.write_text(content)
    error = raised_by_a_call()
    assert isinstance(error, burla.ConfigError), f"expected burla.ConfigError, got {type(error).__name__}: {error}"
    assert isinstance(error, ValueError), "ConfigError stays a ValueError for code that caught that"
    assert str(path) in str(error) and "BURLA_CONFIG" in str(error), error
    assert words in str(error), error
    assert "fix it" in str(error), f"the message should say what to do: {error}"


def test_a_config_file_that_cannot_be_read_is_a_config_error(isolated_burla_files, monkeypatch):
    monkeypatch.setenv("BURLA_CONFIG", str(isolated_burla_files))  # a directory
    error = raised_by_a_call()
    assert isinstance(error, burla.ConfigError), f"{type(error).__name__}: {error}"
    assert str(isolated_burla_files) in str(error) and "BURLA_CONFIG" in str(error), error


def test_a_config_file_that_is_not_utf8_is_a_config_error():
    config.config_path().write_bytes(b'{"backend": "\xff"}')
    error = raised_by_a_call()
    assert isinstance(error, burla.ConfigError), f"{type(error).__name__}: {error}"
    assert str(config.config_path()) in str(error), error


def test_an_unusable_data_dir_is_a_config_error_naming_the_variable(tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    monkeypatch.setenv("BURLA_DATA_DIR", str(a_file / "data"))
    with pytest.raises(burla.ConfigError) as caught:
        config.data_dir()
    assert "BURLA_DATA_DIR" in str(caught.value) and str(a_file / "data") in str(caught.value), caught.value


def test_an_unknown_backend_from_burla_backend_names_the_variable(monkeypatch):
    monkeypatch.setenv("BURLA_BACKEND", "lcoal")
    error = raised_by_a_call()
    assert isinstance(error, burla.UnknownBackend), f"{type(error).__name__}: {error}"
    assert "'lcoal'" in str(error) and "BURLA_BACKEND" in str(error) and "local" in str(error), error
    assert "unset it" in str(error), error


def test_an_unknown_backend_from_the_config_file_names_the_file():
    config.write_config({"backend": "lcoal"})
    error = raised_by_a_call()
    assert isinstance(error, burla.UnknownBackend), f"{type(error).__name__}: {error}"
    assert str(config.config_path()) in str(error) and '"backend"' in str(error), error
    assert "BURLA_BACKEND" not in str(error), f"the name came from the file, not the variable: {error}"


def test_an_unknown_backend_keyword_says_backend_equals():
    error = raised_by_a_call(backend="lcoal")
    assert isinstance(error, burla.UnknownBackend), f"{type(error).__name__}: {error}"
    assert "backend=" in str(error) and "local" in str(error), error


def test_the_choice_says_where_the_backend_came_from(monkeypatch):
    assert config.backend_choice(None).source == "the default"
    config.write_config({"backend": " nodes "})
    assert config.backend_choice(None).name == "nodes"
    assert str(config.config_path()) in config.backend_choice(None).source
    monkeypatch.setenv("BURLA_BACKEND", "local")
    assert (config.backend_choice(None).name, config.backend_choice(None).source) == ("local", "BURLA_BACKEND")
    assert config.backend_choice("nodes").source == "backend="
