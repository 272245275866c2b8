"""Where the Dask cluster is: the one place that reads backend_options["address"] and
BURLA_DASK_ADDRESS, and the connection timeout."""

from __future__ import annotations

import os
from dataclasses import dataclass

from burla_core.errors import InvalidArgument, NoNodes

ADDRESS_ENV = "BURLA_DASK_ADDRESS"
CONNECT_SECONDS = 20.0


@dataclass(frozen=True)
class DaskSettings:
    address: str
    connect_seconds: float = CONNECT_SECONDS

    @classmethod
    def from_options(cls, options: dict) -> "DaskSettings":
        """backend_options["address"] first, then BURLA_DASK_ADDRESS. There is no default: the
        backend never starts a cluster of its own."""
        address = options.get("address") or os.environ.get(ADDRESS_ENV)
        if not address:
            raise NoNodes(
                "the dask backend needs the address of a running Dask scheduler: pass "
                "backend_options={'address': 'tcp://HOST:8786'} or set "
                f"{ADDRESS_ENV}=tcp://HOST:8786 (start one with `dask scheduler` and `dask worker "
                "tcp://HOST:8786`, or distributed.LocalCluster())"
            )
        if not isinstance(address, str) or not address.strip():
            raise InvalidArgument(f"the Dask scheduler address must be a string like 'tcp://host:8786'; got {address!r}")
        seconds = options.get("connect_seconds") or CONNECT_SECONDS
        try:
            seconds = float(seconds)
        except (TypeError, ValueError):
            raise InvalidArgument(f"backend_options['connect_seconds'] must be a number of seconds; got {seconds!r}") from None
        return cls(address=address.strip(), connect_seconds=seconds)
