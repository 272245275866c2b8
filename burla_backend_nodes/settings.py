"""The nodes backend's settings: which agents, their token, their CA, how fast a silent one is
lost. The one place that reads BURLA_NODES, BURLA_NODE_TOKEN, BURLA_NODE_CA and
BURLA_NODE_LOSS_SECONDS (and their backend_options), and the one that parses a node list."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from burla_core.errors import InvalidArgument, NoNodes, UnauthorizedError
from burla_core.node.token import TOKEN_ENV, read_token
from burla_core.node.transport import LOSS_SECONDS, HttpSettings

NODES_ENV = "BURLA_NODES"
CA_ENV = "BURLA_NODE_CA"
CA_PEM_ENV = "BURLA_NODE_CA_PEM"  # the CA itself (set for calls made on a node, where the file is not)
LOSS_ENV = "BURLA_NODE_LOSS_SECONDS"


def parse_node_list(value: Any) -> list[str]:
    """Node URLs from "http://a:8701,https://b:8701" or a list; "host:port" means http://host:port."""
    if value is None:
        return []
    if isinstance(value, str):
        parts = value.split(",")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise InvalidArgument(f"the node list must be a comma-separated string or a list of URLs, not {type(value).__name__}")
    urls: list[str] = []
    for part in parts:
        url = str(part).strip().rstrip("/")
        if not url:
            continue
        if "://" not in url:
            url = "http://" + url
        scheme = url.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise InvalidArgument(f"node {url!r}: use an http:// or https:// URL")
        if url not in urls:
            urls.append(url)
    return urls


@dataclass(frozen=True)
class NodesSettings:
    urls: list[str]
    http: HttpSettings

    @classmethod
    def from_options(cls, options: dict) -> "NodesSettings":
        """backend_options first ("nodes", "token_file", "ca", "loss_seconds"), then the
        environment. The token itself never comes from backend_options: those are stored with
        detached jobs."""
        urls = parse_node_list(options.get("nodes") or os.environ.get(NODES_ENV))
        if not urls:
            raise NoNodes(
                f"the nodes backend has no nodes: set {NODES_ENV}=http://host:8701,... (each running "
                "`burla node start`) or pass backend_options={'nodes': [...]}"
            )
        token = read_token(options.get("token_file"))
        if not token:
            raise UnauthorizedError(
                f"the nodes backend needs the node token: set {TOKEN_ENV} (the token the agents were started with) "
                "or pass backend_options={'token_file': PATH}"
            )
        ca_file = options.get("ca") or os.environ.get(CA_ENV) or None
        if ca_file is not None and not os.path.isfile(ca_file):
            source = "backend_options['ca']" if options.get("ca") else CA_ENV
            raise InvalidArgument(f"the node CA certificate file {ca_file} ({source}) does not exist")
        ca_pem = None if ca_file else (os.environ.get(CA_PEM_ENV) or None)
        if ca_file is not None:
            with open(ca_file, encoding="utf-8", errors="replace") as handle:
                ca_pem = handle.read()
        loss_text = options.get("loss_seconds") or os.environ.get(LOSS_ENV) or LOSS_SECONDS
        try:
            loss_seconds = float(loss_text)
        except (TypeError, ValueError):
            raise InvalidArgument(f"loss_seconds ({LOSS_ENV}) must be a number of seconds; got {loss_text!r}") from None
        nested = {NODES_ENV: ",".join(urls[:1000]), TOKEN_ENV: token, "BURLA_BACKEND": "nodes", LOSS_ENV: str(loss_seconds)}
        if ca_pem:
            nested[CA_PEM_ENV] = ca_pem
        return cls(urls, HttpSettings(token=token, ca_pem=ca_pem, loss_seconds=loss_seconds, nested_env=nested))
