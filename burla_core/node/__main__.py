"""`python -m burla_core.node start ...`: the agent's commands, without the `burla` CLI."""

import click

from .command import start, token


@click.group()
def agent_commands() -> None:
    """The Burla node agent (`burla node start` and `burla node token` are the same commands)."""


agent_commands.add_command(start)
agent_commands.add_command(token)

if __name__ == "__main__":
    agent_commands(prog_name="python -m burla_core.node")
