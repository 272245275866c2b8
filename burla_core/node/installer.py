"""Installing a job's packages into a directory on a node: uv when it is there, pip otherwise.

    find_installer("auto") ──► uv (the `uv` package's binary, or `uv` on PATH) ──► else pip
    install(installer, requirements, target, index) ──► `uv pip install --target DIR --no-deps ...`
          └─ fails ──► InstallError(package, version, the installer's last lines)

Requirements are exact pins of a whole environment (every distribution the caller has), so they
are installed without resolving dependencies (`--no-deps`): what the node already has at the same
version was left out before, and every other dependency is itself in the list. The installer
reads the agent's own configuration: pip its PIP_* variables and pip.conf; uv its UV_* variables
and uv.toml, and, where those name no index, the PIP_INDEX_URL / PIP_EXTRA_INDEX_URL /
PIP_FIND_LINKS / PIP_NO_INDEX an operator set for pip, so one setting serves both. An index the
caller passed in backend_options comes on top.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from ..envsync.description import PackageIndex, Requirement

INSTALLER_CHOICES = ("auto", "uv", "pip")
OUTPUT_LINES_KEPT = 30
DEFAULT_INSTALL_SECONDS = 1800.0


@dataclass(frozen=True)
class Installer:
    kind: str  # "uv" or "pip"
    program: tuple[str, ...]  # what to run: the uv binary, or (python, "-m", "pip")


class InstallError(Exception):
    """An install failed; `requirement` is the package the installer named (None: it named
    none), `output` its last lines."""

    def __init__(self, message: str, requirement: Requirement | None, output: str) -> None:
        super().__init__(message)
        self.requirement = requirement
        self.output = output


def _find_uv() -> str | None:
    try:
        from uv import find_uv_bin  # the PyPI package `uv` ships its binary beside itself

        return find_uv_bin()
    except (ImportError, FileNotFoundError, OSError):
        return shutil.which("uv")


def find_installer(preference: str = "auto", python: str = sys.executable) -> Installer | None:
    """The installer to use (None: neither uv nor pip is available to the agent)."""
    if preference not in INSTALLER_CHOICES:
        raise ValueError(f"installer must be one of {', '.join(INSTALLER_CHOICES)}; got {preference!r}")
    if preference in ("auto", "uv"):
        uv = _find_uv()
        if uv:
            return Installer("uv", (uv,))
        if preference == "uv":
            return None
    if importlib.util.find_spec("pip") is not None:
        return Installer("pip", (python, "-m", "pip"))
    return None


def _split(value: str | None) -> list[str]:
    return [item for item in re.split(r"\s+", value or "") if item]


def uv_index_arguments(environ: dict) -> list[str]:
    """pip's index settings for uv, where uv's own name none (uv does not read pip's)."""
    arguments: list[str] = []
    if not (environ.get("UV_INDEX_URL") or environ.get("UV_DEFAULT_INDEX") or environ.get("UV_INDEX")):
        if environ.get("PIP_INDEX_URL"):
            arguments += ["--index-url", environ["PIP_INDEX_URL"]]
        for url in _split(environ.get("PIP_EXTRA_INDEX_URL")) if not environ.get("UV_EXTRA_INDEX_URL") else []:
            arguments += ["--extra-index-url", url]
    if not environ.get("UV_FIND_LINKS"):
        for location in _split(environ.get("PIP_FIND_LINKS")):
            arguments += ["--find-links", location]
    if environ.get("PIP_NO_INDEX", "").lower() in ("1", "true", "yes", "on") and not environ.get("UV_NO_INDEX"):
        arguments.append("--no-index")
    return arguments


def caller_index_arguments(index: PackageIndex) -> list[str]:
    arguments: list[str] = []
    if index.index_url:
        arguments += ["--index-url", index.index_url]
    for url in index.extra_index_urls:
        arguments += ["--extra-index-url", url]
    for location in index.find_links:
        arguments += ["--find-links", location]
    return arguments


def install_command(installer: Installer, requirements_file: str, target: str, index: PackageIndex,
                    python: str = sys.executable, environ: dict | None = None) -> list[str]:
    environ = dict(os.environ if environ is None else environ)
    if installer.kind == "uv":
        command = [*installer.program, "pip", "install", "--target", target, "--python", python, "--no-deps",
                   "--color", "never", "--no-progress"]
        command += uv_index_arguments(environ)
    else:
        command = [*installer.program, "install", "--target", target, "--no-deps", "--disable-pip-version-check",
                   "--no-input", "--no-warn-script-location", "--progress-bar", "off"]
    return command + caller_index_arguments(index) + ["-r", requirements_file]


def _mentions(text: str, requirement: Requirement) -> int:
    """Where the output last names the requirement (-1: nowhere)."""
    exact = text.rfind(f"{requirement.name}=={requirement.version}")
    if exact >= 0:
        return exact + len(text)  # an exact pin outranks a bare name
    best = -1
    spellings = {requirement.name, requirement.key, requirement.key.replace("-", "_")}
    for spelling in spellings:
        for match in re.finditer(rf"(?<![\w.-]){re.escape(spelling)}(?![\w-])", text, re.IGNORECASE):
            best = max(best, match.start())
    return best


def blamed_requirement(output: str, requirements: list[Requirement]) -> Requirement | None:
    """The requirement the installer's error names (the one it mentioned last)."""
    scored = [(_mentions(output, requirement), requirement) for requirement in requirements]
    scored = [(score, requirement) for score, requirement in scored if score >= 0]
    if not scored:
        return requirements[0] if len(requirements) == 1 else None
    return max(scored, key=lambda pair: pair[0])[1]


def last_lines(output: str, count: int = OUTPUT_LINES_KEPT) -> str:
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    return "\n".join(lines[-count:])


def install(installer: Installer, requirements: list[Requirement], target: str, index: PackageIndex,
            timeout: float = DEFAULT_INSTALL_SECONDS, python: str = sys.executable) -> None:
    """Install `requirements` into `target` (a new directory); raise InstallError on failure."""
    os.makedirs(target, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="burla-requirements-", delete=False) as handle:
        handle.write("\n".join(requirement.spec() for requirement in requirements) + "\n")
        requirements_file = handle.name
    environ = dict(os.environ, NO_COLOR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        command = install_command(installer, requirements_file, target, index, python, environ)
        try:
            finished = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=environ, timeout=timeout,
            )
        except subprocess.TimeoutExpired as expired:
            output = (expired.output or b"").decode(errors="replace")
            raise InstallError(
                f"{installer.kind} did not finish installing within {timeout:.0f} s", None, last_lines(output)
            ) from None
        except OSError as error:
            raise InstallError(f"cannot run {installer.kind} ({command[0]}): {error}", None, "") from None
    finally:
        os.unlink(requirements_file)
    output = finished.stdout.decode(errors="replace")
    if finished.returncode != 0:
        raise InstallError(
            f"{installer.kind} exited with status {finished.returncode}", blamed_requirement(output, requirements),
            last_lines(output),
        )
