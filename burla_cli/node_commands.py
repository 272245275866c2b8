"""`burla node ...`: run the node agent on a machine you have, and ask agents for their health
and their jobs. `python -m burla_core.node start|token` runs the agent's own commands without
the CLI.

`health` and `jobs` ask every node at once and exit 0 only when every node answered; each node
that did not gets one line on stderr saying why (see NODE_EXIT_STATUS).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import click

from burla_core.node.command import env_token, start, token
from burla_core.node.token import TOKEN_ENV

from .params import BurlaGroup, NodeList, ReadableFile, TokenFile

# The names burla_backend_nodes.settings reads; spelt here too because importing that module
# loads aiohttp, which `burla --help` should not wait for.
NODES_ENV = "BURLA_NODES"
CA_ENV = "BURLA_NODE_CA"

NODE_QUERY_SECONDS = 5.0

NODE_EXIT_STATUS = f"""\b
Exit status:
  0  every node answered
  1  at least one node did not answer, refused the token or answered an error
     (each such node gets one line on stderr; the others are still printed)
  2  a usage error: a bad option value, no nodes given, or no token
     (pass --token-file or set ${TOKEN_ENV})"""


@click.group(cls=BurlaGroup)
def node() -> None:
    """Run the Burla node agent on your own machines, and look at the agents you run.

    A cluster of your own machines is one agent per machine, all started with the same token;
    callers list them in BURLA_NODES and pass backend="nodes" (or set BURLA_BACKEND=nodes).

    \b
    Example:
      export BURLA_NODE_TOKEN="$(burla node token)"
      burla node start --port 8701 &
      BURLA_NODES=127.0.0.1:8701 burla node health

    See docs/nodes.md for TLS, systemd and what a node offers.
    """


node.add_command(start)
node.add_command(token)


def cluster_options(command: Callable) -> Callable:
    """--nodes, --token-file and --ca: which agents to ask, the token they share, and the CA
    their TLS certificates are checked against."""
    command = click.option(
        "--ca", type=ReadableFile(), envvar=CA_ENV,
        help=f"CA certificate the nodes' TLS certificates are checked against (default: ${CA_ENV}).",
    )(command)
    command = click.option("--token-file", "file_token", type=TokenFile(), help=f"File holding the token (else ${TOKEN_ENV}).")(command)
    return click.option(
        "--nodes", type=NodeList(), envvar=NODES_ENV, help=f"Comma-separated node URLs (default: ${NODES_ENV})."
    )(command)


def ask_every_node(nodes: list[str] | None, file_token: str | None, ca: str | None, ask: Callable[[Any], Any]) -> list:
    """(url, answer, None) or (url, None, one-line reason) for each node, in the given order;
    the nodes are asked at once, each with a deadline (NODE_QUERY_SECONDS)."""
    from burla_core.node.client import node_client

    if not nodes:
        raise click.UsageError(f"no nodes given: pass --nodes URL,URL or set {NODES_ENV}")
    token_value = file_token or env_token()
    if not token_value:
        raise click.UsageError(f"no token: pass --token-file FILE or set {TOKEN_ENV}")

    def one(url: str) -> tuple:
        try:
            return url, ask(node_client(url, token_value, ca)), None
        except Exception as error:  # every failure of one node is reported, never raised
            reason = " ".join(str(error).split()) or type(error).__name__
            return url, None, reason if url in reason else f"node {url}: {reason}"

    with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as executor:
        return list(executor.map(one, nodes))


def report_failures(answers: list) -> None:
    failures = [reason for _, _, reason in answers if reason]
    for reason in failures:
        click.echo(f"burla node: {reason}", err=True)
    if failures:
        raise click.exceptions.Exit(1)


@node.command(epilog=NODE_EXIT_STATUS)
@cluster_options
def health(nodes, file_token, ca) -> None:
    """Ask each node for its health: slots, CPUs, RAM, GPUs, image, versions, jobs.

    Prints one JSON object per node that answered (with its "url"), in the order given.

    \b
    Example:
      BURLA_NODES=10.0.0.5:8701,10.0.0.6:8701 burla node health --token-file burla-node-token
    """
    answers = ask_every_node(nodes, file_token, ca, lambda client: client.health(timeout=NODE_QUERY_SECONDS))
    for url, report, _ in answers:
        if report is not None:
            click.echo(json.dumps({"url": url, **report}, indent=2))
    report_failures(answers)


@node.command(epilog=NODE_EXIT_STATUS)
@cluster_options
def jobs(nodes, file_token, ca) -> None:
    """List the jobs on each node: id, function, state and progress.

    One line per job (detached ones stay until collected); a node with no job says so.

    \b
    Example:
      burla node jobs --nodes 10.0.0.5:8701,10.0.0.6:8701
    """
    answers = ask_every_node(nodes, file_token, ca, lambda client: client.list_jobs(timeout=NODE_QUERY_SECONDS))
    for url, listed, _ in answers:
        if listed is None:
            continue
        if not listed:
            click.echo(f"{url}  no jobs")
        for job in listed:
            click.echo(
                f"{url}  {job['job_id']}  {job['function_name']}  {job['state']}  "
                f"{job['done']} done, {job['failed']} failed, {job['queued_inputs']} queued"
                + ("  (detached)" if job["detach"] else "")
            )
    report_failures(answers)
