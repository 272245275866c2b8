"""Burla: run any Python function over a list of inputs on many computers at once.

    from burla import remote_parallel_map
    results = remote_parallel_map(my_function, [1, 2, 3])

Code written for Burla imports some exceptions from its private modules; those imports work
here too and give these same classes: `from burla._node import NodeDisconnected, ...` and
`from burla._remote_parallel_map import FunctionTooBig`.
"""

from burla_core import __version__
from burla_core.api import remote_parallel_map
from burla_core.errors import (
    AllNodesBusy,
    BurlaError,
    ClusterRestarted,
    ClusterShutdown,
    ConfigError,
    ContainerEngineMissing,
    FunctionTooBig,
    InputTooBig,
    InvalidArgument,
    JobCanceled,
    JobStalled,
    LocalCodeTooBig,
    NoCompatibleNodes,
    NoNodes,
    NodeDisconnected,
    NodesFailedToBoot,
    PackageInstallFailed,
    PluginError,
    RemoteException,
    ServerError,
    UnauthorizedError,
    UnknownBackend,
    UnknownGPU,
    UnpicklableFunction,
    UnpicklableInput,
    UnpicklableResult,
    UnsupportedOption,
    VersionMismatch,
    WorkerDied,
)

__all__ = [
    "remote_parallel_map",
    "__version__",
    "AllNodesBusy",
    "BurlaError",
    "ClusterRestarted",
    "ClusterShutdown",
    "ConfigError",
    "ContainerEngineMissing",
    "FunctionTooBig",
    "InputTooBig",
    "InvalidArgument",
    "JobCanceled",
    "JobStalled",
    "LocalCodeTooBig",
    "NoCompatibleNodes",
    "NoNodes",
    "NodeDisconnected",
    "NodesFailedToBoot",
    "PackageInstallFailed",
    "PluginError",
    "RemoteException",
    "ServerError",
    "UnauthorizedError",
    "UnknownBackend",
    "UnknownGPU",
    "UnpicklableFunction",
    "UnpicklableInput",
    "UnpicklableResult",
    "UnsupportedOption",
    "VersionMismatch",
    "WorkerDied",
]
