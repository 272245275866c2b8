"""Burla's private module `burla._remote_parallel_map`: `from burla._remote_parallel_map import
FunctionTooBig` keeps working unchanged (and remote_parallel_map is here too)."""

from burla_core.api import remote_parallel_map  # noqa: F401
from burla_core.errors import FunctionTooBig  # noqa: F401
