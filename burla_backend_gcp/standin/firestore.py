"""Google's Firestore emulator: find it, start it on 127.0.0.1, reset a database, stop it.

Two emulators can serve, tried in this order:
1. the gcloud SDK's jar (`google-cloud-cli-firestore-emulator`, found with `dpkg -L` or in the
   usual SDK folders), run with Java. It serves gRPC and REST on one port and resets a database
   with `DELETE /emulator/v1/projects/P/databases/D/documents`.
2. npm `@firestore-emulator/server`, installed under the repository by
   `scripts/install-firestore-emulator` (never by hand): gRPC only, no transaction isolation, no
   ListDocuments/BatchWrite (GCP.md §1). `reset()` restarts it.

A port is picked first (the jar cannot report one it chose itself), readiness is `GET /` → `Ok`
(jar) or an accepted TCP connection (npm), and `stop()` waits on the process.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

JAR_NAME = "cloud-firestore-emulator.jar"
_SDK_DIRS = ("/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk", "/opt/google-cloud-sdk",
             "/snap/google-cloud-sdk/current", "~/google-cloud-sdk", "/usr/local/google-cloud-sdk")
REPO_ROOT = Path(__file__).resolve().parents[2]
NPM_DIR = REPO_ROOT / ".firestore-emulator"
_NPM_LAUNCHER = r"""
const { FirestoreServer } = require("@firestore-emulator/server");
// The emulator's own copy of grpc-js: credentials from another copy would be refused.
const grpc = require(require.resolve("@grpc/grpc-js", { paths: [require.resolve("@firestore-emulator/server")] }));
const port = process.argv[2];
const emulator = new FirestoreServer();
emulator.server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log(`listening on 127.0.0.1:${port}`);
});
process.on("SIGTERM", () => emulator.server.tryShutdown(() => process.exit(0)));
"""


class EmulatorNotFound(RuntimeError):
    """Neither the gcloud jar nor the npm emulator is installed; the message says how to get one."""


@dataclass(frozen=True)
class EmulatorCommand:
    kind: str  # "jar" or "npm"
    argv_prefix: tuple[str, ...]


def find_jar() -> Path | None:
    """The gcloud Firestore emulator's jar, if this machine has it."""
    if shutil.which("dpkg"):
        try:
            listing = subprocess.run(["dpkg", "-L", "google-cloud-cli-firestore-emulator"], capture_output=True,
                                     text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            if line.endswith(JAR_NAME) and Path(line).is_file():
                return Path(line)
    for root in _SDK_DIRS:
        for match in glob.glob(os.path.join(os.path.expanduser(root), "platform", "cloud-firestore-emulator", JAR_NAME)):
            return Path(match)
    return None


def find_emulator() -> EmulatorCommand:
    """The gcloud jar if present, else the npm emulator; BURLA_FIRESTORE_EMULATOR=jar|npm forces one."""
    forced = os.environ.get("BURLA_FIRESTORE_EMULATOR", "")
    jar = find_jar() if forced != "npm" else None
    if jar is not None and shutil.which("java"):
        return EmulatorCommand("jar", ("java", "-Duser.language=en", "-cp", str(jar),
                                       "com.google.cloud.datastore.emulator.firestore.CloudFirestore", "start",
                                       "--host=127.0.0.1"))
    if forced != "jar" and (NPM_DIR / "node_modules" / "@firestore-emulator" / "server").is_dir() and shutil.which("node"):
        launcher = NPM_DIR / "launch.js"
        if not launcher.exists() or launcher.read_text() != _NPM_LAUNCHER:
            launcher.write_text(_NPM_LAUNCHER)
        return EmulatorCommand("npm", ("node", str(launcher)))
    raise EmulatorNotFound(
        "No Firestore emulator found: install the gcloud one (apt package google-cloud-cli-firestore-emulator, "
        "and Java), or run scripts/install-firestore-emulator for the npm one."
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FirestoreEmulator:
    """One running emulator. `host` is what FIRESTORE_EMULATOR_HOST must say."""

    def __init__(self, log_path: Path, *, start_timeout_s: float = 60.0, reaper=None):
        """`reaper` (processes.Reaper): kills the emulator if its owner dies without stopping it."""
        self.command = find_emulator()
        self.reaper = reaper
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def kind(self) -> str:
        return self.command.kind

    def start(self, port: int = 0) -> "FirestoreEmulator":
        """Start on `port` (0: a free one, picked here: the jar cannot report one it chose)."""
        self.port = port or free_port()
        argv = list(self.command.argv_prefix)
        argv += [f"--port={self.port}"] if self.command.kind == "jar" else [str(self.port)]
        with open(self.log_path, "ab") as log:
            # Its own process group: stop() ends the JVM's helpers too, Ctrl-C does not reach it.
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        if self.reaper is not None:
            self.reaper.track(self.process.pid)
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Firestore emulator exited with status {self.process.returncode} while "
                                   f"starting; its log: {self.log_path}")
            if self._ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"the Firestore emulator did not answer within {self.start_timeout_s} s; log: {self.log_path}")

    def _ready(self) -> bool:
        if self.command.kind == "npm":
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False
        try:
            with urllib.request.urlopen(f"http://{self.host}/", timeout=1) as response:
                return response.read().strip() == b"Ok"
        except (urllib.error.URLError, OSError):
            return False

    def reset(self, project: str, database: str = "(default)") -> None:
        """Delete every document of one database (the npm emulator: restart it, all databases)."""
        if self.command.kind == "npm":
            port = self.port
            self.stop()
            self.start(port)  # the same port: clients keep FIRESTORE_EMULATOR_HOST
            return
        request = urllib.request.Request(
            f"http://{self.host}/emulator/v1/projects/{project}/databases/{database}/documents", method="DELETE")
        with urllib.request.urlopen(request, timeout=30) as response:
            if response.status != 200:
                raise RuntimeError(f"resetting Firestore emulator database {database!r} answered {response.status}")

    def stop(self, timeout_s: float = 15.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if self.reaper is not None:
            self.reaper.forget(process.pid)
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, 15)
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
