"""Where Burla keeps its files (data dir, config file), and which backend a call uses when it
names none. Every problem with those files or variables is a ConfigError naming the file or
variable and what to do."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from .errors import ConfigError

APP_NAME = "burla"
DATA_DIR_ENV = "BURLA_DATA_DIR"
CONFIG_ENV = "BURLA_CONFIG"
BACKEND_ENV = "BURLA_BACKEND"


def data_dir() -> Path:
    """The user data dir (jobs database, credentials), created if missing; `BURLA_DATA_DIR`
    overrides it."""
    override = os.environ.get(DATA_DIR_ENV)
    path = Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        where = f"{DATA_DIR_ENV}={override}" if override else f"Burla's data directory {path}"
        raise ConfigError(
            f"cannot create {where} ({error.strerror or error}); "
            f"set {DATA_DIR_ENV} to a directory you can write to"
        ) from None
    return path


def config_path() -> Path:
    """The user's config file; `BURLA_CONFIG` overrides its path."""
    override = os.environ.get(CONFIG_ENV)
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME)) / "config.json"


def _config_file_name(path: Path) -> str:
    """The config file as a message names it: with the variable that chose it, if one did."""
    if os.environ.get(CONFIG_ENV):
        return f"the burla config file {path} (from {CONFIG_ENV})"
    return f"the burla config file {path}"


def read_config() -> dict:
    """The config file's JSON object; {} when there is no file."""
    path = config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ConfigError(
            f"cannot read {_config_file_name(path)} ({reason}); make it a readable JSON file, or point "
            f"{CONFIG_ENV} at one"
        ) from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{_config_file_name(path)} is not valid JSON ({error}); fix it (it holds a JSON object such "
            'as {"backend": "local"}) or delete it'
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(
            f'{_config_file_name(path)} must hold a JSON object such as {{"backend": "local"}}, not '
            f"{type(config).__name__}; fix it or delete it"
        )
    return config


def write_config(updates: dict) -> Path:
    """Merge `updates` into the config file (created if missing); its path."""
    path = config_path()
    config = read_config()
    config.update(updates)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write {_config_file_name(path)} ({error.strerror or error})") from None
    return path


@dataclass(frozen=True)
class BackendChoice:
    """The backend a call uses, and where that name came from, so that an error can say what
    to change (`fix` completes "installed backends: ...; ...")."""

    name: str
    source: str  # "backend=", "BURLA_BACKEND", "the config file ...", "the default"
    fix: str


def backend_choice(explicit: str | None) -> BackendChoice:
    """`backend=` keyword, else BURLA_BACKEND, else the config file's "backend", else local."""
    if explicit:
        return BackendChoice(explicit, "backend=", "pass one of them as backend=")
    from_env = os.environ.get(BACKEND_ENV, "").strip()
    if from_env:
        return BackendChoice(from_env, BACKEND_ENV, f"set {BACKEND_ENV} to one of them, or unset it")
    path = config_path()
    configured = read_config().get("backend")
    if configured is not None:
        if not isinstance(configured, str) or not configured.strip():
            raise ConfigError(
                f'"backend" in {_config_file_name(path)} must be a backend name such as "local", not '
                f"{configured!r}; fix it or remove the key"
            )
        return BackendChoice(
            configured.strip(), f'"backend" in the config file {path}', f'change "backend" in {path} to one of them'
        )
    return BackendChoice("local", "the default", "reinstall burla: the local backend ships with it")


def selected_backend(explicit: str | None) -> str:
    """The name of the backend a call uses (see `backend_choice`)."""
    return backend_choice(explicit).name
