"""Option types for Burla's commands that refuse what a command cannot use, while click parses
the command line (a usage error naming the option, exit status 2, never a traceback): the node
agent's `start` (burla_core.node.command) and the `burla` CLI use the same ones."""

from __future__ import annotations

import math
from typing import Any, NoReturn

import click
from click.core import ParameterSource

PORT = click.IntRange(0, 65535)



class NamesItsVariable:
    """A parameter type whose errors say so when the value came from the option's environment
    variable ($BURLA_NODES), not the command line: the user then knows what to fix."""

    def fail(self, message: str, param: click.Parameter | None = None, ctx: click.Context | None = None) -> NoReturn:
        if ctx is not None and param is not None and param.name and isinstance(param.envvar, str):
            if ctx.get_parameter_source(param.name) == ParameterSource.ENVIRONMENT:
                message = f"{message} (from ${param.envvar})"
        super().fail(message, param, ctx)  # type: ignore[misc]


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
        from .errors import UnauthorizedError
        from .node.token import read_token

        path = super().convert(value, param, ctx)
        try:
            return read_token(path)
        except UnauthorizedError as error:
            self.fail(str(error), param, ctx)


class ReadableFile(NamesItsVariable, click.Path):
    """An existing, readable file (not a directory)."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, readable=True)
