"""`python -m burla_cli` runs the `burla` command."""

from .main import cli

cli(prog_name="burla")
