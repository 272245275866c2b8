"""Test fixtures for environment sync: wheels made here, a PEP 503 index on 127.0.0.1, and bare
virtual environments that hold burla and its dependencies and nothing else.

    make_wheel(dir, "bsync-alpha", "1.0", {"bsync_alpha/__init__.py": "..."})   a real wheel file
    IndexServer(wheel_dir)          http://127.0.0.1:PORT/simple/ serving those wheels (PEP 503)
    dependency_farm(dir)            burla + its runtime closure + pip + uv, as links into this venv
    bare_venv(dir, farm)            `python -m venv --without-pip`, with the farm on its path
    VenvAgent(python, token, ...)   a node agent run by such a venv, in a directory of its own

Linking the farm instead of installing burla's dependencies keeps every fixture offline and makes
a bare venv in a fraction of a second; the farm looks like a site-packages directory (it is one
in name), so to the code under test its distributions are installed ones.
"""

from __future__ import annotations

import base64
import hashlib
import html
import http.server
import importlib.metadata
import os
import re
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

from burla_core.node.testing import AgentProcess

REPO_ROOT = Path(__file__).resolve().parents[2]
OWN_PACKAGES = ("burla", "burla_core", "burla_backend_local", "burla_backend_nodes", "burla_backend_gcp", "burla_cli")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def make_wheel(directory: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A pure-Python wheel of `files` (archive path -> text), built as the wheel spec says."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{re.sub(r'[-.]+', '_', name)}-{version}"
    dist_info = f"{stem}.dist-info"
    contents = dict(files)
    contents[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    contents[f"{dist_info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: burla-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record_lines = []
    for path, text in contents.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{path},sha256={digest},{len(data)}")
    record_lines.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = "\n".join(record_lines) + "\n"
    path = directory / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, text in contents.items():
            archive.writestr(zipfile.ZipInfo(member, (2020, 1, 1, 0, 0, 0)), text)
    return path


def probe_wheel(directory: Path, name: str, version: str) -> Path:
    """A package whose module says its version and where it was imported from."""
    module = name.replace("-", "_")
    return make_wheel(directory, name, version, {
        f"{module}/__init__.py": f"VERSION = {version!r}\n\ndef where():\n    return __file__\n",
    })


class IndexServer:
    """A PEP 503 simple index of the wheels in `wheel_dir`, on a free 127.0.0.1 port."""

    def __init__(self, wheel_dir: Path) -> None:
        self.wheel_dir = wheel_dir
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                status, body, kind = server.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/simple/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="test-index", daemon=True)
        self.thread.start()

    def _projects(self) -> dict[str, list[Path]]:
        projects: dict[str, list[Path]] = {}
        for wheel in sorted(self.wheel_dir.glob("*.whl")):
            projects.setdefault(_normalize(wheel.name.split("-")[0]), []).append(wheel)
        return projects

    def answer(self, path: str) -> tuple[int, bytes, str]:
        page = "text/html"
        projects = self._projects()
        if path in ("/simple", "/simple/"):
            links = "".join(f'<a href="/simple/{name}/">{name}</a>\n' for name in projects)
            return 200, f"<!DOCTYPE html><html><body>{links}</body></html>".encode(), page
        match = re.fullmatch(r"/simple/([^/]+)/?", path)
        if match:
            wheels = projects.get(_normalize(match.group(1)))
            if not wheels:
                return 404, b"not found", page
            links = "".join(
                f'<a href="/files/{html.escape(w.name)}#sha256={hashlib.sha256(w.read_bytes()).hexdigest()}">{html.escape(w.name)}</a>\n'
                for w in wheels
            )
            return 200, f"<!DOCTYPE html><html><body>{links}</body></html>".encode(), page
        match = re.fullmatch(r"/files/([^/]+\.whl)", path)
        if match and (self.wheel_dir / match.group(1)).is_file():
            return 200, (self.wheel_dir / match.group(1)).read_bytes(), "application/octet-stream"
        return 404, b"not found", page

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _runtime_closure(roots: list[str]) -> list[importlib.metadata.Distribution]:
    """The distributions `roots` need to run (extras left out), as installed in this venv."""
    found: dict[str, importlib.metadata.Distribution] = {}
    pending = list(roots)
    while pending:
        name = _normalize(pending.pop())
        if name in found:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another Python version or platform
        found[name] = distribution
        for requirement in distribution.requires or ():
            if "extra" in requirement.partition(";")[2]:
                continue
            pending.append(re.split(r"[\s;<>=!~\[(@]", requirement, maxsplit=1)[0])
    return list(found.values())


def dependency_farm(directory: Path) -> Path:
    """A site-packages directory of links: burla (this checkout), its runtime dependencies, pip
    and uv (with uv's binary where `uv.find_uv_bin` looks for it)."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site_dir = directory / "lib" / version / "site-packages"
    site_dir.mkdir(parents=True, exist_ok=True)
    for distribution in _runtime_closure(["burla-open", "pip", "uv"]):
        if _normalize(distribution.metadata["Name"]) == "burla-open":
            for package in OWN_PACKAGES:
                _link(site_dir / package, REPO_ROOT / package)
            metadata_dir = Path(str(distribution._path))  # the editable install's dist-info
            _link(site_dir / metadata_dir.name, metadata_dir)
            continue
        for file in distribution.files or ():
            if not file.parts or file.parts[0] == ".." or file.parts[0] == "__pycache__":
                continue
            top = file.parts[0]
            _link(site_dir / top, Path(str(distribution.locate_file(top))))
    uv_binary = Path(sys.executable).parent / "uv"
    if uv_binary.exists():
        (directory / "bin").mkdir(exist_ok=True)
        _link(directory / "bin" / "uv", uv_binary)
    return site_dir


def _link(link: Path, target: Path) -> None:
    if not link.exists() and not link.is_symlink() and target.exists():
        link.symlink_to(target)


def bare_venv(directory: Path, farm: Path) -> Path:
    """A virtual environment with nothing in it but the farm; returns its python."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(directory)], check=True, timeout=120)
    python = directory / "bin" / "python"
    site_dir = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()
    Path(site_dir, "burla_test_farm.pth").write_text(str(farm) + "\n")
    return python


def offline_install_env(index_url: str, cache_dir: Path) -> dict:
    """Variables that point uv and pip at the test index only (never this machine's config)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "UV_"))}
    env.pop("PYTHONPATH", None)
    env.update({
        "PIP_INDEX_URL": index_url,
        "UV_INDEX_URL": index_url,
        "PIP_CONFIG_FILE": os.devnull,
        "UV_NO_CONFIG": "1",
        "UV_CACHE_DIR": str(cache_dir),
        "PIP_NO_CACHE_DIR": "1",
    })
    return env


def install_into(python: Path, requirements: list[str], index_url: str, cache_dir: Path) -> None:
    """Install `requirements` into the venv of `python` from the test index, with uv."""
    uv = Path(sys.executable).parent / "uv"
    subprocess.run(
        [str(uv), "pip", "install", "--python", str(python), "--no-deps", "--index-url", index_url, *requirements],
        check=True, capture_output=True, env=offline_install_env(index_url, cache_dir), timeout=120,
    )


class VenvAgent(AgentProcess):
    """An agent run by another venv's python, in a directory of its own, with only `env`."""

    def __init__(self, python: Path, token: str, args: tuple, env: dict, cwd: Path) -> None:
        super().__init__(token, args, env)
        self.python = python
        self.cwd = cwd

    def command(self) -> list[str]:
        return [str(self.python), "-m", "burla_core.node", "start", "--port", str(self.port), *self.args]

    def environment(self) -> dict:
        return dict(self.env, BURLA_NODE_TOKEN=self.token)

    def spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                env=self.environment(), cwd=self.cwd,
            )
