"""Burla's private module `burla._node`, where its users' code imports exceptions from:
`from burla._node import NodeDisconnected, NoCompatibleNodes, ...` keeps working unchanged."""

from burla_core.errors import (  # noqa: F401
    AllNodesBusy,
    ClusterRestarted,
    ClusterShutdown,
    InputTooBig,
    JobCanceled,
    JobStalled,
    NoCompatibleNodes,
    NodeDisconnected,
    NodesFailedToBoot,
    NoNodes,
    UnauthorizedError,
    VersionMismatch,
)
