"""The `burla` command: `burla install`, `uninstall`, `dashboard` and `login` (the gcp backend's),
`burla jobs`, and `burla node` (the node agent of the `nodes` backend)."""

from __future__ import annotations

import click

from burla_core import __version__

from .cluster import dashboard, install, login, uninstall
from .gcp_commands import gcp
from .jobs import jobs
from .node_commands import node
from .params import BurlaGroup


@click.group(cls=BurlaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="burla", message="%(prog)s %(version)s")
def cli() -> None:
    """Burla: run any Python function over a list of inputs on many computers at once.

    \b
    In Python:
        from burla import remote_parallel_map
        results = remote_parallel_map(my_function, my_inputs)

    With no cluster set up, calls run on this machine (the "local" backend). `burla install`
    deploys a cluster into your own Google Cloud project and `burla login` connects this
    computer to it. `burla node start` turns a machine you already have into a node of your own
    cluster (backend="nodes"). Jobs started with `detach=True` keep running when the program
    that started them stops; `burla jobs` lists them, shows their logs and results, and cancels
    them.

    \b
    Examples:
      burla jobs                       # detached jobs, newest first
      burla jobs logs 1a2b3c --follow  # a job's output, until it ends
      burla node start --port 8701     # serve jobs from this machine
      burla node health                # are the nodes in $BURLA_NODES up?

    Run `burla COMMAND --help` for the documentation of a command. Errors print
    "Error: ..." on stderr and exit with status 1, or 2 for a usage mistake (a missing
    argument, an option value out of range).
    """


cli.add_command(install)
cli.add_command(uninstall)
cli.add_command(dashboard)
cli.add_command(login)
cli.add_command(jobs)
cli.add_command(node)
cli.add_command(gcp)


if __name__ == "__main__":
    cli(prog_name="burla")
