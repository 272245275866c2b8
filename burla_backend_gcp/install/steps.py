"""How install and uninstall run: a list of steps, each of which first looks (`plan`) and then,
unless it is a dry run, changes what it must (`apply`), printing one status line.

    plan(ctx) ──► Change("none")  ──────────────────────► "  unchanged   LABEL: DETAIL"
              └─► Change("create"|"update"|"delete") ──► dry run: "  would create LABEL: DETAIL"
                                                    └──► apply(ctx, change) ──► "  created     LABEL: DETAIL"

Every step is idempotent: it looks at what exists and does only what is missing, so a second
run changes nothing and an interrupted run, run again, picks up where it stopped. A failing
step stops the run with an InstallError that names the step and says to run the command again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import InstallError

if TYPE_CHECKING:
    from .context import InstallContext

NONE, CREATE, UPDATE, DELETE = "none", "create", "update", "delete"
# A step's action is a verb; the status column says it in the past, or as "would VERB".
_PAST = {CREATE: "created", UPDATE: "updated", DELETE: "deleted", "enable": "enabled", "grant": "granted",
         "upload": "uploaded", "deploy": "deployed", "add": "added", "remove": "removed"}
_COLUMN = 14


@dataclass
class Change:
    """What a step found it must do (`action`: NONE or a verb such as CREATE, "enable",
    "grant"); `found` carries what plan saw, for apply."""

    action: str
    detail: str
    found: Any = None


@dataclass
class StepOutcome:
    label: str
    action: str
    detail: str
    applied: bool


class Step:
    """One kind of resource. Subclasses set `label` and implement plan and apply."""

    label = "step"

    def plan(self, ctx: "InstallContext") -> Change:
        raise NotImplementedError

    def apply(self, ctx: "InstallContext", change: Change) -> str:
        """Make the change; the detail for the status line (default: the plan's)."""
        raise NotImplementedError


@dataclass
class Run:
    """The outcome of a whole run, step by step."""

    outcomes: list[StepOutcome] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(o.action != NONE for o in self.outcomes)


def status_line(status: str, label: str, detail: str) -> str:
    return f"  {status:<{_COLUMN}}{label}: {detail}" if detail else f"  {status:<{_COLUMN}}{label}"


def _service_disabled(error: BaseException) -> bool:
    reason = getattr(error, "reason", None)
    return reason == "SERVICE_DISABLED" or "SERVICE_DISABLED" in str(error) or "has not been used in project" in str(error)


def run_steps(ctx: "InstallContext", steps: list[Step], *, command: str = "install") -> Run:
    run = Run()
    for step in steps:
        try:
            change = step.plan(ctx)
        except Exception as error:
            if not _service_disabled(error):
                raise _failed(step, error, command) from error
            # Its API is not enabled, so nothing of this kind exists yet: install's earlier step
            # enables it (which a dry run skips); for uninstall there is nothing to remove.
            if command == "install" and ctx.dry_run:
                change = Change(CREATE, "(its API is not enabled yet)")
            elif command == "uninstall":
                change = Change(NONE, "none (its API is not enabled)")
            else:
                raise _failed(step, error, command) from error
        applied = False
        detail = change.detail
        if change.action != NONE and not ctx.dry_run:
            try:
                detail = step.apply(ctx, change) or change.detail
            except Exception as error:
                raise _failed(step, error, command) from error
            applied = True
        if change.action == NONE:
            status = "unchanged"
        else:
            status = f"would {change.action}" if ctx.dry_run else _PAST.get(change.action, change.action)
        ctx.echo(status_line(status, step.label, detail))
        run.outcomes.append(StepOutcome(step.label, change.action, detail, applied))
    return run


def _failed(step: Step, error: BaseException, command: str) -> InstallError:
    if isinstance(error, InstallError):
        return error
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return InstallError(f"{step.label}: {message}\nNothing after this step was done. Fix the cause and run "
                        f"`burla {command}` again: it picks up where it stopped.")
