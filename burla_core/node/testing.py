"""Node agents as local subprocesses on 127.0.0.1, for tests, benchmarks and trying things out.

    agents = start_agents(3, token)      # each listens on a free loopback port
    os.environ["BURLA_NODES"] = ",".join(a.url for a in agents)
    agents[0].kill()                     # SIGKILL; .freeze()/.thaw() SIGSTOP/SIGCONT; .restart()
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time

READY_PREFIX = "burla node agent listening on "


class AgentProcess:
    def __init__(self, token: str | None, args: tuple = (), env: dict | None = None, port: int = 0) -> None:
        self.token = token
        self.args = tuple(args)
        self.env = dict(env or {})
        self.port = port
        self.url = ""
        self.process: subprocess.Popen | None = None
        handle, self.log_path = tempfile.mkstemp(prefix="burla-agent-", suffix=".log")
        os.close(handle)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        return [sys.executable, "-m", "burla_core.node", "start", "--port", str(self.port), *self.args]

    def environment(self) -> dict:
        """The caller's environment and import path: a node set up like the caller's machine."""
        env = dict(os.environ)
        env.pop("BURLA_NODE_TOKEN", None)
        if self.token is not None:
            env["BURLA_NODE_TOKEN"] = self.token
        paths = [os.path.abspath(p or os.getcwd()) for p in sys.path if isinstance(p, str)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        env.update(self.env)
        return env

    def spawn(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=self.environment()
            )

    def start(self, timeout: float = 20.0) -> "AgentProcess":
        self.spawn()
        self.url = self._wait_ready(timeout)
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def _wait_ready(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        stdout = self.process.stdout
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stdout], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                line = stdout.readline()
                text = line.decode(errors="replace").strip()
                if text.startswith(READY_PREFIX):
                    return text[len(READY_PREFIX):]
                if not line:
                    break
        self.process.kill()
        self.process.wait()
        raise RuntimeError(f"the node agent did not start (exit {self.process.returncode}); its log:\n{self.log()}")

    def log(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def worker_pids(self) -> list[int]:
        """The agent's worker processes (its children)."""
        children = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.pid:
                children.append(int(name))
        return sorted(children)

    def kill(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        if self.process is not None:
            self.process.wait(timeout=10)

    def freeze(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 5.0) -> None:
        if not self.alive():
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self, timeout: float = 20.0) -> "AgentProcess":
        """Kill it and start a new agent on the same port (as a reboot or a crash-restart would)."""
        self.kill()
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.start(timeout=max(1.0, deadline - time.monotonic()))
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # the port may still be held for a moment

    def close(self) -> None:
        self.stop()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


def start_agents(count: int, token: str, args: tuple = (), env: dict | None = None) -> list[AgentProcess]:
    """`count` agents, started in parallel, each on a free 127.0.0.1 port."""
    agents = [AgentProcess(token, args, env) for _ in range(count)]
    started: list[AgentProcess] = []
    try:
        for agent in agents:  # spawn all, then wait for each: they import in parallel
            agent.spawn()
            started.append(agent)
        for agent in agents:
            agent.url = agent._wait_ready(30.0)
            agent.port = int(agent.url.rsplit(":", 1)[1])
    except BaseException:
        for agent in started:
            agent.close()
        raise
    return agents
