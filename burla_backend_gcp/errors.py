"""Errors of backend "gcp", each saying what went wrong in Google Cloud and what to do."""

from __future__ import annotations

from dataclasses import dataclass

from burla_core.errors import BurlaError


@dataclass(frozen=True)
class OperationError:
    """One entry of a Compute Engine operation's `error.errors`."""

    code: str  # "QUOTA_EXCEEDED", "ZONE_RESOURCE_POOL_EXHAUSTED", "RESOURCE_NOT_FOUND"…
    message: str


class GcpOperationFailed(BurlaError):
    """A Compute Engine operation ended with an error. `errors` lists GCE's reasons;
    `quota_exceeded` and `zone_exhausted` tell the two a caller retries differently."""

    def __init__(self, operation: str, target: str, errors: list[OperationError], http_status: int = 0):
        self.operation = operation
        self.target = target
        self.errors = errors
        self.http_status = http_status
        reasons = "; ".join(f"{e.code}: {e.message}" for e in errors) or "no reason given"
        super().__init__(f"Google Cloud operation {operation} on {target} failed: {reasons}")

    @property
    def codes(self) -> list[str]:
        return [e.code for e in self.errors]

    @property
    def quota_exceeded(self) -> bool:
        return "QUOTA_EXCEEDED" in self.codes

    @property
    def zone_exhausted(self) -> bool:
        return any(c in ("ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS") for c in self.codes)


class GcpOperationTimeout(BurlaError, TimeoutError):
    """A Compute Engine operation was not DONE by the caller's deadline."""


class GcpCredentialsMissing(BurlaError):
    """No Google credentials were found for the client factory."""


class GcpStandinMisconfigured(BurlaError):
    """The stand-in was asked for (BURLA_GCP_STANDIN) but a piece it needs is not set."""


class InstallError(BurlaError):
    """`burla install` / `burla uninstall` cannot go on; the message says why and what to do."""


class InstallPrerequisiteMissing(InstallError):
    """gcloud, the user's Google login or the gcloud project is missing (the message holds the
    command that fixes it)."""


class InstallPermissionsMissing(InstallError):
    """The installer's account lacks permissions on the project; `missing` names each one. Raised
    before anything was changed."""

    def __init__(self, project: str, account: str, missing: list[str], *, uninstall: bool = False,
                 message: str = ""):
        self.project = project
        self.account = account
        self.missing = list(missing)
        self.uninstall = uninstall
        super().__init__(message or f"missing permissions on project {project}: {', '.join(missing)}")


class ClusterUnreachable(BurlaError):
    """The cluster service could not be reached (after retries); the message names its URL."""


class LoginError(BurlaError):
    """`burla login` or `burla dashboard` could not finish; the message says what to do (sign in to
    the dashboard first, ask an admin, run it again)."""
