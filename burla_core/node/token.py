"""The node token, read in one place: by the agent (`burla node start`), the CLI's --token-file
options and the nodes backend. Imports nothing heavy (`burla --help` loads it)."""

from __future__ import annotations

import os

from ..errors import UnauthorizedError

TOKEN_ENV = "BURLA_NODE_TOKEN"


def read_token(token_file: str | None = None) -> str | None:
    """The node token: from `token_file` when given (missing, unreadable or empty is an
    UnauthorizedError saying so), else $BURLA_NODE_TOKEN; None when neither."""
    if token_file:
        try:
            with open(token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except (OSError, UnicodeDecodeError) as error:
            reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
            raise UnauthorizedError(f"cannot read the token file {token_file}: {reason}") from None
        if not token:
            raise UnauthorizedError(
                f"the token file {token_file} is empty; write a token into it with `burla node token > {token_file}`"
            )
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None
