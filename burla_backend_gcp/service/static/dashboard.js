// The dashboard's pages: each fills its skeleton from the service's JSON and polls it every two
// seconds while the tab is visible. Text goes in with textContent only (never HTML), and every
// request that changes something carries the session's CSRF token.
"use strict";

const POLL_MS = 2000;
const CSRF = (document.querySelector('meta[name="burla-csrf"]') || {}).content || "";

async function api(method, path, body) {
  const headers = {Accept: "application/json"};
  if (method !== "GET") headers["X-Burla-CSRF"] = CSRF;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(path, {method, headers, credentials: "same-origin",
                                    body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(data.message || `HTTP ${answer.status}`);
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

const $ = (selector) => document.querySelector(selector);
const duration = (s) => (s === null || s === undefined ? "–" : BurlaCharts.duration(s));
const percent = (v) => (v === null || v === undefined ? "–" : `${Math.round(v)}%`);

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function poll(refresh) {
  let timer = null;
  async function tick() {
    try {
      await refresh();
      document.body.classList.remove("stale");
    } catch (error) {
      document.body.classList.add("stale");
      console.warn("burla dashboard:", error);
    }
    timer = setTimeout(tick, POLL_MS);
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && timer === null) tick();
    else if (document.visibilityState !== "visible") { clearTimeout(timer); timer = null; }
  });
  tick();
}

// --- nodes -----------------------------------------------------------------------------------------

function nodeRow(n) {
  const status = n.status === "BOOTING" && n.boot_progress ? `${n.status}: ${n.boot_progress}` : n.status;
  return el("tr", {"data-node": n.node_id, class: `node-${(n.status || "").toLowerCase()}`},
    el("td", {class: "mono", text: n.node_id}), el("td", {text: status, title: n.status_reason || ""}),
    el("td", {text: `${n.machine_type || "?"}${n.spot ? " (spot)" : ""}`}), el("td", {text: n.image || "–"}),
    el("td", {text: (n.gpus || []).join(", ") || "–"}), el("td", {text: duration(n.idle_s)}),
    el("td", {text: percent(n.cpu_percent)}), el("td", {text: percent(n.memory_percent)}));
}

function drawUsage(nodes) {
  const series = [];
  const live = nodes.filter((n) => (n.usage || []).length);
  for (const n of live.slice(0, 4)) {
    const name = live.length > 1 ? `${n.node_id.slice(-6)} ` : "";
    series.push({name: `${name}CPU`, cls: "cpu", points: n.usage.map((u) => [u.t, u.cpu])});
    series.push({name: `${name}memory`, cls: "memory", points: n.usage.map((u) => [u.t, u.memory])});
  }
  BurlaCharts.line($("#usage-chart"), {series, yMax: 100, yUnit: "%", label: "nodes' CPU and memory use",
                                       empty: "No node has reported its use yet"});
}

function cards(data) {
  const live = data.nodes.filter((n) => ["BOOTING", "READY", "RUNNING"].includes(n.status));
  const running = data.jobs.filter((j) => j.status === "running");
  const card = (title, value, note) => el("div", {class: "card"}, el("h3", {text: title}),
                                          el("p", {class: "value", text: value}), el("p", {text: note}));
  $("#cards").replaceChildren(
    card("Nodes", String(live.length), `${live.filter((n) => n.status === "RUNNING").length} running a job`),
    card("Jobs running", String(running.length), `${data.jobs.length} recent`),
    card("Machine type", data.config.machine_type, `idle timeout ${duration(data.config.idle_timeout_s)}`),
    card("Project", data.project, `burla ${data.version}`));
}

// --- jobs ------------------------------------------------------------------------------------------

function progressBar(j) {
  const total = j.total || 0;
  const share = total ? Math.min(100, (100 * (j.done + j.failed)) / total) : 0;
  const bar = el("div", {class: "bar"});
  bar.style.width = `${share.toFixed(1)}%`;  // CSSOM, which the page's CSP allows (a style attribute it would not)
  return el("div", {class: "progress", title: `${j.done + j.failed} of ${total || "?"}`}, bar,
    el("span", {text: `${j.done + j.failed}/${total || "?"}`}));
}

function stopButton(j) {
  if (j.status !== "running") return "";
  if (j.cancel_requested) return el("span", {class: "muted", text: "stopping…"});
  return el("button", {type: "button", class: "stop danger", "data-job": j.job_id, text: "Stop",
    onclick: async (event) => {
      event.target.disabled = true;
      try { await api("POST", `/v1/jobs/${j.job_id}/cancel`, {}); } catch (error) { alert(error.message); }
    }});
}

function jobRow(j) {
  return el("tr", {"data-job": j.job_id, class: `job-${j.status}`},
    el("td", {}, el("a", {href: `/jobs/${j.job_id}`, class: "mono", text: j.job_id})),
    el("td", {text: j.function_name || "–"}), el("td", {text: j.user || "–"}),
    el("td", {text: j.cancel_requested && j.status === "running" ? "stopping" : j.status}),
    el("td", {}, progressBar(j)), el("td", {text: duration(j.duration_s)}),
    el("td", {text: String(j.failed || 0)}), el("td", {}, stopButton(j)));
}

// --- pages -----------------------------------------------------------------------------------------

const pages = {
  overview() {
    poll(async () => {
      const data = await api("GET", "/v1/dashboard/overview");
      cards(data);
      fill($("#nodes-table tbody"), data.nodes.map(nodeRow));
      fill($("#jobs-table tbody"), data.jobs.map(jobRow));
      drawUsage(data.nodes);
    });
  },

  nodes() {
    const say = (text) => { const m = $("#controls-message"); if (m) m.textContent = text; };
    const count = () => parseInt(($("#node-count") || {}).value || "1", 10);
    const act = (id, run) => { const b = $(id); if (b) b.addEventListener("click", async () => {
      b.disabled = true;
      try { say(await run()); } catch (error) { say(error.message); } finally { b.disabled = false; }
    }); };
    const booted = (answer) => [answer.message || `booting ${(answer.booting || []).length} node(s)`,
                                ...(answer.failures || [])].join("; ");
    act("#start-cluster", async () => booted(await api("POST", "/v1/cluster/start", {})));
    act("#grow", async () => {
      const overview = await api("GET", "/v1/dashboard/overview");
      const body = {count: count()};
      if (overview.config.container_image) body.image = overview.config.container_image;
      else body.python = overview.python;
      return booted(await api("POST", "/v1/nodes", body));
    });
    act("#shrink", async () => {
      const answer = await api("POST", "/v1/cluster/shrink", {count: count()});
      return answer.deleted.length ? `deleting ${answer.deleted.join(", ")}` : "no idle node to delete";
    });
    poll(async () => {
      const data = await api("GET", "/v1/dashboard/overview");
      fill($("#nodes-table tbody"), data.nodes.map(nodeRow));
      drawUsage(data.nodes);
    });
  },

  jobs() {
    poll(async () => {
      const data = await api("GET", "/v1/dashboard/jobs?limit=200");
      fill($("#jobs-table tbody"), data.jobs.map(jobRow));
    });
  },

  job() {
    const jobId = document.body.dataset.jobId;
    const state = {page: 0, size: 50, pages: 1, selected: null};
    async function showInput(index) {
      state.selected = index;
      $("#input-title").textContent = `Input ${index}`;
      try {
        const record = await api("GET", `/v1/dashboard/jobs/${jobId}/inputs/${index}`);
        $("#input-output").textContent = record.output || "(it printed nothing)";
      } catch (error) {
        $("#input-output").textContent = error.message;
      }
    }
    function pager() {
      const go = (page) => { state.page = Math.max(0, Math.min(page, state.pages - 1)); refreshInputs(); };
      const jump = el("input", {type: "number", min: 0, id: "goto-input", placeholder: "input #"});
      $("#pager").replaceChildren(
        el("button", {type: "button", text: "«", onclick: () => go(0)}),
        el("button", {type: "button", text: "‹", id: "prev-page", onclick: () => go(state.page - 1)}),
        el("span", {id: "page-label", text: `page ${state.page + 1} of ${state.pages}`}),
        el("button", {type: "button", text: "›", id: "next-page", onclick: () => go(state.page + 1)}),
        el("button", {type: "button", text: "»", onclick: () => go(state.pages - 1)}), jump,
        el("button", {type: "button", text: "Show", onclick: () => {
          const index = parseInt(jump.value, 10);
          if (index >= 0) { go(Math.floor(index / state.size)); showInput(index); }
        }}));
    }
    async function refreshInputs() {
      const data = await api("GET", `/v1/dashboard/jobs/${jobId}/inputs?page=${state.page}&size=${state.size}`);
      state.pages = data.pages || state.page + 2;
      pager();
      fill($("#inputs-table tbody"), data.inputs.map((i) => el("tr", {"data-index": i.index,
          class: `input-${i.status.replace(" ", "-")}${state.selected === i.index ? " selected" : ""}`,
          onclick: () => showInput(i.index)},
        el("td", {class: "mono", text: String(i.index)}), el("td", {text: i.status}),
        el("td", {text: i.duration_s === undefined ? "–" : `${i.duration_s.toFixed(2)} s`}),
        el("td", {class: "mono", text: i.node || "–"}), el("td", {text: i.has_output ? "show" : ""}))));
    }
    poll(async () => {
      const data = await api("GET", `/v1/dashboard/jobs/${jobId}`);
      const j = data.job;
      $("#job-summary").replaceChildren(
        el("p", {}, el("strong", {text: j.function_name || "job"}), ` by ${j.user || "?"} · `,
           el("span", {id: "job-status", text: j.cancel_requested && j.status === "running" ? "stopping" : j.status}),
           ` · ${duration(j.duration_s)} · ${j.failed} failed `, stopButton(j)),
        progressBar(j));
      // From the job's start (nothing done then) to its last report.
      const start = j.started_at || (data.samples[0] || {}).t || 0;
      const since = (key) => data.samples.length ? [[0, 0], ...data.samples.map((s) => [s.t - start, s[key]])] : [];
      BurlaCharts.line($("#progress-chart"), {label: "completed inputs over time", empty: "No input has ended yet",
        series: [{name: "completed", cls: "done", points: since("done")},
                 {name: "failed", cls: "failed", points: since("failed")}]});
      $("#job-logs").textContent = data.logs.map((l) => `[${l.index}] ${l.text}`).join("") || "(no output yet)";
      await refreshInputs();
    });
  },

  settings() {
    const form = $("#settings-form");
    const say = (id, text) => { $(id).textContent = text; };
    const numbers = ["quantity", "idle_timeout_s", "grow_idle_timeout_s", "disk_gb", "cpu_quota"];
    api("GET", "/v1/dashboard/overview").then((data) => {
      for (const [key, value] of Object.entries(data.config)) {
        const input = $(`#setting-${key}`);
        if (!input) continue;
        if (input.type === "checkbox") input.checked = Boolean(value);
        else input.value = Array.isArray(value) ? value.join(", ") : (value === null ? "" : value);
      }
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {};
      for (const input of form.querySelectorAll("input")) {
        if (input.type === "checkbox") body[input.name] = input.checked;
        else if (numbers.includes(input.name)) body[input.name] = Number(input.value);
        else if (input.name === "extra_source_ranges")
          body[input.name] = input.value.split(",").map((s) => s.trim()).filter(Boolean);
        else if (input.name === "container_image") body[input.name] = input.value.trim() || null;
        else body[input.name] = input.value.trim();
      }
      try { await api("PUT", "/v1/config", body); say("#settings-message", "Saved."); }
      catch (error) { say("#settings-message", error.message); }
    });
    const users = $("#users-table");
    if (!users) return;
    async function refreshUsers() {
      const data = await api("GET", "/v1/users");
      fill($("#users-table tbody"), data.users.map((u) => el("tr", {"data-user": u.email},
        el("td", {text: u.email}), el("td", {text: u.role}), el("td", {text: u.added_by || "–"}),
        el("td", {}, el("button", {type: "button", class: "danger remove-user", text: "Remove", onclick: async () => {
          try { await api("DELETE", `/v1/users/${encodeURIComponent(u.email)}`); await refreshUsers();
                say("#users-message", `${u.email} removed; their tokens are revoked.`); }
          catch (error) { say("#users-message", error.message); }
        }})))));
    }
    $("#add-user").addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const answer = await api("POST", "/v1/users", {email: $("#new-user").value, role: $("#new-user-role").value});
        say("#users-message", `Send ${answer.email} this sign-in link (it works once, within 7 days): ${answer.invitation}`);
        $("#new-user").value = "";
        await refreshUsers();
      } catch (error) { say("#users-message", error.message); }
    });
    refreshUsers();
  },
};

for (const button of document.querySelectorAll("button.copy")) {
  button.addEventListener("click", async () => {
    const text = document.getElementById(button.dataset.copy).textContent;
    try { await navigator.clipboard.writeText(text); button.textContent = "Copied"; }
    catch (error) { window.getSelection().selectAllChildren(document.getElementById(button.dataset.copy)); }
  });
}

const page = pages[document.body.dataset.page];
if (page) page();
