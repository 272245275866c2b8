"""The node firewall: the node port is open only to the addresses callers come from.

Each caller that starts a job is recorded (caller_addresses/{address}); a new address is added
to the source ranges of the firewall rule `burla install` made (schema.FIREWALL_RULE), together
with the config's `extra_source_ranges`. Nothing ever adds 0.0.0.0/0. The address is the one
Cloud Run's front end saw: the last entry of X-Forwarded-For (the entries before it are the
client's own claims), else the connection's peer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading

from aiohttp import web

from .. import clients, schema

log = logging.getLogger("burla.cluster")
_known: set[str] = set()
_lock = threading.Lock()


def caller_address(request: web.Request) -> str:
    forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
    address = forwarded[-1] if forwarded else (request.remote or "")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return ""


def source_ranges(addresses: list[str], extra: list[str]) -> list[str]:
    ranges = []
    for address in addresses:
        ip = ipaddress.ip_address(address)
        ranges.append(f"{ip}/{32 if ip.version == 4 else 128}")
    for item in extra:
        network = ipaddress.ip_network(item, strict=False)
        if network.prefixlen == 0:
            log.warning("extra_source_ranges: %s would open the node port to everyone; left out", item)
            continue
        ranges.append(str(network))
    return sorted(dict.fromkeys(ranges))


def admit_caller(request: web.Request, email: str) -> str:
    """Record the caller's address and, if it is new, admit it in the firewall (in the
    background: the job does not wait for it). Returns the address."""
    from .app import SETTINGS, STORE

    address = caller_address(request)
    if not address:
        return ""
    with _lock:
        if address in _known:
            return address
        _known.add(address)
    store, project = request.app[STORE], request.app[SETTINGS].project
    asyncio.get_running_loop().run_in_executor(None, _admit, store, project, address, email)
    return address


def _admit(store, project: str, address: str, email: str) -> None:
    try:
        store.add_caller_address(address, email)
        update_firewall(store, project)
    except Exception:
        log.warning("could not admit %s in the node firewall", address, exc_info=True)
        with _lock:
            _known.discard(address)


def update_firewall(store, project: str) -> None:
    """Set the rule's source ranges to the recorded addresses (and the config's extra ranges)."""
    from google.api_core import exceptions
    from google.cloud import compute_v1

    with _lock:
        firewalls = clients.firewalls()
        try:
            rule = firewalls.get(project=project, firewall=schema.FIREWALL_RULE)
        except exceptions.NotFound:
            log.warning("the firewall rule %s does not exist (run `burla install`); callers cannot reach the nodes",
                        schema.FIREWALL_RULE)
            return
        wanted = source_ranges(store.caller_addresses(), store.config().extra_source_ranges)
        if sorted(rule.source_ranges) == wanted:
            return
        operation = firewalls.patch(project=project, firewall=schema.FIREWALL_RULE,
                                    firewall_resource=compute_v1.Firewall(source_ranges=wanted))
        clients.wait_global_operation(operation, project=project, timeout_s=300)
        log.info("the node firewall admits %s", ", ".join(wanted))
