"""Where Burla keeps its files, and which backend a call uses when it names none."""

from __future__ import annotations

import json
import os
from pathlib import Path

import platformdirs

APP_NAME = "burla"


def data_dir() -> Path:
    """The user data dir (jobs database, credentials); `BURLA_DATA_DIR` overrides it."""
    override = os.environ.get("BURLA_DATA_DIR")
    path = Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME))
    path.mkdir(parents=True, exist_ok=True)
    return path


def config_path() -> Path:
    """The user's config file; `BURLA_CONFIG` overrides its path."""
    override = os.environ.get("BURLA_CONFIG")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME)) / "config.json"


def read_config() -> dict:
    path = config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"the burla config file {path} is not valid JSON ({error}); fix or delete it") from error
    if not isinstance(config, dict):
        raise ValueError(f"the burla config file {path} must hold a JSON object")
    return config


def write_config(updates: dict) -> Path:
    path = config_path()
    config = read_config()
    config.update(updates)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def selected_backend(explicit: str | None) -> str:
    """`backend=` keyword, else BURLA_BACKEND, else the config file's "backend", else local."""
    if explicit:
        return explicit
    from_env = os.environ.get("BURLA_BACKEND")
    if from_env:
        return from_env
    return read_config().get("backend") or "local"
