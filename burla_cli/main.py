"""The `burla` command line (placeholder until the CLI lands)."""

import click


@click.group()
def cli() -> None:
    """Burla: run any Python function over a list of inputs on many computers at once."""
