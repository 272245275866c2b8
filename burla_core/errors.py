"""Every error Burla raises on purpose, named like Burla's own, each carrying what the user needs
to act on it (the input index, what the machine has, the installed backends)."""

from __future__ import annotations


class BurlaError(Exception):
    """Base class of every error raised by Burla itself (not by the user's function)."""


class _AboutOneInput(BurlaError):
    """An error about one input: `input_index` (and `burla_input_index`, like the function's own
    errors) name it."""

    def __init__(self, message: str, input_index: int | None = None):
        super().__init__(message)
        self.input_index = input_index
        self.burla_input_index = input_index


class FunctionTooBig(BurlaError):
    """The function, pickled with cloudpickle, is over the size limit (100 MB)."""


class InputTooBig(_AboutOneInput):
    """One input, pickled, is over the size limit (200 MB). `input_index` names it."""


class UnpicklableFunction(BurlaError):
    """The function (or something it refers to) cannot be pickled with cloudpickle."""


class UnpicklableInput(_AboutOneInput):
    """An input cannot be pickled with cloudpickle. `input_index` names it."""


class UnpicklableResult(_AboutOneInput):
    """A return value of the function cannot be pickled. `input_index` names the input."""


class InvalidArgument(BurlaError, ValueError):
    """An argument of remote_parallel_map is out of range or of the wrong type."""


class UnknownGPU(InvalidArgument):
    """`func_gpu` names a GPU Burla does not know; the message lists the valid names."""


class ConfigError(BurlaError, ValueError):
    """Burla's config file, data directory or one of its environment variables is unusable; the
    message names the file or variable and what to do."""


class UnknownBackend(BurlaError):
    """The backend asked for is not installed; the message lists the installed ones."""


class PluginError(BurlaError):
    """A plugin is broken: a misspelt hook, a duplicate name, a missing transport."""


class NoCompatibleNodes(BurlaError):
    """No node can satisfy the call's func_cpu / func_ram / func_gpu / image."""


class ContainerEngineMissing(NoCompatibleNodes):
    """`image=` was given but no container engine (docker, podman) runs on this machine."""


class JobCanceled(BurlaError):
    """The job was canceled (Ctrl-C in the caller, or `burla jobs cancel`)."""


class WorkerDied(_AboutOneInput):
    """A worker process died twice while running the same input (os._exit, a signal, out of
    memory). `input_index` names the input; the message says how the worker died."""

    def __init__(self, message: str, input_index: int | None = None, how: str = ""):
        super().__init__(message, input_index)
        self.how = how


class NodeDisconnected(BurlaError):
    """Every node running the job was lost; the message names them and the unfinished inputs."""


class NoNodes(BurlaError):
    """The backend has no node at all to run the job on (and is not booting any)."""


class NodesFailedToBoot(BurlaError):
    """grow=True booted no node: the message gives each boot's reason (quota, stockout, image)."""


class AllNodesBusy(BurlaError):
    """Every node is busy with other jobs and this one cannot wait for them."""

    def __init__(self, message: str = "All nodes are busy, please try again later."):
        super().__init__(message)


class JobStalled(BurlaError):
    """The job made no progress for too long (no node answered, no input finished)."""


class ClusterRestarted(BurlaError):
    """The cluster was restarted while the job ran; its unfinished inputs were lost."""


class ClusterShutdown(BurlaError):
    """The cluster was shut down while the job ran."""


class UnsupportedOption(BurlaError):
    """A parameter the selected backend cannot honour (said once, as a warning, where harmless)."""


class VersionMismatch(BurlaError):
    """The caller and a node run different Python or burla versions."""


class UnauthorizedError(BurlaError):
    """A node or the cluster refused the credentials (bearer token) this machine sent."""


class ServerError(BurlaError):
    """A node or the cluster answered with an error of its own."""


class RemoteException(BurlaError):
    """Stands in for an exception raised by the user's function that could not be pickled (or not
    unpickled here): it carries the original type name, message and traceback text."""

    def __init__(self, type_name: str, message: str, traceback_text: str, input_index: int | None = None):
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.original_message = message
        self.traceback_text = traceback_text
        self.burla_input_index = input_index
        self.burla_traceback = traceback_text


class RemoteTraceback(Exception):
    """Chained as `__cause__` of a re-raised function error so that the printed traceback shows
    the frames of the user's code as they ran in the worker."""

    def __init__(self, traceback_text: str):
        super().__init__(traceback_text)
        self.traceback_text = traceback_text

    def __str__(self) -> str:
        return "\n\n" + self.traceback_text.rstrip("\n")


class LocalCodeTooBig(BurlaError):
    """The caller's local code (modules not installed from a distribution, sent with the job) is
    over the size limit (100 MB); the message names the biggest files."""


class PackageInstallFailed(BurlaError):
    """A node could not install a package of the caller's environment (not on its index, no
    wheel for its platform, a failed build). `package`, `version` and `node` name it;
    `installer_output` holds the installer's last lines."""

    def __init__(self, message: str, package: str = "", version: str = "", node: str = "", installer_output: str = ""):
        super().__init__(message)
        self.package = package
        self.version = version
        self.node = node
        self.installer_output = installer_output

    def __reduce__(self):
        return (type(self), (str(self), self.package, self.version, self.node, self.installer_output))
