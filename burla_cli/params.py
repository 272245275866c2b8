"""What the `burla` command accepts, and how it refuses the rest.

Every option value a command cannot use (a port over 65535, a negative timeout, NaN, an empty
token file, an unreadable certificate) is refused here, while click parses the command line, as
a usage error: `Error: Invalid value for '--port': ...` and exit status 2, never a traceback from
deep inside. `BurlaGroup` turns a BurlaError raised while a command runs into `Error: ...` and
exit status 1.
"""

from __future__ import annotations

import math
import re
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from burla_core.errors import BurlaError

PORT = click.IntRange(0, 65535)


class NamesItsVariable:
    """A parameter type whose errors say so when the value came from the option's environment
    variable ($BURLA_NODES), not the command line: the user then knows what to fix."""

    def fail(self, message: str, param: click.Parameter | None = None, ctx: click.Context | None = None) -> NoReturn:
        if ctx is not None and param is not None and param.name and isinstance(param.envvar, str):
            if ctx.get_parameter_source(param.name) == ParameterSource.ENVIRONMENT:
                message = f"{message} (from ${param.envvar})"
        super().fail(message, param, ctx)  # type: ignore[misc]


class BurlaGroup(click.Group):
    """A group whose commands report Burla's own errors as one line (`Error: ...`, status 1)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BurlaError as error:
            raise click.ClickException(str(error)) from None


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses nan and inf (which FloatRange lets through: `inf >= 1`, and
    nan compares false with every bound)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class NonEmpty(click.ParamType):
    """A string that is not empty or only spaces (`--name ""` is a mistake, not a choice)."""

    name = "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        if not value.strip():
            self.fail("must not be empty", param, ctx)
        return value


class TokenFile(click.Path):
    """A file holding a bearer token: converts to the token itself (stripped). A missing,
    unreadable or empty file is a usage error."""

    name = "file"

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, readable=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            self.fail(f"cannot read the token file {path}: {reason}", param, ctx)
        if not token:
            self.fail(f"the token file {path} is empty; write a token into it with `burla node token > {path}`", param, ctx)
        return token


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


class ReadableFile(NamesItsVariable, click.Path):
    """An existing, readable file (not a directory)."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, readable=True)


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
