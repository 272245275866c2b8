"""Everything in Burla that does not depend on where the work runs."""

from .hookspecs import hookimpl  # noqa: F401  (plugins import it from here)

__version__ = "0.1.0"
