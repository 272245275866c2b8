"""The HTML around every page the cluster service serves: the dashboard's layout (navigation,
who is signed in, the CSRF token its scripts send back) and the plain pages of sign-in and
login. Server-rendered; every value put in a page goes through `esc`. The page's script and
style are the package's own files (static/), served by the service itself: no CDN, no build.
"""

from __future__ import annotations

import html
from importlib import resources

from aiohttp import web

from .. import schema

NAV = (("/", "Overview"), ("/nodes", "Nodes"), ("/jobs", "Jobs"), ("/settings", "Settings"))
STATIC_FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css", "charts.js": "text/javascript"}
# What a page may load: only this service's own script and style; no frames (clickjacking).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self' http://127.0.0.1:*; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make the browser send `Origin: null`
    "Cache-Control": "no-store",
}


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(title: str, body: str, *, session: schema.Session | None = None, active: str = "",
         status: int = 200, data: dict[str, str] | None = None) -> web.Response:
    """A whole page. `data` becomes data-* attributes of <body> (what the page's script reads)."""
    attributes = "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in (data or {}).items())
    header = ""
    if session is not None:
        links = "".join(f'<a href="{href}"{" class=active" if href == active else ""}>{esc(name)}</a>'
                        for href, name in NAV)
        header = (f'<header><span class="brand">Burla</span><nav>{links}</nav>'
                  f'<span class="who">{esc(session.email)}{" (admin)" if session.admin else ""}</span>'
                  f'<form method="post" action="/signout"><input type="hidden" name="csrf" value="{esc(session.csrf)}">'
                  f'<button type="submit" class="link">Sign out</button></form></header>')
    csrf = f'<meta name="burla-csrf" content="{esc(session.csrf)}">' if session is not None else ""
    text = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)} · Burla</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{csrf}<link rel="icon" href="data:,">'
            f'<link rel="stylesheet" href="/static/dashboard.css"></head>'
            f'<body{attributes}>{header}<main>{body}</main>'
            f'<script src="/static/charts.js"></script><script src="/static/dashboard.js"></script></body></html>')
    return web.Response(text=text, content_type="text/html", status=status, headers=SECURITY_HEADERS)


def notice(title: str, message_html: str, *, status: int = 200, session: schema.Session | None = None,
           kind: str = "info") -> web.Response:
    """A page that only says something (a sign-in error, "you can close this tab")."""
    return page(title, f'<section class="notice {esc(kind)}"><h1>{esc(title)}</h1>{message_html}</section>',
                session=session, status=status)


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    text = resources.files(__package__).joinpath("static", name).read_text(encoding="utf-8")
    return web.Response(text=text, content_type=STATIC_FILES[name],
                        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"})
