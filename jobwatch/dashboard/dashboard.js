// The jobwatch dashboard: a table of jobs fed by GET /events (Server-Sent Events).
//
// Everything the API supplied (job ids, error texts, payloads) is put into the page with
// textContent or as attribute values, never parsed as HTML.
"use strict";

(() => {
  const TERMINAL = new Set(["completed", "failed", "cancelled"]);
  const MAX_ROWS = 500;

  const jobs = new Map(); // job id -> job (see newJob)
  const state = {
    lastId: null, filter: "all", search: "", selected: null, stats: null, deadLetters: -1,
    source: null, retryDelay: 1000, dirty: false, order: [], maxJobs: null,
  };

  const $ = (selector) => document.querySelector(selector);
  const tbody = $("#jobs tbody");

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // -- the model ------------------------------------------------------------------------------

  function newJob(id, source, seenAt) {
    const job = {
      id, source, seenAt, status: null, kind: null, completed: null, total: null, error: null,
      attempt: null, pageErrors: 0, events: 0, keys: new Set(), row: null,
    };
    jobs.set(id, job);
    return job;
  }

  function applyEvent(event) {
    if (event.job_id === null) {
      showNotice(event);
      return;
    }
    let job = jobs.get(event.job_id);
    if (!job) {
      job = newJob(event.job_id, event.source, Date.now());
      trim();
    }
    if (job.keys.has(event.key)) return; // the same event again (replayed after a restart)
    job.keys.add(event.key);
    if (event.status !== null) job.status = event.status;
    else if (TERMINAL.has(event.kind)) job.status = event.kind;
    if (!TERMINAL.has(job.status)) job.error = null;
    if (event.completed !== null) job.completed = event.completed;
    if (event.total !== null) job.total = event.total;
    if (event.attempt !== null) job.attempt = event.attempt;
    if (event.kind === "failed") job.error = event.error || "failed";
    if (event.kind === "page_failed") job.pageErrors += 1;
    job.kind = event.kind;
    job.events += 1;
    changed(job);
  }

  function applySnapshot(snapshot) {
    const now = Date.now();
    if (Number.isInteger(snapshot.max_jobs)) state.maxJobs = snapshot.max_jobs;
    for (const row of snapshot.jobs) {
      let job = jobs.get(row.job_id);
      if (!job) job = newJob(row.job_id, row.source, now - row.age * 1000);
      const sameRun = job.status === row.status || !TERMINAL.has(row.status);
      for (const [field, name] of [["status", "status"], ["total", "total"],
                                   ["attempt", "attempt"], ["kind", "kind"]]) {
        if (row[name] !== null) job[field] = row[name];
      }
      if (row.completed !== null &&
          (job.completed === null || row.completed >= job.completed || !sameRun)) {
        job.completed = row.completed;
      }
      job.error = row.error;
      job.pageErrors = Math.max(job.pageErrors, row.page_errors);
      job.events = Math.max(job.events, row.events);
      changed(job);
    }
    trim();
    if (snapshot.notice) showNotice(snapshot.notice);
  }

  // The page keeps as many jobs as the dashboard's table does, and lets go of the same ones:
  // the oldest finished job (among the hundred seen first), else the oldest. A page left
  // open does not grow with every job it ever saw.
  function trim() {
    if (state.maxJobs === null) return;
    while (jobs.size > state.maxJobs) {
      let victim = null;
      let looked = 0;
      for (const job of jobs.values()) {
        if (victim === null) victim = job;
        if (TERMINAL.has(job.status)) {
          victim = job;
          break;
        }
        looked += 1;
        if (looked >= 100) break;
      }
      jobs.delete(victim.id);
      scheduleRender();
    }
  }

  function changed(job) {
    job.dirty = true;
    scheduleRender();
    if (state.selected === job.id) scheduleTimeline(250);
  }

  // -- the stream -----------------------------------------------------------------------------

  function connect() {
    let url = "events?stats=1";
    if (state.lastId) url += "&last_event_id=" + encodeURIComponent(state.lastId);
    const source = new EventSource(url);
    state.source = source;
    source.onopen = () => {
      state.retryDelay = 1000;
      setConnection("live", "live");
    };
    source.onmessage = (message) => {
      state.lastId = message.lastEventId || state.lastId;
      applyEvent(JSON.parse(message.data));
    };
    source.addEventListener("snapshot", (message) => {
      state.lastId = message.lastEventId || state.lastId;
      applySnapshot(JSON.parse(message.data));
    });
    source.addEventListener("stats", (message) => showStats(JSON.parse(message.data)));
    source.onerror = () => {
      if (source.readyState !== EventSource.CLOSED) {
        setConnection("wait", "reconnecting…");
        return;
      }
      // The browser gave up on this stream (an error status): find out why, then try again.
      source.close();
      fetch("jobs", { cache: "no-store" }).then((response) => {
        if (response.status === 401) {
          setConnection("down", "log in again", "./");
          return;
        }
        reconnectLater();
      }, reconnectLater);
    };
  }

  function reconnectLater() {
    setConnection("wait", "reconnecting…");
    setTimeout(connect, state.retryDelay);
    state.retryDelay = Math.min(state.retryDelay * 2, 15000);
  }

  function setConnection(kind, text, link) {
    const pill = $("#connection");
    pill.className = "pill " + kind;
    pill.replaceChildren();
    if (link) {
      const a = el("a", null, text);
      a.href = link;
      pill.append(a);
    } else {
      pill.textContent = text;
    }
    pill.dataset.state = kind;
  }

  function showNotice(event) {
    if (event.kind !== "credit_low") return;
    const data = event.data || {};
    const notice = $("#notice");
    const balance = data.balance !== undefined ? ": " + data.balance + " left" : "";
    notice.textContent = "Credit low" + balance;
    notice.hidden = false;
  }

  // -- statistics -------------------------------------------------------------------------

  function showStats(stats) {
    state.stats = stats;
    for (const node of document.querySelectorAll("[data-stat]")) {
      let value = stats;
      for (const part of node.dataset.stat.split(".")) value = value ? value[part] : undefined;
      node.textContent = value === undefined ? "–" : Number(value).toLocaleString();
    }
    showStopped(stats.stopped || {});
    const dead = stats.dead_letters || 0;
    document.querySelector('[data-stat="dead_letters"]').parentElement
      .classList.toggle("alert", dead > 0);
    if (dead !== state.deadLetters) {
      state.deadLetters = dead;
      loadDeadLetters();
    }
  }

  // A transport that stopped for good (a refused key, say): which, and why, as text.
  function showStopped(stopped) {
    const names = Object.keys(stopped).sort();
    const list = $("#stopped-list");
    list.replaceChildren();
    for (const name of names) {
      const item = el("li");
      item.append(el("code", null, name), document.createTextNode(" stopped: " + stopped[name]));
      list.append(item);
    }
    $("#stopped").hidden = names.length === 0;
  }

  async function loadDeadLetters() {
    let answer;
    try {
      const response = await fetch("dead-letters", { cache: "no-store" });
      if (!response.ok) return;
      answer = await response.json();
    } catch {
      return;
    }
    const note = $("#dead-note");
    const table = $("#dead");
    const body = table.querySelector("tbody");
    body.replaceChildren();
    const replay = answer.replay ? "" :
      " Replay: the " + answer.store + " store does not offer it; the events stay in the store.";
    if (!answer.listed) {
      note.textContent = (answer.counted || 0) + " dead letter(s) in this process. " +
        (answer.reason || "") + " (each one is in the log)." + replay;
      table.hidden = true;
      return;
    }
    if (!answer.entries.length) {
      note.textContent = "None: every callback has handled every event it was given.";
      table.hidden = true;
      return;
    }
    note.textContent = answer.total + " kept by the " + answer.store + " store, newest first." +
      replay;
    for (const entry of answer.entries) {
      const tr = el("tr");
      const action = el("td");
      if (answer.replay) action.append(replayButton(entry.event.key));
      tr.append(el("td", "mono", entry.event.job_id ?? "workspace"),
                el("td", "mono", entry.event.kind + " " + entry.event.key),
                el("td", "mono", entry.subscriber), el("td", "err", entry.error), action);
      body.append(tr);
    }
    table.hidden = false;
  }

  // A dead letter's event, handed to the callbacks again (every matching one: they should be
  // idempotent by the event's key). The header marks the page's own request.
  function replayButton(key) {
    const button = el("button", "replay", "Replay");
    button.type = "button";
    button.title = "Hand this event to the callbacks again";
    button.addEventListener("click", async () => {
      button.disabled = true;
      button.textContent = "Replaying…";
      let message;
      try {
        const response = await fetch("dead-letters/replay", {
          method: "POST",
          cache: "no-store",
          headers: { "content-type": "application/json", "x-jobwatch-dashboard": "replay" },
          body: JSON.stringify({ key }),
        });
        const answer = await response.json().catch(() => ({}));
        message = response.ok ? null : (answer.error || "the replay failed");
      } catch {
        message = "the dashboard did not answer";
      }
      if (message === null) {
        loadDeadLetters();
      } else {
        button.disabled = false;
        button.textContent = "Replay";
        button.title = message;
        $("#dead-note").textContent = "Replay of " + key + ": " + message + ".";
      }
    });
    return button;
  }

  // -- the table ------------------------------------------------------------------------------

  function scheduleRender() {
    if (state.dirty) return;
    state.dirty = true;
    requestAnimationFrame(render);
  }

  function matches(job) {
    if (state.search && !job.id.toLowerCase().includes(state.search)) return false;
    switch (state.filter) {
      case "all": return true;
      case "active": return !TERMINAL.has(job.status);
      default: return job.status === state.filter;
    }
  }

  function render() {
    state.dirty = false;
    const counts = { all: 0, active: 0, completed: 0, failed: 0, cancelled: 0 };
    for (const job of jobs.values()) {
      counts.all += 1;
      if (TERMINAL.has(job.status)) counts[job.status] += 1;
      else counts.active += 1;
    }
    for (const button of document.querySelectorAll("[data-filter]")) {
      button.querySelector(".count").textContent = counts[button.dataset.filter];
    }
    $("#stat-jobs").textContent = counts.all.toLocaleString();

    const visible = [...jobs.values()].filter(matches).sort((a, b) => b.seenAt - a.seenAt);
    const shown = visible.slice(0, MAX_ROWS);
    const now = Date.now();
    for (const job of shown) {
      if (!job.row) job.row = buildRow(job);
      if (job.dirty || !job.row.filled) updateRow(job);
      job.dirty = false;
      updateAge(job, now);
    }
    const order = shown.map((job) => job.id);
    if (order.length !== state.order.length || order.some((id, i) => id !== state.order[i])) {
      tbody.replaceChildren(...shown.map((job) => job.row.tr));
      state.order = order;
    }
    $("#empty").hidden = jobs.size > 0;
    const more = $("#more");
    more.hidden = visible.length <= MAX_ROWS;
    more.textContent = "Showing the newest " + MAX_ROWS + " of " + visible.length +
      " jobs; filter or search to find others.";
  }

  function buildRow(job) {
    const tr = el("tr");
    tr.dataset.jobId = job.id;
    const cells = {
      job: el("td", "job", job.id),
      status: el("td", "status"),
      progress: el("td", "progress-cell"),
      source: el("td", "source"),
      age: el("td", "age"),
      reason: el("td", "reason"),
    };
    const badge = el("span", "badge");
    cells.status.append(badge);
    const wrap = el("div", "progress");
    const bar = el("div", "bar");
    const fill = el("div", "fill");
    bar.append(fill);
    const text = el("span", "text");
    wrap.append(bar, text);
    cells.progress.append(wrap);
    cells.job.title = job.id;
    tr.append(cells.job, cells.status, cells.progress, cells.source, cells.age, cells.reason);
    tr.addEventListener("click", () => select(job.id));
    return { tr, cells, badge, bar, fill, text };
  }

  function updateRow(job) {
    const row = job.row;
    const status = job.status || job.kind || "unknown";
    row.badge.textContent = status;
    row.badge.className = "badge " + status;
    row.tr.dataset.status = status;
    const known = job.total !== null && job.total > 0 && job.completed !== null;
    let share = known ? Math.min(1, job.completed / job.total) : 0;
    if (job.status === "completed") share = 1;
    row.bar.classList.toggle("unknown", !known && !TERMINAL.has(job.status));
    row.fill.className = "fill " + (TERMINAL.has(job.status) ? job.status : "");
    row.fill.style.width = (share * 100).toFixed(1) + "%";
    row.bar.setAttribute("role", "progressbar");
    row.bar.setAttribute("aria-valuenow", String(Math.round(share * 100)));
    row.text.textContent = job.completed === null ? "–" :
      job.total === null ? job.completed + " done" : job.completed + " / " + job.total;
    row.cells.source.textContent = job.source;
    const reason = job.error ||
      (job.pageErrors ? job.pageErrors + " page" + (job.pageErrors > 1 ? "s" : "") + " failed" : "");
    row.cells.reason.textContent = reason;
    row.cells.reason.title = reason;
    row.tr.classList.toggle("selected", state.selected === job.id);
    row.filled = true;
  }

  function updateAge(job, now) {
    job.row.cells.age.textContent = formatAge((now - job.seenAt) / 1000);
  }

  function formatAge(seconds) {
    if (seconds < 60) return Math.max(0, Math.floor(seconds)) + " s";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min";
    if (seconds < 86400) return (seconds / 3600).toFixed(1) + " h";
    return (seconds / 86400).toFixed(1) + " d";
  }

  // -- a job's timeline ---------------------------------------------------------------------

  let timelineTimer = null;

  function select(id) {
    const previous = jobs.get(state.selected);
    state.selected = id;
    if (previous && previous.row) previous.row.tr.classList.remove("selected");
    const job = jobs.get(id);
    if (job && job.row) job.row.tr.classList.add("selected");
    $("#detail").hidden = false;
    $("#detail-title").textContent = id;
    $("#timeline").replaceChildren();
    $("#detail-facts").replaceChildren();
    scheduleTimeline(0);
  }

  function scheduleTimeline(delay) {
    if (timelineTimer !== null) return;
    timelineTimer = setTimeout(loadTimeline, delay);
  }

  async function loadTimeline() {
    timelineTimer = null;
    const id = state.selected;
    if (id === null) return;
    let answer;
    try {
      const response = await fetch("job?id=" + encodeURIComponent(id), { cache: "no-store" });
      if (!response.ok) return;
      answer = await response.json();
    } catch {
      return;
    }
    if (state.selected !== id) return;
    renderFacts(answer.job);
    const list = $("#timeline");
    list.replaceChildren(...answer.timeline.map(timelineItem));
  }

  function renderFacts(job) {
    const facts = $("#detail-facts");
    facts.replaceChildren();
    const rows = [
      ["Status", job.status], ["Progress", job.completed === null ? "–" :
        job.completed + (job.total === null ? "" : " / " + job.total)],
      ["First via", job.source], ["Events", job.events], ["Dropped", job.dropped],
    ];
    if (job.attempt !== null) rows.push(["Attempt", job.attempt]);
    if (job.error) rows.push(["Failure", job.error]);
    for (const [name, value] of rows) facts.append(el("dt", null, name), el("dd", null, value));
  }

  function timelineItem(entry) {
    const li = el("li", entry.dropped ? "dropped" : "");
    li.append(el("span", "at", "+" + entry.t.toFixed(1) + " s"));
    const what = el("span", "what");
    what.append(el("span", "kind", entry.kind));
    const detail = [];
    if (entry.completed !== null) {
      detail.push(entry.completed + (entry.total === null ? "" : "/" + entry.total));
    }
    if (entry.status !== null && entry.status !== entry.kind) detail.push(entry.status);
    if (detail.length) what.append(" " + detail.join(" · "));
    if (entry.url) what.append(" ", el("span", "url", entry.url));
    if (entry.error) what.append(" ", el("span", "err", entry.error));
    let via = " via " + entry.source;
    if (entry.dropped) {
      const again = entry.count > 1 ? " ×" + entry.count + ", last at +" + entry.last.toFixed(1) + " s" : "";
      via = " — dropped (" + entry.dropped + ")" + via + again;
    }
    what.append(el("span", "via", via));
    li.title = entry.key;
    li.append(what);
    return li;
  }

  // -- controls ------------------------------------------------------------------------------

  for (const button of document.querySelectorAll("[data-filter]")) {
    button.addEventListener("click", () => {
      state.filter = button.dataset.filter;
      for (const other of document.querySelectorAll("[data-filter]")) {
        other.setAttribute("aria-pressed", String(other === button));
      }
      scheduleRender();
    });
  }
  $("#search").addEventListener("input", (event) => {
    state.search = event.target.value.trim().toLowerCase();
    scheduleRender();
  });
  $("#detail-close").addEventListener("click", () => {
    const job = jobs.get(state.selected);
    if (job && job.row) job.row.tr.classList.remove("selected");
    state.selected = null;
    $("#detail").hidden = true;
  });

  let ticks = 0;
  setInterval(() => {
    const now = Date.now();
    for (const job of jobs.values()) if (job.row) updateAge(job, now);
    $("#clock").textContent = new Date(now).toLocaleTimeString();
    // The timeline also shows drops, which no event announces: look again now and then.
    ticks += 1;
    if (state.selected !== null && ticks % 3 === 0) scheduleTimeline(0);
  }, 1000);

  connect();
})();
