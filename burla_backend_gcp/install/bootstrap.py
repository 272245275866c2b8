"""The cluster service container's command (`python -c <this file>`), standard library only.

    Cloud Run starts python:3.12-slim with this program ─► fetch the code archive from the bucket
      (the service account's token from the metadata server) and check its SHA-256
    ─► pip-install the requirements the image lacks (none, on an image that has them)
    ─► run `python -m burla_backend_gcp.service` from the archive

Configured by the revision's environment (service.py sets it): BURLA_CODE_URI (gs://BUCKET/OBJECT),
BURLA_CODE_SHA256, BURLA_REQUIREMENTS (a JSON list of pip requirements), BURLA_SERVICE_MODULE.
Against the GCP stand-in the same program runs: Storage is $BURLA_GCP_STANDIN and the metadata
server $GCE_METADATA_HOST, as google-auth reads them.
"""

import hashlib
import importlib
import importlib.metadata
import json
import os
import re
import runpy
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request

PIP_TIMEOUT_S = 900
FETCH_TIMEOUT_S = 120


def _say(message):
    sys.stderr.write(f"burla bootstrap: {message}\n")
    sys.stderr.flush()


def _access_token():
    host = os.environ.get("GCE_METADATA_HOST") or "metadata.google.internal"
    request = urllib.request.Request(f"http://{host}/computeMetadata/v1/instance/service-accounts/default/token",
                                     headers={"Metadata-Flavor": "Google"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as answer:
        return json.loads(answer.read())["access_token"]


def fetch_code(uri, sha256):
    """The archive at gs://BUCKET/OBJECT, saved under the temporary folder; its path."""
    match = re.fullmatch(r"gs://([^/]+)/(.+)", uri)
    if not match:
        raise SystemExit(f"burla bootstrap: BURLA_CODE_URI must be gs://BUCKET/OBJECT, not {uri!r}")
    path = os.path.join(tempfile.gettempdir(), f"burla-code-{sha256[:16]}.zip")
    if os.path.exists(path):
        with open(path, "rb") as existing:
            if hashlib.sha256(existing.read()).hexdigest() == sha256:
                return path
    base = (os.environ.get("BURLA_GCP_STANDIN") or "https://storage.googleapis.com").rstrip("/")
    url = f"{base}/download/storage/v1/b/{match.group(1)}/o/{urllib.parse.quote(match.group(2), safe='')}?alt=media"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {_access_token()}"})
    with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as answer:
        data = answer.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"burla bootstrap: {uri} has SHA-256 {digest}, not {sha256}: run `burla install` again")
    with open(path + ".part", "wb") as out:
        out.write(data)
    os.replace(path + ".part", path)
    return path


def missing_requirements(requirements):
    """The requirements whose distribution is not installed (versions are pip's business)."""
    missing = []
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9._-]+", requirement).group(0)
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(requirement)
    return missing


def main():
    requirements = json.loads(os.environ.get("BURLA_REQUIREMENTS") or "[]")
    missing = missing_requirements(requirements)
    if missing:
        _say(f"installing {len(missing)} requirements: {' '.join(missing)}")
        subprocess.run([sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
                        "--quiet", *missing], check=True, timeout=PIP_TIMEOUT_S)
        importlib.invalidate_caches()
    path = fetch_code(os.environ["BURLA_CODE_URI"], os.environ["BURLA_CODE_SHA256"])
    sys.path.insert(0, path)
    module = os.environ.get("BURLA_SERVICE_MODULE") or "burla_backend_gcp.service"
    _say(f"running {module} from {path}")
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
