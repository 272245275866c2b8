"""A provisioner can stop a running job (the gcp backend does when someone presses Stop on the
dashboard): `Provisioner.stop_requested` is asked while the job runs, and a reason cancels the
job as Ctrl-C would, with a JobCanceled that names it."""

from __future__ import annotations

import time

import pytest

import burla
from burla_core import plugins
from burla_core.errors import JobCanceled
from burla_core.hookspecs import ProvisionerRecord, hookimpl


def test_a_provisioner_that_asks_to_stop_cancels_the_job_with_its_reason(monkeypatch):
    from burla_backend_local.provisioner import LocalProvisioner

    asked = []

    class StoppedFromOutside(LocalProvisioner):
        started = None

        def stop_requested(self, job):
            asked.append(job.job_id)
            if self.started is None:
                self.started = time.monotonic()
            return "stopped from the dashboard" if time.monotonic() - self.started > 0.5 else None

    class Plugin:
        @hookimpl
        def burla_register_provisioners(self, register):
            register(ProvisionerRecord(name="stoppable", factory=StoppedFromOutside, transport="local"))

    monkeypatch.setattr(plugins, "_registry", plugins.load_registry(extra_plugins=(Plugin(),)))
    began = time.monotonic()
    with pytest.raises(JobCanceled, match=r"was canceled \(stopped from the dashboard\)"):
        burla.remote_parallel_map(time.sleep, [0.2] * 200, backend="stoppable", spinner=False)
    assert time.monotonic() - began < 20, "the job ran on after the provisioner asked to stop it"
    assert asked, "stop_requested was never asked"


def test_the_default_provisioner_never_stops_a_job():
    assert burla.remote_parallel_map(abs, [-1, -2], spinner=False) == [1, 2]
