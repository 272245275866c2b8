"""Detached jobs on the cluster (see docs/gcp.md): their records, inputs, logs and results."""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()
