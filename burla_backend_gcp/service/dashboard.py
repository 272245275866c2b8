"""The dashboard's pages: server-rendered skeletons that static/dashboard.js fills from the JSON
of dashboard_api.py and keeps live (it polls every two seconds while the tab is visible).

    /               overview: nodes, recent jobs, nodes' CPU and memory, the quick-start snippet
    /nodes          every node (status, machine, image, GPUs, idle time, CPU and memory use), and
                    for admins: start the cluster, grow and shrink it
    /jobs           every job (status, progress, duration, failures) with its Stop button
    /jobs/{id}      one job: completed inputs over time, its output, its inputs a page at a time
                    (whatever its size) with each input's output, Stop
    /settings       machine type, quantity, idle timeouts...; the users (admins add and remove)

A page without a session says how to get one (`burla dashboard`); nothing is shown to it.
"""

from __future__ import annotations

import functools

import re

from aiohttp import web

from .auth import public
from .login import login_store
from .pages import esc, notice, page, static
from .sessions import current_session

_JOB_ID = re.compile(r"^[a-z0-9_-]{1,64}$")


async def _session(request: web.Request):
    found = await current_session(request, login_store(request))
    return found[1] if found else None


def _signed_out() -> web.Response:
    return notice("Not signed in", "<p>Run <code>burla dashboard</code> on your computer to sign in to this "
                                   "cluster's dashboard.</p>", status=401)


def signed_in_page(handler):
    """A page for signed-in users: `handler(request, session)`, or the "not signed in" page.
    Open to anyone at the API's gate (`public`): the page checks its own session cookie."""

    @functools.wraps(handler)
    async def page_handler(request: web.Request) -> web.Response:
        session = await _session(request)
        if session is None:
            return _signed_out()
        return await handler(request, session)

    return public(page_handler)


def quickstart(origin: str) -> str:
    return (f"pip install 'burla-open[gcp]'\n"
            f"burla login --cluster-url {origin}\n"
            f"python - <<'EOF'\n"
            f"from burla import remote_parallel_map\n\n"
            f"def square(x):\n"
            f"    print(f\"squaring {{x}}\")\n"
            f"    return x * x\n\n"
            f"print(remote_parallel_map(square, range(100), grow=True))\n"
            f"EOF")


def _table(table_id: str, columns: list[str]) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody></tbody></table>'


NODE_COLUMNS = ["Node", "Status", "Machine", "Image", "GPU", "Idle", "CPU", "Memory"]
JOB_COLUMNS = ["Job", "Function", "User", "Status", "Progress", "Duration", "Failures", ""]


@signed_in_page
async def overview_page(request: web.Request, session) -> web.Response:
    from .login import origin_of

    body = (f'<section class="cards" id="cards"></section>'
            f'<section><h2>Nodes</h2>{_table("nodes-table", NODE_COLUMNS)}</section>'
            f'<section><h2>Nodes\' CPU and memory</h2><div class="chart" id="usage-chart"></div></section>'
            f'<section><h2>Recent jobs</h2>{_table("jobs-table", JOB_COLUMNS)}</section>'
            f'<section><h2>Quick start</h2><p>On any computer, to run a function on this cluster:</p>'
            f'<pre id="quickstart">{esc(quickstart(origin_of(request)))}</pre>'
            f'<button type="button" class="copy" data-copy="quickstart">Copy</button></section>')
    return page("Overview", body, session=session, active="/", data={"page": "overview"})


@signed_in_page
async def nodes_page(request: web.Request, session) -> web.Response:
    controls = ""
    if session.admin:
        controls = ('<section class="controls" id="cluster-controls"><h2>Grow or shrink</h2>'
                    '<button type="button" id="start-cluster">Start the cluster</button> '
                    '<label>Nodes <input type="number" id="node-count" min="1" max="1000" value="1"></label> '
                    '<button type="button" id="grow">Grow</button> <button type="button" id="shrink">Shrink</button>'
                    '<p class="message" id="controls-message"></p></section>')
    body = (f'<h1>Nodes</h1>{controls}<section>{_table("nodes-table", NODE_COLUMNS)}</section>'
            f'<section><h2>CPU and memory</h2><div class="chart" id="usage-chart"></div></section>')
    return page("Nodes", body, session=session, active="/nodes", data={"page": "nodes"})


@signed_in_page
async def jobs_page(request: web.Request, session) -> web.Response:
    body = f'<h1>Jobs</h1><section>{_table("jobs-table", JOB_COLUMNS)}</section>'
    return page("Jobs", body, session=session, active="/jobs", data={"page": "jobs"})


@signed_in_page
async def job_page(request: web.Request, session) -> web.Response:
    job_id = request.match_info["job_id"]
    if not _JOB_ID.match(job_id):
        raise web.HTTPNotFound()
    body = (f'<h1>Job <span class="mono">{esc(job_id)}</span></h1>'
            f'<section class="job-summary" id="job-summary"></section>'
            f'<section><h2>Completed inputs over time</h2><div class="chart" id="progress-chart"></div></section>'
            f'<section><h2>Output</h2><pre class="logs" id="job-logs"></pre></section>'
            f'<section><h2>Inputs</h2><div class="pager" id="pager"></div>'
            f'{_table("inputs-table", ["Input", "Status", "Duration", "Node", "Output"])}'
            f'<h3 id="input-title"></h3><pre class="logs" id="input-output"></pre></section>')
    return page(f"Job {job_id}", body, session=session, active="/jobs", data={"page": "job", "job-id": job_id})


@signed_in_page
async def settings_page(request: web.Request, session) -> web.Response:
    disabled = "" if session.admin else " disabled"
    fields = [("machine_type", "Machine type", "text", "n2-standard-4"),
              ("quantity", "Quantity (nodes the cluster keeps booted once started)", "number", ""),
              ("idle_timeout_s", "Idle timeout (seconds; a node deletes itself after this long idle)", "number", ""),
              ("grow_idle_timeout_s", "Idle timeout of nodes booted by grow=True (seconds)", "number", ""),
              ("container_image", "Container image (empty: python:X.Y of the caller)", "text", ""),
              ("disk_gb", "Boot disk (GB)", "number", ""), ("cpu_quota", "Most vCPUs at once", "number", ""),
              ("extra_source_ranges", "Also admit these address ranges to the nodes (comma-separated)", "text", "")]
    inputs = "".join(f'<label>{esc(label)}<input name="{name}" id="setting-{name}" type="{kind}" '
                     f'placeholder="{esc(hint)}"{disabled}></label>' for name, label, kind, hint in fields)
    inputs += f'<label class="check"><input type="checkbox" name="spot" id="setting-spot"{disabled}> Spot VMs</label>'
    save = '<button type="submit" class="primary">Save</button>' if session.admin else \
        '<p>Only an admin may change the settings.</p>'
    users = ""
    if session.admin:
        users = (f'<section><h2>Users</h2><p>Who may use the cluster. Adding someone gives you a sign-in link to send '
                 f'them (it works once, within 7 days).</p>{_table("users-table", ["User", "Role", "Added by", ""])}'
                 f'<form id="add-user"><input type="email" name="email" id="new-user" placeholder="someone@example.com" '
                 f'required> <select name="role" id="new-user-role"><option value="user">user</option>'
                 f'<option value="admin">admin</option></select> <button type="submit">Add</button></form>'
                 f'<p class="message" id="users-message"></p></section>')
    body = (f'<h1>Settings</h1><section><form id="settings-form" class="settings">{inputs}{save}</form>'
            f'<p class="message" id="settings-message"></p></section>{users}')
    return page("Settings", body, session=session, active="/settings", data={"page": "settings"})


def setup(app: web.Application) -> None:
    from . import dashboard_api, reports

    app.router.add_get("/", overview_page)
    app.router.add_get("/nodes", nodes_page)
    app.router.add_get("/jobs", jobs_page)
    app.router.add_get("/jobs/{job_id}", job_page)
    app.router.add_get("/settings", settings_page)
    app.router.add_get("/static/{name}", public(static))
    app.router.add_routes(dashboard_api.routes)
    app.router.add_routes(reports.routes)

