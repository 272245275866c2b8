"""docs/install.md stays true: its permissions table names exactly the permissions install and
uninstall check for (and --print-role prints), and its roles are the ones install suggests."""

from __future__ import annotations

import re

from burla_backend_gcp.install import permissions

from .conftest import REPO


def expand(text: str) -> set[str]:
    """`a.b.{c,d}` → {a.b.c, a.b.d}; `.delete` after a name → that name's prefix + delete."""
    found: set[str] = set()
    for cell in text.split("|")[2:3]:
        last_prefix = ""
        for token in re.findall(r"`([^`]+)`", cell):
            braces = re.fullmatch(r"([A-Za-z.]+\.)\{([^}]+)\}", token)
            if braces:
                last_prefix = braces.group(1)
                found |= {braces.group(1) + part for part in braces.group(2).split(",")}
            elif token.startswith("."):
                found.add(last_prefix + token[1:])
            else:
                last_prefix = token.rsplit(".", 1)[0] + "."
                found.add(token)
    return found


def test_install_md_lists_exactly_the_permissions_install_and_uninstall_check():
    text = (REPO / "docs" / "install.md").read_text()
    table = text.split("The permissions, by what needs them")[1].split("These are the installer's permissions")[0]
    documented: set[str] = set()
    for row in table.splitlines():
        if row.startswith("| ") and not row.startswith(("| for", "| ---")):
            documented |= expand(row)
    assert documented == set(permissions.INSTALL) | set(permissions.UNINSTALL), (
        f"missing from the docs: {sorted(set(permissions.INSTALL) | set(permissions.UNINSTALL) - documented)}; "
        f"not checked by install: {sorted(documented - set(permissions.INSTALL) - set(permissions.UNINSTALL))}")
    for role, _ in permissions.INSTALLER_ROLES:
        assert f"`{role}`" in text, f"docs/install.md does not name {role}"
