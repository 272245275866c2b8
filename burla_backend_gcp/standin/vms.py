"""A simulated VM: a local process group that runs the instance's `startup-script`.

Life of one VM, as the stand-in's Compute API drives it:

    insert ─► PROVISIONING ─► STAGING ─► RUNNING (the insert operation is DONE)
                                          │ boot delay (the guest boots)
                                          ▼
                        bash startup-script, in VM_DIR, PATH = the machine seam + PATH,
                        its own metadata server (identity = the instance's service account)
    delete ─► STOPPING ─► the process group is killed ─► gone
    preempt ─► preempted=TRUE, shutdown-script, SIGTERM, grace, SIGKILL ─► TERMINATED (or
               deleted, for instanceTerminationAction=DELETE)

Faults a test can cause (see `Faults` in compute.py): a guest that never boots, a preemption, a
cut network (the process group is frozen with SIGSTOP: it neither answers nor sends, as a VM
cut off from the network; `restore_network` resumes it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .metadata import MetadataIdentity, MetadataServer
from .processes import Processes, local_environment
from .seam import gpu_spec, write_stubs


@dataclass
class VmSpec:
    """What the instance was created with, as the simulated machine sees it."""

    name: str
    zone: str
    machine_type: str
    cpus: int
    memory_mb: int
    image: str
    accelerators: list[tuple[str, int]]
    service_account: str
    attributes: dict[str, str]
    termination_action: str  # "DELETE" or "STOP" (what a preemption does)


@dataclass
class SimulatedVm:
    spec: VmSpec
    directory: Path
    identity: MetadataIdentity
    process: subprocess.Popen | None = None
    metadata_server: MetadataServer | None = None
    frozen: bool = False
    stopped: threading.Event = field(default_factory=threading.Event)
    boot_failure: str = ""
    running_at: float = 0.0  # time.monotonic() when the instance reached RUNNING
    script_started_at: float = 0.0  # … and when its startup script started

    @property
    def serial_log(self) -> Path:
        return self.directory / "serial-port-1.log"

    def console(self, line: str) -> None:
        with open(self.serial_log, "a") as log:
            log.write(line.rstrip("\n") + "\n")

    def environment(self, extra: dict[str, str]) -> dict[str, str]:
        env = local_environment(extra)
        env.update(self.metadata_server.environment() if self.metadata_server else {})
        env.update({
            "PATH": f"{self.directory / 'bin'}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.directory / "home"),
            "BURLA_STANDIN_VM_NAME": self.spec.name,
            "BURLA_STANDIN_VM_ZONE": self.spec.zone,
            "BURLA_STANDIN_VM_MACHINE_TYPE": self.spec.machine_type,
            "BURLA_STANDIN_VM_CPUS": str(self.spec.cpus),
            "BURLA_STANDIN_VM_MEMORY_MB": str(self.spec.memory_mb),
            "BURLA_STANDIN_VM_IMAGE": self.spec.image,
            "BURLA_STANDIN_VM_GPUS": gpu_spec(self.spec.accelerators),
            "BURLA_STANDIN_VM_DIR": str(self.directory),
            "BURLA_NETGUARD": "1",
        })
        return env

    def boot(self, processes: Processes, metadata: MetadataServer, *, delay_s: float, extra_env: dict[str, str]) -> None:
        """Wait out the boot delay (a delete cuts it short), then run the startup script."""
        self.metadata_server = metadata
        (self.directory / "home").mkdir(parents=True, exist_ok=True)
        write_stubs(self.directory / "bin", has_gpus=bool(self.spec.accelerators))
        self.console(f"stand-in: booting {self.spec.name} ({self.spec.machine_type}, {self.spec.image})")
        if self.stopped.wait(delay_s):
            return
        if self.boot_failure:
            self.console(f"stand-in: the guest failed to boot: {self.boot_failure}")
            return
        script = self.spec.attributes.get("startup-script")
        if script is None:
            self.console("stand-in: no startup-script in the metadata; the VM idles")
            return
        path = self.directory / "startup-script"
        path.write_text(script)
        self.console("google_metadata_script_runner: starting startup script")
        self.script_started_at = time.monotonic()
        self.process = processes.spawn(["bash", str(path)], cwd=self.directory,
                                       env=self.environment(extra_env), log_path=self.serial_log)
        if self.stopped.is_set():  # deleted while the script was being started
            processes.stop(self.process, grace_s=0.1)

    def run_shutdown_script(self, processes: Processes, extra_env: dict[str, str], timeout_s: float) -> None:
        """Give the guest `timeout_s` after a preemption notice, running its shutdown-script if any."""
        script = self.spec.attributes.get("shutdown-script")
        if not script or self.metadata_server is None:
            self.stopped.wait(timeout_s)
            return
        path = self.directory / "shutdown-script"
        path.write_text(script)
        process = processes.spawn(["bash", str(path)], cwd=self.directory, env=self.environment(extra_env),
                                  log_path=self.serial_log)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        processes.stop(process, grace_s=0.5)

    def freeze(self, processes: Processes) -> None:
        self.frozen = True
        if self.process is not None:
            processes.signal_group(self.process, signal.SIGSTOP)

    def thaw(self, processes: Processes) -> None:
        self.frozen = False
        if self.process is not None:
            processes.signal_group(self.process, signal.SIGCONT)

    def halt(self, processes: Processes, *, grace_s: float) -> None:
        """Power the machine off: stop the boot, kill the process group, stop the metadata server."""
        self.stopped.set()
        if self.process is not None:
            status = processes.stop(self.process, grace_s=grace_s)
            self.console(f"stand-in: the startup script's process group stopped (status {status})")
        if self.metadata_server is not None:
            self.metadata_server.close()
            self.metadata_server = None

    def script_status(self) -> int | None:
        """The startup script's exit status, None while it runs or before it started."""
        return None if self.process is None else self.process.poll()
