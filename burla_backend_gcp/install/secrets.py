"""Step: the cluster's secrets in Secret Manager, each readable only by the accounts that need it
(accounts.SECRET_READERS).

    burla-node-token       the bearer token every request to a node agent carries (32 random bytes)
    burla-cluster-ca-cert  the PEM certificate of the CA the nodes serve TLS under (tls.make_ca)
    burla-cluster-ca-key   its private key (PKCS#8 PEM): nodes sign their own certificates with it
    burla-cluster-token    read by no service account: whoever may read it is a cluster administrator

A secret's value is made once: a second install never replaces it (that would cut off running
nodes); a secret left without a version by an interrupted run gets its first one.
"""

from __future__ import annotations

import secrets as random_source
from typing import TYPE_CHECKING

from .. import schema
from .accounts import SECRET_ROLE, missing_bindings, readers_of, update_policy
from .steps import CREATE, NONE, Change, Step

if TYPE_CHECKING:
    from .context import InstallContext

def new_token() -> bytes:
    return random_source.token_urlsafe(32).encode()


def new_cluster_ca(project: str) -> tuple[bytes, bytes]:
    """A new CA for the cluster (tls.py, which the nodes use to sign their own certificates):
    (certificate PEM, private key PEM)."""
    from ..tls import make_ca

    ca = make_ca(project)
    return ca.cert_pem.encode(), ca.key_pem.encode()


SECRETS = (schema.NODE_TOKEN_SECRET, schema.CA_CERT_SECRET, schema.CA_KEY_SECRET, schema.CLUSTER_SECRET)
CA_PAIR = (schema.CA_CERT_SECRET, schema.CA_KEY_SECRET)


def _has_version(ctx: "InstallContext", name: str) -> bool:
    from google.cloud import secretmanager_v1 as sm

    versions = ctx.secret_manager().list_secret_versions(request={"parent": name, "filter": "state:ENABLED"})
    return any(v.state == sm.SecretVersion.State.ENABLED for v in versions)


def _first_values(ctx: "InstallContext", secret_ids: list[str]) -> dict[str, bytes]:
    """New values for `secret_ids`. The CA's certificate and key are one pair: if either needs a
    value (an interrupted run wrote only one), both get a new pair."""
    values = {secret_id: new_token() for secret_id in secret_ids if secret_id not in CA_PAIR}
    if any(secret_id in CA_PAIR for secret_id in secret_ids):
        cert, key = new_cluster_ca(ctx.project)
        values.update({schema.CA_CERT_SECRET: cert, schema.CA_KEY_SECRET: key})
    return values


class Secrets(Step):
    label = "secrets"

    def plan(self, ctx: "InstallContext") -> Change:
        from google.api_core import exceptions

        client = ctx.secret_manager()
        todo: dict[str, str] = {}  # secret id → what it lacks: "secret", "version" or "access"
        for secret_id in SECRETS:
            name = ctx.names.secret(secret_id)
            try:
                client.get_secret(name=name)
            except exceptions.NotFound:
                todo[secret_id] = "secret"
                continue
            if not _has_version(ctx, name):
                todo[secret_id] = "version"
            elif missing_bindings(client.get_iam_policy(request={"resource": name}), readers_of(ctx.names, secret_id)):
                todo[secret_id] = "access"
        if not todo:
            return Change(NONE, ", ".join(SECRETS))
        made = [s for s, lacking in todo.items() if lacking != "access"]
        if not made:
            return Change("grant", f"{SECRET_ROLE.removeprefix('roles/')} on {', '.join(todo)}", todo)
        return Change(CREATE, ", ".join(made), todo)

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        from google.api_core import exceptions
        from google.cloud import secretmanager_v1 as sm

        import google_crc32c

        client = ctx.secret_manager()
        for secret_id, lacking in change.found.items():
            if lacking == "secret":
                try:
                    client.create_secret(request={"parent": f"projects/{ctx.project}", "secret_id": secret_id,
                                                  "secret": sm.Secret(replication=sm.Replication(automatic={}),
                                                                      labels={"burla": "cluster"})})
                except exceptions.Conflict:
                    pass  # made by an interrupted run
        unset = [s for s in SECRETS if s in change.found and change.found[s] != "access"
                 and not _has_version(ctx, ctx.names.secret(s))]
        values = _first_values(ctx, unset)
        for secret_id, payload in values.items():
            client.add_secret_version(request={"parent": ctx.names.secret(secret_id), "payload": {
                "data": payload, "data_crc32c": int(google_crc32c.value(payload))}})
        for secret_id in SECRETS:
            readers = readers_of(ctx.names, secret_id)
            if secret_id in change.found and readers:
                name = ctx.names.secret(secret_id)
                update_policy(lambda: client.get_iam_policy(request={"resource": name}),
                              lambda policy: client.set_iam_policy(request={"resource": name, "policy": policy}),
                              readers)
        return change.detail
