"""The `burla` command: help for every command, the jobs commands against a job store filled
here directly (no runner)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from burla_cli.main import cli
from burla_core import __version__
from burla_core.jobstore import CANCELED, DONE, FAILED, QUEUED, JobStore
from burla_core.serialization import error_info
from burla_core.types import JobSpec, ResourceRequest


@pytest.fixture(autouse=True)
def isolated_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BURLA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BURLA_CONFIG", str(tmp_path / "config.json"))
    return tmp_path / "data"


@pytest.fixture
def store():
    job_store = JobStore()
    yield job_store
    job_store.close()


def burla(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input, prog_name="burla")


def make_job(
    store: JobStore,
    function_name: str = "square",
    results: list | None = None,
    status: str = DONE,
    logs: list[tuple] = (),
    error_index: int | None = None,
    error: dict | None = None,
    runner_pid: int = 1,
) -> str:
    """A job as the runner would have left it, written straight into the store."""
    results = [] if results is None else results
    job = JobSpec(uuid.uuid4().hex[:12], b"", function_name, ResourceRequest())
    store.create_job(job, "local", len(results), "/tmp", [])
    store.add_inputs(job.job_id, [(index, pickle.dumps((index,))) for index in range(len(results))])
    if status == QUEUED:
        return job.job_id
    assert store.claim(job.job_id, runner_pid)
    store.write_batch(
        job.job_id,
        [(index, stream, text, 0.0) for index, stream, text in logs],
        [(index, pickle.dumps(value)) for index, value in enumerate(results)],
        running=0,
        failed=0,
        final=None if status == "running" else (status, error_index, error),
    )
    return job.job_id


COMMANDS = [
    ([], "run any Python function over a list of inputs"),
    (["install"], "Google Cloud project"),
    (["uninstall"], "Nothing billable"),
    (["dashboard"], "one-time sign-in link"),
    (["login"], "Authorize this machine"),
    (["jobs"], "detach=True"),
    (["jobs", "list"], "newest first"),
    (["jobs", "status"], "status"),
    (["jobs", "logs"], "--follow"),
    (["jobs", "results"], "input order"),
    (["jobs", "cancel"], "Stop a running job"),
    (["jobs", "prune"], "Delete finished jobs"),
    (["node"], "BURLA_NODES"),
    (["node", "start"], "--token-file"),
    (["node", "health"], "slots"),
    (["node", "token"], "token"),
    (["node", "jobs"], "Exit status"),
]


@pytest.mark.parametrize("command, phrase", COMMANDS, ids=[" ".join(c) or "burla" for c, _ in COMMANDS])
def test_every_command_explains_itself_with_help(command, phrase):
    result = burla(*command, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"Usage: burla {' '.join(command)}".rstrip()), result.output
    assert phrase in result.output, f"`burla {' '.join(command)} --help` does not mention {phrase!r}:\n{result.output}"


def every_command(group: click.Group = cli, path: tuple = ()):
    yield path, group
    for name, command in getattr(group, "commands", {}).items():
        yield from every_command(command, (*path, name))


@pytest.mark.parametrize("path, command", list(every_command()), ids=lambda value: " ".join(value) if isinstance(value, tuple) else "")
def test_every_command_and_group_has_a_description_an_example_and_documented_options(path, command):
    text = burla(*path, "--help").output
    assert (command.help or "").strip(), f"`burla {' '.join(path)}` has no description"
    assert "Example" in text, f"`burla {' '.join(path)} --help` shows no example:\n{text}"
    for option in command.params:
        if isinstance(option, click.Option) and option.name != "help":
            assert option.help, f"`burla {' '.join(path)}` option {option.opts[0]} has no help text"


def test_node_health_and_jobs_document_their_exit_status():
    for command in ("health", "jobs"):
        text = burla("node", command, "--help").output
        assert "Exit status" in text and "0  every node answered" in text and "1  at least one node" in text, text


def test_version():
    result = burla("--version")
    assert result.exit_code == 0 and result.output.strip() == f"burla {__version__}"


def test_console_script_and_module_run_the_same_command():
    console_script = Path(sys.executable).with_name("burla")
    if not console_script.exists():
        pytest.skip("the burla console script is not installed in this environment (pip install -e .)")
    from_script = subprocess.run([str(console_script), "--help"], capture_output=True, text=True, timeout=60)
    from_module = subprocess.run([sys.executable, "-m", "burla_cli", "--help"], capture_output=True, text=True, timeout=60)
    assert from_script.returncode == 0 and from_module.returncode == 0, from_script.stderr + from_module.stderr
    assert from_script.stdout == from_module.stdout


def test_jobs_without_any_job_says_how_to_start_one():
    result = burla("jobs")
    assert result.exit_code == 0
    assert "No jobs yet" in result.output and "detach=True" in result.output


def test_jobs_lists_jobs_newest_first(store):
    first = make_job(store, "first_function", results=[1, 2, 3])
    second = make_job(store, "second_function", results=[4], status=FAILED, error=error_info(ValueError("x"), 0))
    third = make_job(store, "third_function", results=[], status=QUEUED)
    result = burla("jobs")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["ID", "STATUS", "FUNCTION", "DONE/TOTAL", "CREATED", "AGE"]
    assert [row.split()[0] for row in rows] == [third, second, first]
    assert rows[2].split()[1:4] == ["done", "first_function", "3/3"]
    assert rows[1].split()[1:4] == ["failed", "second_function", "1/1"]
    assert rows[0].split()[1] == "queued"
    limited = burla("jobs", "list", "--limit", "1")
    assert len(limited.output.splitlines()) == 2 and third in limited.output


@pytest.mark.parametrize("command", ["status", "logs", "results", "cancel"])
def test_an_unknown_job_id_fails_and_says_how_to_list_ids(store, command):
    make_job(store, results=[1])
    result = burla("jobs", command, "nosuchjob")
    assert result.exit_code != 0
    assert "no job with id 'nosuchjob'" in result.output
    assert "`burla jobs` lists the ids" in result.output


def test_a_job_id_prefix_is_enough(store):
    job_id = make_job(store, results=[7])
    result = burla("jobs", "results", job_id[:6])
    assert result.exit_code == 0 and result.output == "7\n"


def test_results_prints_one_repr_per_line_in_input_order(store):
    job_id = make_job(store, results=[0, "one", [2], {"three": 3}, None])
    result = burla("jobs", "results", job_id)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["0", "'one'", "[2]", "{'three': 3}", "None"]


def test_results_as_json(store):
    job_id = make_job(store, results=[0, "one", [2], {"three": 3}, None])
    result = burla("jobs", "results", job_id, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [0, "one", [2], {"three": 3}, None]


def test_results_as_json_fails_clearly_for_values_json_cannot_hold(store):
    job_id = make_job(store, results=[1, {1, 2}])
    result = burla("jobs", "results", job_id, "--json")
    assert result.exit_code != 0
    assert "input 1 is not JSON-serialisable" in result.output and "drop --json" in result.output


def test_results_of_an_unfinished_job_fail_and_say_how_to_wait(store):
    job_id = make_job(store, results=[1, 2], status=QUEUED)
    result = burla("jobs", "results", job_id)
    assert result.exit_code != 0
    assert f"job {job_id} is still queued" in result.output
    assert f"burla jobs logs {job_id} --follow" in result.output


def test_results_of_a_failed_job_show_its_error(store):
    try:
        raise KeyError("missing thing")
    except KeyError as error:
        info = error_info(error, 0)
    job_id = make_job(store, results=[1, 2, 3], status=FAILED, error_index=2, error=info)
    result = burla("jobs", "results", job_id)
    assert result.exit_code != 0
    assert f"job {job_id} failed" in result.output and "input 2 raised" in result.output
    assert "KeyError: 'missing thing'" in result.output
    status = burla("jobs", "status", job_id)
    assert "failed" in status.output and "input 2: KeyError: 'missing thing'" in status.output


def test_results_of_a_canceled_job_fail(store):
    job_id = make_job(store, results=[1, 2], status=CANCELED)
    result = burla("jobs", "results", job_id)
    assert result.exit_code != 0 and "was canceled" in result.output


def test_status_shows_progress_and_timings(store):
    job_id = make_job(store, "my_function", results=[1, 2, 3, 4])
    result = burla("jobs", "status", job_id)
    assert result.exit_code == 0, result.output
    fields = dict(line.split(None, 1) for line in result.output.splitlines())
    assert fields["job"] == job_id and fields["status"] == "done" and fields["function"] == "my_function"
    assert fields["progress"].startswith("4/4 done") and fields["backend"] == "local"
    assert "created" in fields and "finished" in fields


def test_logs_go_to_stdout_and_stderr_as_the_function_wrote_them(store):
    logs = [(0, 1, "to stdout\n"), (1, 2, "to stderr\n"), (None, 2, "burla: a notice\n")]
    job_id = make_job(store, results=[1, 2], logs=logs)
    result = burla("jobs", "logs", job_id)
    assert result.exit_code == 0
    assert result.stdout == "to stdout\n"
    assert result.stderr == "to stderr\nburla: a notice\n"
    stamped = burla("jobs", "logs", job_id, "--timestamps")
    assert "[input 0] to stdout" in stamped.stdout and "[input 1] to stderr" in stamped.stderr


def test_a_job_whose_runner_died_is_shown_failed(store):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job_id = make_job(store, results=[1, 2], status="running", runner_pid=dead.pid)
    result = burla("jobs", "status", job_id)
    assert result.exit_code == 0
    assert "failed" in result.output and "stopped before the job ended" in result.output


def test_cancel_of_a_finished_job_fails(store):
    job_id = make_job(store, results=[1])
    result = burla("jobs", "cancel", job_id)
    assert result.exit_code != 0 and "not running (status: done)" in result.output


def test_prune_deletes_finished_jobs_only(store):
    done_job = make_job(store, results=[1])
    failed_job = make_job(store, results=[1], status=FAILED, error=error_info(ValueError("x"), 0))
    queued_job = make_job(store, results=[1], status=QUEUED)
    refused = burla("jobs", "prune", input="n\n")
    assert refused.exit_code != 0 and len(store.list_jobs()) == 3
    result = burla("jobs", "prune", "--yes")
    assert result.exit_code == 0 and "Deleted 2 job(s)" in result.output
    assert [record.job_id for record in store.list_jobs()] == [queued_job]
    assert burla("jobs", "results", done_job).exit_code != 0
    assert burla("jobs", "status", failed_job).exit_code != 0
    assert "No finished jobs" in burla("jobs", "prune", "--yes").output


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_jobs_limit_below_one_is_a_usage_error_not_an_empty_list(store, limit):
    make_job(store, "some_function", results=[1])
    for command in (["jobs"], ["jobs", "list"]):
        result = burla(*command, "-n", limit)
        assert result.exit_code == 2, f"`burla {' '.join(command)} -n {limit}` exited {result.exit_code}:\n{result.output}"
        assert "No jobs yet" not in result.output
        assert "--limit" in result.output and "x>=1" in result.output, result.output
    assert "some_function" in burla("jobs", "-n", "1").output


def test_jobs_prune_older_than_zero_deletes_every_finished_job(store):
    make_job(store, "finished", results=[1])
    result = burla("jobs", "prune", "--older-than", "0s", "--yes")
    assert result.exit_code == 0 and "Deleted 1 job(s)" in result.output, result.output


@pytest.fixture
def agent_must_not_start(monkeypatch):
    """`burla node start` with a value it cannot use must stop before serving: if the check is
    missing, the test fails at once instead of serving forever."""
    from burla_core.node import serve as agent

    async def started(*args, **kwargs):
        raise AssertionError("the agent started serving despite a value it cannot use")

    monkeypatch.setattr(agent, "serve", started)
    monkeypatch.setenv("BURLA_NODE_TOKEN", "a-token-long-enough-0123456789")


BAD_OPTION_VALUES = [
    (["node", "start", "--port", "99999"], "--port"),
    (["node", "start", "--port", "-1"], "--port"),
    (["node", "start", "--port", "65536"], "--port"),
    (["node", "start", "--cpus", "0"], "--cpus"),
    (["node", "start", "--cpus", "-2"], "--cpus"),
    (["node", "start", "--ram-gb", "0"], "--ram-gb"),
    (["node", "start", "--ram-gb", "-4"], "--ram-gb"),
    (["node", "start", "--ram-gb", "nan"], "--ram-gb"),
    (["node", "start", "--ram-gb", "inf"], "--ram-gb"),
    (["node", "start", "--idle-shutdown", "-1"], "--idle-shutdown"),
    (["node", "start", "--idle-shutdown", "nan"], "--idle-shutdown"),
    (["node", "start", "--job-lease", "0"], "--job-lease"),
    (["node", "start", "--job-lease", "-5"], "--job-lease"),
    (["node", "start", "--job-lease", "inf"], "--job-lease"),
    (["node", "start", "--max-pending-mb", "0"], "--max-pending-mb"),
    (["node", "start", "--upload-hold", "-1"], "--upload-hold"),
    (["node", "start", "--upload-hold", "nan"], "--upload-hold"),
    (["node", "start", "--host", ""], "--host"),
    (["node", "start", "--name", " "], "--name"),
    (["node", "start", "--image", ""], "--image"),
    (["node", "start", "--shutdown-command", ""], "--shutdown-command"),
    (["node", "start", "--token-file", "{missing}"], "--token-file"),
    (["node", "start", "--token-file", "{empty}"], "is empty"),
    (["node", "start", "--token-file", "{dir}"], "--token-file"),
    (["node", "start", "--tls-cert", "{missing}", "--tls-key", "{missing}"], "--tls-cert"),
    (["node", "start", "--tls-cert", "{dir}", "--tls-key", "{dir}"], "--tls-cert"),
    (["node", "start", "--tls-cert", "{garbage}"], "--tls-key"),
    (["node", "start", "--tls-key", "{garbage}"], "--tls-cert"),
    (["node", "start", "--tls-cert", "{garbage}", "--tls-key", "{garbage}"], "cannot load the TLS certificate"),
    (["node", "start", "--host", "0.0.0.0", "--port", "0"], "without TLS"),
    (["node", "health", "--nodes", "ftp://10.0.0.5:8701"], "http:// or https://"),
    (["node", "health", "--nodes", " , "], "--nodes"),
    (["node", "jobs", "--nodes", "127.0.0.1:9", "--token-file", "{empty}"], "is empty"),
    (["node", "jobs", "--nodes", "127.0.0.1:9", "--ca", "{missing}"], "--ca"),
    (["jobs", "cancel", "someid", "--timeout", "-1"], "--timeout"),
    (["jobs", "cancel", "someid", "--timeout", "nan"], "--timeout"),
    (["jobs", "prune", "--older-than", "3 weeks"], "--older-than"),
    (["jobs", "prune", "--older-than", "-1d"], "--older-than"),
]


@pytest.mark.parametrize("args, named", BAD_OPTION_VALUES, ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_a_value_an_option_cannot_use_is_a_usage_error(args, named, tmp_path, agent_must_not_start):
    files = {
        "missing": tmp_path / "no-such-file",
        "empty": tmp_path / "empty-token",
        "dir": tmp_path,
        "garbage": tmp_path / "garbage.pem",
    }
    files["empty"].write_text("  \n")
    files["garbage"].write_text("not a PEM file\n")
    args = [arg.format(**files) for arg in args]
    result = burla(*args)
    shown = " ".join(args)
    assert result.exit_code == 2, f"`burla {shown}` exited {result.exit_code}, not 2 (usage error):\n{result.output}"
    assert "Traceback" not in result.output and not isinstance(result.exception, AssertionError), result.output
    assert named in result.output, f"`burla {shown}` should name {named!r}:\n{result.output}"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads every file")
@pytest.mark.parametrize("option", ["--token-file", "--tls-cert"])
def test_an_unreadable_file_is_a_usage_error(option, tmp_path, agent_must_not_start):
    unreadable = tmp_path / "unreadable"
    unreadable.write_text("secret-token-0123456789")
    unreadable.chmod(0)
    result = burla("node", "start", option, str(unreadable), "--tls-key", str(unreadable))
    assert result.exit_code == 2 and option in result.output and "not readable" in result.output, result.output


def test_an_unusable_data_dir_fails_in_one_line_naming_the_variable(tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    monkeypatch.setenv("BURLA_DATA_DIR", str(a_file / "data"))
    result = burla("jobs")
    assert result.exit_code == 1, result.output
    assert "BURLA_DATA_DIR" in result.output and "Traceback" not in result.output, result.output


@pytest.mark.parametrize(
    "variable, value, option",
    [("BURLA_NODES", "ftp://10.0.0.5:8701", "--nodes"), ("BURLA_NODES", ",", "--nodes"), ("BURLA_NODE_CA", "/no/such/ca.pem", "--ca")],
)
def test_a_bad_value_from_an_environment_variable_names_the_variable(variable, value, option, monkeypatch):
    monkeypatch.setenv("BURLA_NODES", "127.0.0.1:9")
    monkeypatch.setenv("BURLA_NODE_TOKEN", "a-token-long-enough-0123456789")
    monkeypatch.setenv(variable, value)
    result = burla("node", "health")
    assert result.exit_code == 2, result.output
    assert option in result.output and f"${variable}" in result.output, result.output
