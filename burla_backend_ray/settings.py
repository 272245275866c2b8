"""Where the Ray cluster is: the one place that reads backend_options["address"] and RAY_ADDRESS."""

from __future__ import annotations

import os
from dataclasses import dataclass

from burla_core.errors import InvalidArgument, NoNodes

ADDRESS_ENV = "RAY_ADDRESS"


@dataclass(frozen=True)
class RaySettings:
    address: str | None  # None: this process is already connected (the caller ran ray.init)

    @classmethod
    def from_options(cls, options: dict) -> "RaySettings":
        """backend_options["address"] first, then RAY_ADDRESS, then a connection this process
        already has. There is no default: the backend never starts a cluster of its own."""
        address = options.get("address") or os.environ.get(ADDRESS_ENV)
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise InvalidArgument(f"the Ray cluster address must be a string like 'HOST:6379'; got {address!r}")
        if not address:
            from .connection import connected

            if not connected():
                raise NoNodes(
                    "the ray backend needs the address of a running Ray cluster: pass "
                    "backend_options={'address': 'HOST:6379'} or set "
                    f"{ADDRESS_ENV}=HOST:6379 (start one with `ray start --head`), or call ray.init(...) first"
                )
            return cls(address=None)
        return cls(address=address.strip())
