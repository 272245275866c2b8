"""Errors about func_gpu name the value the caller passed ("A100"), never only the canonical
family ("A100_40G") the request carries: on the local backend, the nodes backend, and a node
agent refusing a job."""

from __future__ import annotations

import json
import re

import pytest

import burla
from burla_core.gpus import GPU_FAMILIES, describe_func_gpu, validate_gpu_name
from burla_core.node.testing import start_agents

from .conftest import TESTS_DIR
from .node.node_helpers import Http

TOKEN = "gpu-names-test-token-0123456789"


def written_names(message: str) -> set[str]:
    """The func_gpu values a message shows as the caller's: func_gpu='X' or 'Y'."""
    match = re.search(r"func_gpu=((?:'[^']*'(?: or )?)+)", message)
    assert match, f"the message names no func_gpu value: {message}"
    return set(re.findall(r"'([^']*)'", match.group(1)))


@pytest.mark.parametrize("name", list(GPU_FAMILIES))
def test_a_family_is_described_with_every_name_that_asks_for_it(name):
    family = validate_gpu_name(name)
    names = written_names(describe_func_gpu(family))
    assert name in names, f"{name!r} asks for {family} but is not among {names}"
    assert names == {each for each, named in GPU_FAMILIES.items() if named == family}
    assert written_names(describe_func_gpu(family, name)) == {name}


def test_an_unknown_gpu_in_the_wrong_case_suggests_the_right_one():
    with pytest.raises(burla.UnknownGPU) as caught:
        burla.remote_parallel_map(abs, [1], func_gpu="a100", spinner=False)
    assert "func_gpu='a100'" in str(caught.value) and "did you mean 'A100'" in str(caught.value), caught.value


@pytest.mark.parametrize("name", ["A100", "H100", "A100_80G"])
def test_the_local_backend_names_the_gpu_as_passed(fake_gpus, name):
    fake_gpus("")
    with pytest.raises(burla.NoCompatibleNodes) as caught:
        burla.remote_parallel_map(abs, [1], func_gpu=name, spinner=False, backend="local")
    assert name in written_names(str(caught.value)), caught.value
    assert "no NVIDIA GPU" in str(caught.value), caught.value


@pytest.fixture(scope="module")
def gpu_less_agent():
    """An agent that finds no GPU (a stand-in nvidia-smi listing none)."""
    env = {"BURLA_NVIDIA_SMI": str(TESTS_DIR / "fake_nvidia_smi.py"), "FAKE_GPUS": ""}
    (agent,) = start_agents(1, TOKEN, env=env)
    yield agent
    agent.close()


def test_the_nodes_backend_names_the_gpu_as_passed(gpu_less_agent, monkeypatch):
    monkeypatch.setenv("BURLA_NODES", gpu_less_agent.url)
    monkeypatch.setenv("BURLA_NODE_TOKEN", TOKEN)
    with pytest.raises(burla.NoCompatibleNodes) as caught:
        burla.remote_parallel_map(abs, [1], func_gpu="H100", spinner=False, backend="nodes")
    message = str(caught.value)
    assert "H100" in written_names(message), message
    assert "image=None" not in message, f"an image the caller did not ask for is noise: {message}"


def test_a_node_refusing_a_gpu_job_names_every_spelling_of_it(gpu_less_agent):
    status, _, body = Http(gpu_less_agent.url, TOKEN).create_job("gpu-job", abs, func_gpu="A100_40G")
    assert status == 409, body
    answer = json.loads(body)
    assert answer["error"] == "no_capacity", answer
    assert written_names(answer["message"]) == {"A100", "A100_40G"}, answer["message"]
