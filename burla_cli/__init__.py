"""The `burla` command."""
