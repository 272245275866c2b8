"""Google's Firestore emulator under the stand-in: found, started on 127.0.0.1, used by the
factory's Firestore client, reset per database, stopped. One emulator for the module (its start
is the slow part, 1–1.5 s)."""

from __future__ import annotations

import socket

import pytest

from burla_backend_gcp import clients
from burla_backend_gcp.standin import StandIn
from burla_backend_gcp.standin.firestore import EmulatorNotFound, find_emulator

try:
    find_emulator()
except EmulatorNotFound as missing:
    pytest.skip(f"no Firestore emulator here: {missing}", allow_module_level=True)


@pytest.fixture(scope="module")
def with_emulator():
    with StandIn(firestore=True) as running:
        yield running


@pytest.fixture
def emulator_env(with_emulator, monkeypatch):
    for key, value in with_emulator.child_environment().items():
        monkeypatch.setenv(key, value)
    return with_emulator


def test_documents_round_trip_through_the_factory_client(emulator_env):
    emulator = emulator_env.firestore_emulator
    assert emulator.host.startswith("127.0.0.1:")
    db = clients.firestore(emulator_env.project_id, database="burla")
    db.collection("nodes").document("n1").set({"status": "BOOTING", "gpus": 0})
    db.collection("nodes").document("n1").update({"status": "READY"})
    assert db.collection("nodes").document("n1").get().to_dict() == {"status": "READY", "gpus": 0}


def test_reset_empties_one_database_only(emulator_env):
    emulator = emulator_env.firestore_emulator
    burla = clients.firestore(emulator_env.project_id, database="burla")
    other = clients.firestore(emulator_env.project_id, database="other-db")
    burla.document("jobs/j1").set({"n": 1})
    other.document("jobs/j1").set({"n": 2})
    emulator.reset(project=emulator_env.project_id, database="burla")
    assert not burla.document("jobs/j1").get().exists
    if emulator.kind == "jar":  # the npm emulator can only restart, which empties every database
        assert other.document("jobs/j1").get().to_dict() == {"n": 2}


def test_the_factory_refuses_the_standin_without_an_emulator(monkeypatch, with_emulator):
    from burla_backend_gcp.errors import GcpStandinMisconfigured

    monkeypatch.setenv("BURLA_GCP_STANDIN", with_emulator.url)
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    with pytest.raises(GcpStandinMisconfigured, match="FIRESTORE_EMULATOR_HOST"):
        clients.firestore(with_emulator.project_id)


def test_stop_waits_for_the_emulator_to_exit(with_emulator):
    emulator = with_emulator.firestore_emulator
    process, port = emulator.process, emulator.port
    emulator.stop()
    assert process.poll() is not None, "the emulator was still running after stop()"
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the emulator's port still accepts connections"
