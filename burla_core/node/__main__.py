"""`python -m burla_core.node start ...`: the same commands as `burla node ...`."""

from burla_cli.node_commands import node

if __name__ == "__main__":
    node(prog_name="python -m burla_core.node")
