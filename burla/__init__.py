"""Burla: run any Python function over a list of inputs on many computers at once.

    from burla import remote_parallel_map
    results = remote_parallel_map(my_function, [1, 2, 3])
"""

from burla_core import __version__
from burla_core.api import remote_parallel_map
from burla_core.errors import (
    BurlaError,
    ContainerEngineMissing,
    FunctionTooBig,
    InputTooBig,
    InvalidArgument,
    JobCanceled,
    LocalCodeTooBig,
    NoCompatibleNodes,
    NodeDisconnected,
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
    VersionMismatch,
    WorkerDied,
)

__all__ = [
    "remote_parallel_map",
    "__version__",
    "BurlaError",
    "ContainerEngineMissing",
    "FunctionTooBig",
    "InputTooBig",
    "InvalidArgument",
    "JobCanceled",
    "LocalCodeTooBig",
    "NoCompatibleNodes",
    "NodeDisconnected",
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
    "VersionMismatch",
    "WorkerDied",
]
