// The operations console: polls the /ops JSON routes every 500 ms and renders them.
// The relays' table shows only when at least one relay has reported (GET /ops/relays).
// Everything shown is set as text (textContent, text nodes), never parsed as HTML: stream
// ids and error messages are user data. Changes are POSTed as JSON with X-Ops-Console: 1
// (with the session cookie, the server requires both: see cqrskit.fastapi._operator_auth).
"use strict";

(() => {
  const base = document.body.dataset.base;
  const POLL_MS = 500;
  const HEADERS = {
    "Content-Type": "application/json",
    "X-Ops-Console": "1",
    "X-Operator": "console",
  };
  const rendered = {};
  const rows = new Map(); // projection name -> its row's parts

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (key === "onclick") node.addEventListener("click", value);
      else if (value !== null && value !== undefined) node.setAttribute(key, String(value));
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : String(child ?? ""));
    }
    return node;
  }

  const path = (name) => `/projections/${encodeURIComponent(name)}`;
  const time = (epoch) => (epoch ? new Date(epoch * 1000).toISOString().replace("T", " ") : "");
  const fixed = (value, digits) => (typeof value === "number" ? value.toFixed(digits) : "");

  function say(text, failed) {
    const message = document.getElementById("message");
    message.textContent = text;
    message.className = failed ? "message failed" : "message";
  }

  function loggedOut() {
    window.location.assign(base); // the server answers with the login form
  }

  async function get(route) {
    const response = await fetch(base + route, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "application/json" },
    });
    if (response.status === 401) {
      loggedOut();
      throw new Error("logged out");
    }
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || `${route}: HTTP ${response.status}`);
    return body;
  }

  async function act(name, action, body) {
    say(`${action} ${name}: asked…`);
    let response;
    let answer = {};
    try {
      response = await fetch(base + path(name) + "/" + action, {
        method: "POST",
        credentials: "same-origin",
        headers: HEADERS,
        body: JSON.stringify(body || {}),
      });
      answer = await response.json().catch(() => ({}));
    } catch (error) {
      say(`${action} ${name}: ${error}`, true);
      return;
    }
    if (response.status === 401) return loggedOut();
    const outcome = { 200: "done", 202: "pending" }[response.status] || "failed";
    say(`${action} ${name}: ${outcome}: ${answer.result || answer.error || ""}`, outcome === "failed");
    refresh(false);
  }

  // -- projections: one row each, kept (its buttons stay put while its figures change) ------

  function projectionRow(name) {
    const cells = {};
    const cell = (field) => (cells[field] = el("td", { "data-field": field }));
    const button = (action, label, body) =>
      el("button", { type: "button", "data-action": action, onclick: () => act(name, action, body()) }, label);
    const buttons = {
      pause: button("pause", "Pause", () => ({})),
      resume: button("resume", "Resume", () => ({})),
      restart: button("restart", "Restart", () => ({})),
      retry: button("retry", "Retry all", () => ({})),
    };
    const tr = el(
      "tr",
      { "data-projection": name },
      el("th", { scope: "row" }, name),
      ...["state", "position", "head", "lag_events", "lag_seconds", "events_per_second",
        "parked", "error"].map(cell),
      el("td", { class: "buttons" }, ...Object.values(buttons)),
    );
    return { tr, cells, buttons };
  }

  function cause(error) {
    if (!error) return "";
    const where = error.event_type
      ? ` (position ${error.position}, ${error.event_type}, stream ${error.stream_id})`
      : "";
    return error.message + where;
  }

  function renderProjections(projections) {
    const body = document.querySelector("#projections tbody");
    const names = new Set(projections.map((p) => p.name));
    for (const [name, row] of rows) {
      if (!names.has(name)) {
        row.tr.remove();
        rows.delete(name);
      }
    }
    for (const p of projections) {
      if (!rows.has(p.name)) {
        rows.set(p.name, projectionRow(p.name));
        body.append(rows.get(p.name).tr);
      }
      const { tr, cells, buttons } = rows.get(p.name);
      const text = {
        state: p.state,
        position: p.position,
        head: p.head,
        lag_events: p.lag_events,
        lag_seconds: fixed(p.lag_seconds, 1),
        events_per_second: fixed(p.events_per_second, 1),
        parked: p.on_failure === "park" ? p.parked : "n/a",
        error: cause(p.error),
      };
      for (const [field, value] of Object.entries(text)) {
        if (cells[field].textContent !== String(value)) cells[field].textContent = String(value);
      }
      tr.className = `state-${p.state}`;
      buttons.pause.disabled = p.state === "paused";
      buttons.resume.disabled = p.state !== "paused";
      buttons.restart.disabled = p.state !== "error";
      buttons.retry.disabled = !(p.parked > 0);
    }
  }

  // -- parked events and actions: re-rendered when they change --------------------------------

  function askSkip(name, event) {
    const dialog = document.getElementById("skip-dialog");
    const reason = document.getElementById("skip-reason");
    document.getElementById("skip-position").textContent = String(event.position);
    document.getElementById("skip-stream").textContent = event.stream_id;
    reason.value = "";
    dialog.onclose = () => {
      if (dialog.returnValue === "skip" && reason.value.trim()) {
        act(name, "skip", { reason: reason.value, position: event.position, stream_id: event.stream_id });
      }
    };
    dialog.returnValue = "";
    dialog.showModal();
  }

  function renderParked(parked) {
    const section = document.getElementById("parked");
    const tables = Object.entries(parked).map(([name, events]) =>
      el(
        "div",
        { class: "parked", "data-projection": name },
        el("h2", {}, `Parked events of ${name}`),
        el(
          "table",
          {},
          el("thead", {}, el("tr", {}, ...["Position", "Stream", "Event type", "Attempts",
            "Parked at", "Error", "Actions"].map((h) => el("th", {}, h)))),
          el("tbody", {}, ...events.map((event) =>
            el(
              "tr",
              { "data-position": event.position, "data-stream": event.stream_id },
              el("td", {}, event.position),
              el("td", { "data-field": "stream_id" }, event.stream_id),
              el("td", {}, event.event_type),
              el("td", {}, event.attempts),
              el("td", {}, time(event.parked_at)),
              el("td", { "data-field": "error", class: "error" }, event.error),
              el(
                "td",
                { class: "buttons" },
                el("button", {
                  type: "button",
                  "data-action": "retry",
                  title: "Apply this stream's parked events again, in log order",
                  onclick: () => act(name, "retry", { stream_id: event.stream_id }),
                }, "Retry"),
                el("button", {
                  type: "button",
                  "data-action": "skip",
                  title: "Never apply this event",
                  onclick: () => askSkip(name, event),
                }, "Skip"),
              ),
            ))),
        ),
      ));
    section.replaceChildren(...tables);
  }

  function renderActions(actions) {
    document.querySelector("#actions tbody").replaceChildren(...actions.map((a) =>
      el(
        "tr",
        { "data-action-id": a.id, class: `action-${a.state}` },
        el("td", {}, time(a.requested_at)),
        el("td", {}, a.projection),
        el("td", {}, a.action),
        el("td", {}, Object.keys(a.args).length ? JSON.stringify(a.args) : ""),
        el("td", {}, a.requested_by),
        el("td", {}, a.reason),
        el("td", { "data-field": "state" }, a.state),
        el("td", {}, a.result || ""),
      )));
  }

  // -- relays: what each one last reported, shown once there is one ---------------------------

  function renderRelays(relays) {
    const cell = (field, value) => el("td", { "data-field": field }, value ?? "");
    document.querySelector("#relays tbody").replaceChildren(...relays.map((r) =>
      el(
        "tr",
        { "data-relay": r.stream, class: `state-${r.state}` },
        el("th", { scope: "row" }, r.stream),
        cell("state", r.state),
        cell("position", r.position),
        cell("head", r.head),
        cell("lag_events", r.lag_events),
        cell("lag_seconds", fixed(r.lag_seconds, 1)),
        cell("updated_at", time(r.updated_at)),
        cell("holder", r.holder),
      )));
    document.getElementById("relays").hidden = relays.length === 0;
  }

  function render(key, data, how) {
    const json = JSON.stringify(data);
    if (rendered[key] !== json) {
      rendered[key] = json;
      how(data);
    }
  }

  // -- polling ----------------------------------------------------------------------------------

  let timer = null;

  async function refresh(again) {
    const connection = document.getElementById("connection");
    try {
      const [status, history, relays] = await Promise.all([
        get("/projections"),
        get("/actions?limit=10"),
        get("/relays"),
      ]);
      const parked = {};
      await Promise.all(status.projections.filter((p) => p.parked > 0).map(async (p) => {
        parked[p.name] = (await get(`${path(p.name)}/parked?limit=100`)).parked;
      }));
      renderProjections(status.projections);
      render("parked", parked, renderParked);
      render("actions", history.actions, renderActions);
      render("relays", relays.relays, renderRelays);
      connection.textContent = `live, updated ${new Date().toLocaleTimeString()}`;
      connection.className = "connection";
    } catch (error) {
      connection.textContent = `not updated: ${error.message}`;
      connection.className = "connection failed";
    }
    if (again) {
      clearTimeout(timer);
      timer = setTimeout(() => refresh(true), POLL_MS);
    }
  }

  refresh(true);
})();
