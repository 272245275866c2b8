"""What the `burla` command accepts, and how it refuses the rest.

Every option value a command cannot use (a port over 65535, a negative timeout, NaN, an empty
token file, an unreadable certificate) is refused here, while click parses the command line, as
a usage error: `Error: Invalid value for '--port': ...` and exit status 2, never a traceback from
deep inside. `BurlaGroup` turns a BurlaError raised while a command runs into `Error: ...` and
exit status 1.
"""

from __future__ import annotations

import re
from typing import Any

import click

from burla_core.clitypes import PORT, FiniteFloat, NamesItsVariable, NonEmpty, ReadableFile, TokenFile  # noqa: F401
from burla_core.errors import BurlaError

class BurlaGroup(click.Group):
    """A group whose commands report Burla's own errors as one line (`Error: ...`, status 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BurlaError as error:
            raise click.ClickException(str(error)) from None


class Duration(click.ParamType):
    """A duration like 45s, 30m, 12h or 7d, converted to seconds."""

    name = "duration"
    _PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)):
            return float(value)
        match = self._PATTERN.match(str(value))
        if not match:
            self.fail(f"{value!r} is not a duration like 45s, 30m, 12h or 7d", param, ctx)
        return float(match.group(1)) * self._UNITS[match.group(2)]


class NodeList(NamesItsVariable, click.ParamType):
    """Comma-separated node URLs ("host:port" means http://host:port), converted to a list."""

    name = "urls"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from burla_backend_nodes.settings import parse_node_list

        if isinstance(value, list):
            return value
        try:
            urls = parse_node_list(value)
        except BurlaError as error:
            self.fail(str(error), param, ctx)
        if not urls:
            self.fail("names no node; give one or more URLs such as http://10.0.0.5:8701,10.0.0.6:8701", param, ctx)
        return urls
