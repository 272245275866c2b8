"""The node supervisor: what a node VM runs inside the job's container image (`python -m
burla_backend_gcp.vm.node`, started by the startup script).

    metadata server ─► who am I (name, zone, project, addresses, NodeAttributes), a token for
          │            the VM's service account
          ▼
    `python -m burla_core.node start --secrets-on-stdin --cpus … --image …` (the node agent),
          │  started at once: its imports overlap ▼
    Secret Manager ─► node token, cluster CA ─► a TLS certificate for this node's addresses
          ▼  on the agent's stdin (never on disk); its URL and /health
    nodes/{name} in Firestore: READY, address, CPUs, RAM, GPUs, image, versions
          ▼  every heartbeat_s
    heartbeat_at, READY/RUNNING (from the agent's jobs) ── idle for idle_timeout_s ──► DELETED
                                                          preempted (metadata) ──────► DELETED
                                                          agent died / cannot start ─► FAILED
                                                                        └─► delete this VM

Whatever ends it, it writes why into its node document first, then deletes its own VM (the
service would otherwise find it by its missing heartbeats). It exits 0 once it has reported
(the startup script reports only unexpected exits), and on SIGTERM (the VM shutting down) it
marks the node DELETED.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from .. import schema
from .attributes import NodeAttributes

log = logging.getLogger("burla.node-supervisor")

AGENT_START_SECONDS = 120.0
HEALTH_TIMEOUT_S = 5.0
HEALTH_FAILURES = 3  # the agent is taken for dead after this many failed health checks in a row
TELL_TIMEOUT_S = 5.0
READY_PREFIX = "burla node agent listening on "


class Metadata:
    """The GCE metadata server (the stand-in's, where BURLA_METADATA_URL names one)."""

    def __init__(self) -> None:
        base = os.environ.get("BURLA_METADATA_URL") or "http://metadata.google.internal"
        self.base = base.rstrip("/") + "/computeMetadata/v1/"

    def get(self, path: str, timeout: float = 10.0) -> str:
        request = urllib.request.Request(self.base + path, headers={"Metadata-Flavor": "Google"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.read().decode()

    def get_json(self, path: str) -> object:
        return json.loads(self.get(path + ("&" if "?" in path else "?") + "recursive=true"))

    def wait_preempted(self, timeout_s: float = 60.0) -> bool:
        """Block until the VM is preempted (True) or `timeout_s` passed (False)."""
        value = self.get(f"instance/preempted?wait_for_change=true&timeout_sec={int(timeout_s)}", timeout=timeout_s + 10)
        return value.strip() == "TRUE"


class Supervisor:
    def __init__(self) -> None:
        self.metadata = Metadata()
        self.name = self.metadata.get("instance/name").strip()
        self.zone = self.metadata.get("instance/zone").strip().rsplit("/", 1)[-1]
        self.project = self.metadata.get("project/project-id").strip()
        self.attributes = NodeAttributes.from_metadata(self.metadata.get_json("instance/attributes/"))
        interface = self.metadata.get_json("instance/network-interfaces/0/")
        self.internal_ip = interface.get("ip") or "127.0.0.1"
        access = (interface.get("access-configs") or {}).get("0") or {}
        self.external_ip = access.get("external-ip") or self.internal_ip
        self.stopping = threading.Event()
        self.ended = threading.Lock()  # held by whoever reports the end (once)
        self.reported = threading.Event()  # set once the end is reported
        self.agent: subprocess.Popen | None = None
        self.token: str | None = None  # the node token, once read
        self.runners: dict[str, subprocess.Popen] = {}  # detached jobs' runners this node hosts
        self.runners_done: set[str] = set()
        # Under HOME: on a VM the container's, on the stand-in the VM's own folder (removed with it).
        self.workdir = Path(tempfile.mkdtemp(prefix="burla-node-", dir=os.environ.get("HOME") or None))
        self.agent_log = self.workdir / "agent.log"
        # The Firestore client takes most of a second to import: made in a thread, while the
        # secrets are read and the agent starts (`node` waits for it).
        self._documents = None
        self._documents_ready = threading.Event()
        self._documents_error: BaseException | None = None
        threading.Thread(target=self._open_documents, name="firestore", daemon=True).start()

    def _open_documents(self) -> None:
        from .. import clients

        try:
            self._documents = clients.firestore(self.project, self.attributes.database)
        except BaseException as error:  # raised where the document is first needed
            self._documents_error = error
        finally:
            self._documents_ready.set()

    @property
    def node(self):
        """This node's Firestore document."""
        return self.documents.collection(schema.NODES).document(self.name)

    @property
    def documents(self):
        """The cluster's Firestore database (waits for the client made in a thread)."""
        self._documents_ready.wait()
        if self._documents_error is not None:
            raise self._documents_error
        return self._documents

    # --- the node document ---------------------------------------------------------------------

    def write(self, **values) -> None:
        self.node.set(values, merge=True)

    def log_line(self, text: str) -> None:
        log.info("%s", text)
        try:
            self.node.collection(schema.NODE_LOGS).add({"time": time.time(), "text": text})
        except Exception:  # the log is a courtesy; the status write is what matters
            log.warning("could not write a node log line", exc_info=True)

    def end(self, status: str, reason: str, delete_vm: bool = True) -> None:
        """Report why the node ends (once), stop the agent, delete this VM."""
        if not self.ended.acquire(blocking=False):
            return
        self.stopping.set()
        log.info("node %s ends (%s): %s", self.name, status, reason)
        try:
            self.write(status=status, status_reason=reason, ended_at=time.time())
            self.tell_cluster()
        except Exception:
            log.exception("could not write the node's end into Firestore")
        self.stop_agent()
        if delete_vm:
            self.delete_vm()
        self.reported.set()

    def tell_cluster(self) -> None:
        """Tell the cluster service that this node's document changed, so that a caller waiting
        for this node hears of it now rather than at the service's next read (best effort:
        the service reads the documents on its own anyway)."""
        url = self.attributes.cluster_url
        if not url or not self.token:
            return
        request = urllib.request.Request(f"{url.rstrip('/')}/v1/nodes/{self.name}/changed", data=b"{}", method="POST",
                                         headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TELL_TIMEOUT_S) as answer:
                answer.read()
        except (OSError, ValueError) as error:
            log.info("could not tell the cluster service at %s that this node changed: %s", url, error)

    def delete_vm(self) -> None:
        from google.api_core import exceptions

        from .. import clients

        try:
            clients.instances().delete(project=self.project, zone=self.zone, instance=self.name)
        except exceptions.NotFound:
            pass
        except Exception:
            log.exception("could not delete this VM (%s); the cluster service deletes it when its heartbeat stops", self.name)

    # --- secrets and TLS -------------------------------------------------------------------------

    def fetch_secrets(self) -> dict[str, str]:
        """The agent's secrets: the node token, and a TLS certificate for this node's addresses
        signed by the cluster CA (made here; the key never leaves this VM's memory)."""
        from ..tls import KeyPair, node_certificate

        from .. import clients

        values = clients.access_secrets_on_a_vm(self.project, list(schema.NODE_SECRETS))
        token = values[schema.NODE_TOKEN_SECRET].strip()
        ca = KeyPair(values[schema.CA_CERT_SECRET], values[schema.CA_KEY_SECRET])
        pair = node_certificate(ca, self.name, [self.internal_ip, self.external_ip])
        self.token = token
        self.ca_pem = ca.cert_pem
        return {"token": token, "tls_cert": pair.cert_pem, "tls_key": pair.key_pem}

    # --- the agent -------------------------------------------------------------------------------

    def start_agent(self) -> None:
        """Start the node agent, which takes its secrets on stdin: its interpreter and imports
        (most of a second) overlap the reading of the secrets and the making of its certificate."""
        a = self.attributes
        command = [
            sys.executable, "-m", "burla_core.node", "start", "--host", self.internal_ip, "--port", str(a.node_port),
            "--secrets-on-stdin", "--name", self.name,
            "--cpus", str(a.cpus), "--ram-gb", f"{a.ram_gb:g}", "--image", a.image, "--job-lease", f"{a.job_lease_s:g}",
        ]
        with open(self.agent_log, "ab") as agent_log:
            self.agent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=agent_log, stdin=subprocess.PIPE)

    def agent_listening(self, secrets: dict[str, str]) -> str:
        """Hand the agent its secrets; its URL once it listens. RuntimeError says why it did not."""
        agent = self.agent
        try:
            agent.stdin.write(json.dumps(secrets).encode() + b"\n")
            agent.stdin.close()
        except OSError:  # it exited already: its log says why
            pass
        deadline = time.monotonic() + AGENT_START_SECONDS
        stdout = agent.stdout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                continue
            line = stdout.readline().decode(errors="replace").strip()
            if line.startswith(READY_PREFIX):
                port = line[len(READY_PREFIX):].rsplit(":", 1)[1]
                threading.Thread(target=self._drain, args=(stdout,), daemon=True).start()
                return f"https://{self.external_ip}:{port}"
            if not line and agent.poll() is not None:
                break
        status = agent.poll()
        self.stop_agent()
        raise RuntimeError(f"the node agent did not start (exit status {status}): {self.agent_log_tail()}")

    @staticmethod
    def _drain(stream) -> None:
        while stream.read(65536):
            pass

    def agent_log_tail(self, characters: int = 1500) -> str:
        try:
            return self.agent_log.read_text(errors="replace")[-characters:].strip() or "(no output)"
        except OSError:
            return "(no log)"

    def stop_agent(self) -> None:
        agent = self.agent
        if agent is None or agent.poll() is not None:
            return
        agent.terminate()
        try:
            agent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()

    def health(self, url: str) -> dict:
        context = ssl.create_default_context(cadata=self.ca_pem)
        request = urllib.request.Request(url + "/v1/health", headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT_S, context=context) as answer:
            return json.loads(answer.read())

    # --- the life of the node --------------------------------------------------------------------

    def run(self) -> int:
        a = self.attributes
        threading.Thread(target=self.write, kwargs={"boot_progress": "starting the node agent"}, daemon=True).start()
        try:
            self.start_agent()
            url = self.agent_listening(self.fetch_secrets())
            report = self.health(url)
        except Exception as error:  # the agent cannot start: say why, then go (end() stops it)
            self.log_line(f"the node could not start: {error}")
            self.end(schema.FAILED, f"the node agent could not start: {error}")
            return 0
        now = time.time()
        self.write(
            status=schema.READY, boot_progress="", address=url, cpus=report["cpus"], ram_gb=report["ram_gb"],
            gpus=report["gpus"], image=report["image"], python=report["python"], burla=report["burla"],
            ready_at=now, heartbeat_at=now, idle_timeout_s=a.idle_timeout_s,
        )
        self.tell_cluster()
        self.log_line(f"ready at {url} ({report['cpus']} CPUs, {report['ram_gb']} GB, {len(report['gpus'])} GPU(s))")
        threading.Thread(target=self.watch_preemption, name="preemption", daemon=True).start()
        self.heartbeat(url)
        self.reported.wait(30.0)  # a SIGTERM's report runs in a thread of its own
        return 0

    def heartbeat(self, url: str) -> None:
        from .usage import UsageSampler

        a = self.attributes
        usage = UsageSampler()
        idle_since = time.monotonic()
        failures = 0
        status = schema.READY
        while not self.stopping.wait(a.heartbeat_s):
            if self.agent is not None and self.agent.poll() is not None:
                self.end(schema.FAILED, f"the node agent exited with status {self.agent.returncode}: {self.agent_log_tail(600)}")
                return
            try:
                jobs = int(self.health(url).get("jobs", 0))
                failures = 0
            except (OSError, ValueError, urllib.error.URLError) as error:
                failures += 1
                if failures >= HEALTH_FAILURES:
                    self.end(schema.FAILED, f"the node agent stopped answering ({error})")
                    return
                continue
            try:
                hosting = self.tend_runners()
            except Exception:  # Firestore unavailable for a beat: the runners go on, tended next beat
                log.warning("tending the detached jobs' runners failed", exc_info=True)
                hosting = bool(self.runners)
            now = time.monotonic()
            if jobs or hosting:
                idle_since = now
            elif now - idle_since >= a.idle_timeout_s:
                self.end(schema.DELETED, f"idle for {a.idle_timeout_s:.0f} s")
                return
            status = schema.RUNNING if jobs else schema.READY
            if self.stopping.is_set():
                return
            # The dashboard's view of the node: its machine's use, and since when it is idle.
            self.write(status=status, heartbeat_at=time.time(), **usage.sample(),
                       idle_since=None if jobs else time.time() - (now - idle_since))

    def tend_runners(self) -> bool:
        """Start the runners the service assigned to this node (its document's `runners`), and
        clear those that ended. True while any runs (the node is not idle then)."""
        from google.cloud import firestore

        from ..settings import CLUSTER_URL_ENV, TOKEN_ENV

        assigned = (self.node.get().to_dict() or {}).get("runners") or {}
        for job_id, info in assigned.items():
            if job_id in self.runners or job_id in self.runners_done:
                continue
            env = dict(os.environ, **{CLUSTER_URL_ENV: info["cluster_url"], TOKEN_ENV: info["token"],
                                      "BURLA_DATABASE": self.attributes.database, "GOOGLE_CLOUD_PROJECT": self.project})
            with open(self.workdir / f"runner-{job_id}.log", "ab") as runner_log:
                self.runners[job_id] = subprocess.Popen(
                    [sys.executable, "-m", "burla_backend_gcp.runner", job_id], stdout=runner_log, stderr=runner_log,
                    stdin=subprocess.DEVNULL, env=env)
            self.log_line(f"started the runner of detached job {job_id}")
        for job_id, process in list(self.runners.items()):
            if process.poll() is None:
                continue
            del self.runners[job_id]
            self.runners_done.add(job_id)
            self.node.update({f"runners.`{job_id}`": firestore.DELETE_FIELD})
            self.log_line(f"the runner of detached job {job_id} ended (status {process.returncode})")
            if process.returncode != 0:
                self.runner_failed(job_id, process.returncode)
        return bool(self.runners)

    def runner_failed(self, job_id: str, status: int) -> None:
        """A runner that crashed before recording how its job ended: the job failed, with why."""
        job = self.documents.collection(schema.JOBS).document(job_id)
        if (job.get().to_dict() or {}).get("status") in schema.JOB_FINISHED:
            return
        try:
            tail = (self.workdir / f"runner-{job_id}.log").read_text(errors="replace")[-1500:].strip()
        except OSError:
            tail = "(no output)"
        message = f"the runner of job {job_id} on node {self.name} exited with status {status}: {tail}"
        job.update({"status": schema.JOB_FAILED, "ended_at": time.time(), "running": 0,
                    "error": {"type_name": "RunnerLost", "kind": "function", "message": message, "traceback": "",
                              "exception_only": f"RunnerLost: {message}", "how": "", "frames": []}})

    def watch_preemption(self) -> None:
        while not self.stopping.is_set():
            try:
                if self.metadata.wait_preempted():
                    self.end(schema.DELETED, "preempted by Compute Engine", delete_vm=False)
                    return
            except OSError:
                if self.stopping.wait(5.0):
                    return

    def on_sigterm(self, signum, frame) -> None:
        threading.Thread(target=self.end, args=(schema.DELETED, "the VM shut down", False), daemon=True).start()


def main() -> int:
    from .. import netguard

    netguard.install_if_asked()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s burla-node %(levelname)s %(message)s", stream=sys.stderr,
                        force=True)
    supervisor = Supervisor()
    signal.signal(signal.SIGTERM, supervisor.on_sigterm)
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
