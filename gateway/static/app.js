// Sluice web client: accounts, live clipboard, streamed chat, operator view.
// Plain modules, no build step. Everything shown to the user goes through
// textContent, never innerHTML, so item contents cannot inject markup.

const $ = (sel) => document.querySelector(sel);
const store = {
  get session() { try { return JSON.parse(localStorage.getItem("sluice.session")); } catch { return null; } },
  set session(v) { v ? localStorage.setItem("sluice.session", JSON.stringify(v)) : localStorage.removeItem("sluice.session"); },
};

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function notice(text) { $("#notice").textContent = text || ""; }

function when(rfc3339) {
  if (!rfc3339) return "—";
  const d = new Date(rfc3339);
  return isNaN(d) ? rfc3339 : d.toLocaleString();
}

// ---- HTTP ------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body, extraHeaders = {}) {
  const headers = { ...extraHeaders };
  const s = store.session;
  if (s) headers["Authorization"] = "Bearer " + s.token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 204) return null;
  let data = null;
  try { data = await res.json(); } catch { /* empty or not JSON */ }
  if (!res.ok) {
    const err = data && data.error ? data.error : { code: "http_" + res.status, message: res.statusText };
    if (res.status === 401 && s) logout("Your session ended (device revoked or token expired).");
    throw new ApiError(res.status, err.code, err.message);
  }
  return data;
}

// ---- views -----------------------------------------------------------------
const views = ["login", "clipboard", "chat", "devices", "operator"];
function show(view) {
  if (view !== "login" && view !== "operator" && !store.session) view = "login";
  for (const v of views) $("#view-" + v).hidden = v !== view;
  for (const b of document.querySelectorAll("nav button")) {
    if (b.dataset.view === view) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
  if (view === "devices") loadDevices().catch((e) => notice(e.message));
  if (view === "chat") loadConversations().catch((e) => notice(e.message));
  operator.active = view === "operator";
  if (operator.active) operator.refresh();
  location.hash = view;
}

function refreshHeader() {
  const s = store.session;
  $("#who").textContent = s ? `${s.username} · ${s.device_name ?? "device " + s.device_id}` : "not signed in";
  $("#logout").hidden = !s;
}

// ---- accounts --------------------------------------------------------------
function defaultDeviceName() {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua) ? "Firefox" : /Edg\//.test(ua) ? "Edge" : /Chrome\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "Browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Mac OS/.test(ua) ? "macOS" : /Windows/.test(ua) ? "Windows" : /Linux/.test(ua) ? "Linux" : "";
  return os ? `${browser} on ${os}` : browser;
}

async function login(signup) {
  const username = $("#login-username").value.trim();
  const password = $("#login-password").value;
  const device_name = $("#login-device").value.trim() || defaultDeviceName();
  notice("");
  try {
    if (signup) await api("POST", "/v1/users", { username, password });
    const s = await api("POST", "/v1/sessions", { username, password, device_name });
    store.session = { ...s, username, device_name };
    $("#login-password").value = "";
    refreshHeader();
    clipboard.start();
    show("clipboard");
  } catch (e) {
    notice(e.message);
  }
}

// Log out ends the session on the server too: the device (and so its token) is
// revoked, as a login created it. A session the server already ended, or a server
// out of reach, is still forgotten here (said in the notice). Uses fetch directly so
// a 401 cannot loop back into logout.
async function logout(reason, revoke = false) {
  const s = store.session;
  clipboard.stop();
  if (revoke && s) {
    try {
      const res = await fetch(`/v1/devices/${encodeURIComponent(s.device_id)}`, {
        method: "DELETE", headers: { "Authorization": "Bearer " + s.token },
      });
      if (!res.ok && res.status !== 401 && res.status !== 404) reason = `Logged out here, but the server refused to end the session (${res.status}).`;
    } catch {
      reason = "Logged out here, but the server could not be reached to end the session.";
    }
  }
  store.session = null;
  refreshHeader();
  show("login");
  notice(reason);
}

// ---- devices ---------------------------------------------------------------
// device id -> name, so clipboard items say which device they came from
const deviceNames = new Map();

async function loadDevices() {
  const { devices } = await api("GET", "/v1/devices");
  for (const d of devices) deviceNames.set(String(d.id), d.name);
  const body = $("#dev-list");
  body.replaceChildren();
  for (const d of devices) {
    const mine = String(d.id) === String(store.session.device_id);
    body.append(el("tr", {},
      el("td", {}, d.name + (mine ? " (this device)" : "")),
      el("td", {}, d.is_active ? "yes" : "no"),
      el("td", {}, when(d.last_seen_at)),
      el("td", {}, when(d.created_at)),
      el("td", {}, el("button", { type: "button", "aria-label": `Revoke ${d.name}`, onclick: async () => {
        try {
          await api("DELETE", `/v1/devices/${d.id}`);
          if (mine) logout("This device was revoked."); else loadDevices();
        } catch (e) { notice(e.message); }
      } }, "Revoke"))));
  }
}

// ---- clipboard: live over /v1/sync/notify with replay after reconnect ------
const clipboard = {
  // seq: the highest seq this page has (null until the first hello); reconnects ask
  // for after=seq so the server replays what was missed while away.
  ws: null, seq: null, items: new Map(), gone: new Set(), backoff: 500, timer: null, stopped: true,

  setState(text, cls) { const s = $("#sync-state"); s.textContent = text; s.className = "state " + cls; },

  start() {
    this.stopped = false; this.seq = null; this.backoff = 500; this.items.clear(); this.gone.clear(); this.render();
    this.connect();
  },

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) { this.ws.onclose = null; this.ws.close(1000); this.ws = null; }
    this.setState("offline", "");
  },

  connect() {
    const s = store.session;
    if (!s || this.stopped) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const after = this.seq === null ? "" : `&after=${this.seq}`;
    const url = `${proto}//${location.host}/v1/sync/notify?token=${encodeURIComponent(s.token)}${after}`;
    this.setState("connecting", "warn");
    const ws = new WebSocket(url);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => { opened = true; this.backoff = 500; this.setState("live", "ok"); };
    ws.onmessage = (ev) => { try { this.onMessage(JSON.parse(ev.data)); } catch (e) { notice(e.message); } };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (ev.code === 4001) { logout("This device was revoked."); return; }
      if (this.stopped) return;
      // refused before opening: maybe the session ended (401 logs out in api())
      if (!opened) api("GET", "/v1/devices").catch(() => {});
      const wait = Math.min(this.backoff, 15000) * (0.75 + Math.random() / 2);
      this.backoff *= 2;
      this.setState(`reconnecting in ${Math.ceil(wait / 1000)} s`, "bad");
      this.timer = setTimeout(() => this.connect(), wait);
    };
  },

  onMessage(msg) {
    if (msg.type === "hello") {
      // First connect: the newest items come over HTTP (read after the hello, so
      // nothing falls between them). Later connects are replayed by after=seq, and
      // the same HTTP read drops what was deleted while away (replay has no deletes).
      if (this.seq === null) this.seq = 0;
      if (msg.seq > 0) this.loadRecent(msg.seq);
      loadDevices().then(() => this.render(), () => {});
    } else if (msg.type === "clipboard.item") {
      this.add(msg.item);
    } else if (msg.type === "clipboard.deleted") {
      this.gone.add(String(msg.id));
      this.items.delete(String(msg.id)); this.render();
    }
  },

  // The newest `keep` items up to seq, the hello's (a seq is never reused, so these
  // are at most `keep` items). They are all the server holds in that range, so any
  // other item of the range here was deleted. The seq then moves to the hello's even
  // when those were deleted.
  async loadRecent(seq, keep = 200) {
    try {
      const from = Math.max(0, seq - keep);
      // pages are cut by bytes too: only more === false ends the range
      const got = [];
      for (let after = from, more = true; more;) {
        const page = await api("GET", `/v1/clipboard?after=${after}&limit=${keep}`);
        got.push(...page.items);
        more = page.more && page.next_after < seq;
        after = page.next_after;
      }
      const page = { items: got };
      const held = new Set(page.items.map((it) => String(it.id)));
      for (const [id, it] of this.items) {
        if (Number(it.seq) > from && Number(it.seq) <= seq && !held.has(id)) this.items.delete(id);
      }
      for (const it of page.items) this.add(it, false);
      this.seq = Math.max(this.seq ?? 0, seq);
      this.render();
    } catch (e) { notice(e.message); }
  },

  add(item, render = true) {
    if (this.gone.has(String(item.id))) return;  // a delete overtook this read
    this.items.set(String(item.id), item);
    this.seq = Math.max(this.seq ?? 0, Number(item.seq));
    if (render) this.render();
  },

  render() {
    const list = $("#clip-list");
    const sorted = [...this.items.values()].sort((a, b) => Number(b.seq) - Number(a.seq));
    list.replaceChildren(...sorted.map((it) => el("li", { "data-seq": it.seq },
      el("pre", {}, it.content),
      el("div", { class: "meta" }, `#${it.seq} · ${when(it.created_at)} · from ${deviceNames.get(String(it.source_device_id)) ?? "device " + it.source_device_id}`),
      el("div", { class: "row" },
        el("button", { type: "button", onclick: (ev) => {
          const b = ev.currentTarget;
          if (!navigator.clipboard) { notice("This browser has no clipboard access here (it needs https or localhost)."); return; }
          navigator.clipboard.writeText(it.content).then(() => { b.textContent = "Copied"; },
            () => notice("The browser did not allow copying."));
        } }, "Copy"),
        el("button", { type: "button", onclick: async () => {
          try { await api("DELETE", `/v1/clipboard/${it.id}`); this.gone.add(String(it.id)); this.items.delete(String(it.id)); this.render(); }
          catch (e) { notice(e.message); }
        } }, "Delete")))));
  },

  async share(content) {
    const key = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
    const item = await api("POST", "/v1/clipboard", { content, content_type: "text/plain" }, { "Idempotency-Key": key });
    this.add(item);  // our own items are not echoed back over the socket
  },
};

// ---- chat: streamed answers over Server-Sent Events on a POST ---------------
const chat = { current: null, abort: null };

async function loadConversations() {
  const { conversations } = await api("GET", "/v1/chat/conversations");
  $("#conv-list").replaceChildren(...conversations.map((c) => el("li", {},
    el("button", { type: "button", "data-id": c.id, "aria-current": String(c.id) === String(chat.current) ? "true" : "false",
                   onclick: () => openConversation(c.id).catch((e) => notice(e.message)) }, c.title || `Conversation ${c.id}`))));
}

function messageNode(m) {
  const status = m.role === "assistant" && m.status !== "complete" ? ` (${m.status})` : "";
  return el("li", { class: m.role, "data-id": m.id, "data-status": m.status }, m.content + status);
}

async function openConversation(id) {
  chat.current = id;
  $("#msg-content").disabled = false;
  $("#msg-send").disabled = false;
  const messages = [];
  for (let after = 0, more = true; more;) {  // pages are cut by bytes: read to the end
    const page = await api("GET", `/v1/chat/conversations/${id}/messages?after=${after}`);
    messages.push(...page.messages);
    more = page.more;
    after = page.next_after;
  }
  if (chat.current !== id) return;  // another conversation was opened meanwhile
  $("#msg-list").replaceChildren(...messages.map(messageNode));
  loadConversations();
}

// Reads "event: x\ndata: y\n\n" blocks from a fetch body as they arrive.
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
      let event = "message", data = null;
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) {
          const part = line.slice(5).replace(/^ /, "");
          data = data === null ? part : data + "\n" + part;
        }
      }
      // a block without data (the gateway's ": keep-alive" comment) is no event
      if (data === null) continue;
      yield { event, data: JSON.parse(data) };
    }
  }
}

async function sendMessage(content) {
  const id = chat.current;
  chat.abort = new AbortController();
  $("#msg-send").disabled = true;
  $("#msg-stop").disabled = false;
  const list = $("#msg-list");
  let answer = null;
  try {
    const s = store.session;
    const res = await fetch(`/v1/chat/conversations/${id}/messages`, {
      method: "POST", signal: chat.abort.signal,
      headers: { "Authorization": "Bearer " + s.token, "Content-Type": "application/json", "Accept": "text/event-stream" },
      body: JSON.stringify({ content, stream: true }),
    });
    if (!res.ok) {
      const data = await res.json().catch(() => null);
      if (res.status === 401) logout("Your session ended (device revoked or token expired).");
      throw new ApiError(res.status, data?.error?.code, data?.error?.message || res.statusText);
    }
    if (!(res.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
      // a server without streaming answers with the whole reply at once
      const data = await res.json();
      list.append(messageNode(data.user_message), messageNode(data.assistant_message));
      return;
    }
    for await (const { event, data } of sseEvents(res.body)) {
      if (event === "message") {
        if (chat.current !== id) continue;  // another conversation is open now
        list.append(messageNode(data.user_message));
        answer = messageNode({ id: data.assistant_message_id, role: "assistant", content: "", status: "streaming" });
        answer.textContent = "";
        list.append(answer);
      } else if (event === "delta" && answer) {
        answer.textContent += data.text;
      } else if (event === "done") {
        answer?.replaceWith(messageNode(data.message));
      } else if (event === "error") {
        notice(data.error?.message || "the answer failed");
        if (answer) answer.dataset.status = "failed";
      }
    }
  } catch (e) {
    if (e.name === "AbortError") {
      if (answer) { answer.dataset.status = "cancelled"; answer.append(" (cancelled)"); }
    } else notice(e.message);
  } finally {
    chat.abort = null;
    $("#msg-send").disabled = false;
    $("#msg-stop").disabled = true;
  }
}

// ---- operator view -----------------------------------------------------------
const operator = {
  active: false, history: new Map(), keep: 150 /* 5 min at 2 s */,

  async refresh() {
    if (!this.active) return;
    let health = null, metrics = "";
    try {
      // with the gateway's ops_token set, the detail needs it (kept in this browser)
      const token = $("#op-token").value || localStorage.getItem("sluice.opsToken") || "";
      const headers = token ? { Authorization: `Bearer ${token}` } : {};
      const res = await fetch("/health", { headers });
      health = await res.json();
      const mres = await fetch("/metrics", { headers });
      $("#op-token-row").hidden = mres.status !== 401 && !token;
      metrics = mres.ok ? await mres.text() : "";
    } catch (e) { $("#op-status").textContent = "unreachable"; $("#op-status").className = "state bad"; }
    if (health) this.render(health, metrics);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), 2000);
  },

  // Unlabelled gateway gauges from the Prometheus text, by a word in their name.
  gauge(metrics, word) {
    for (const line of metrics.split("\n")) {
      const m = /^(sluice_gateway_[a-z_]+)\s+([0-9.e+-]+)$/.exec(line);
      if (m && m[1].includes(word)) return Number(m[2]);
    }
    return null;
  },

  render(h, metrics) {
    const st = $("#op-status");
    st.textContent = h.status; st.className = "state " + (h.status === "ok" ? "ok" : h.status === "degraded" ? "warn" : "bad");
    const gw = h.gateway || {};
    const sockets = gw.websockets ?? this.gauge(metrics, "websocket"), streams = gw.streams ?? this.gauge(metrics, "stream");
    const summary = this.card("Gateway", [["open WebSockets", sockets ?? "—"], ["active streams", streams ?? "—"],
                                          ["connections", gw.connections ?? "—"], ["pending", gw.pending ?? "—"]]);
    summary.dataset.gateway = "";
    $("#op-summary").replaceChildren(summary,
      this.card("Broker", [["uptime", h.broker?.uptime_s != null ? `${h.broker.uptime_s} s` : "—"]]));
    const pools = h.pools || [];
    $("#op-pools").replaceChildren(...pools.map((p) => {
      const name = String(p.worker ?? "worker");
      const cap = (p.pool_size || 0) + (p.max_overflow || 0);
      const hist = this.history.get(name) || [];
      hist.push(p.checked_out || 0);
      if (hist.length > this.keep) hist.shift();
      this.history.set(name, hist);
      const fields = ["pool_size", "max_overflow", "checked_out", "overflow", "idle", "invalid", "waiting", "reconnects", "errors"];
      const rows = fields.filter((f) => f in p).map((f) => [f, p[f]]);
      if ("latency_p99_ms" in p) rows.push(["latency p99", `${Number(p.latency_p99_ms).toFixed(1)} ms`]);
      if (p.db_up === false) rows.unshift(["database", "down"]);
      const card = this.card(name, rows);
      card.dataset.worker = name;
      if (p.db_up === false) card.classList.add("down");
      const used = cap ? (p.checked_out || 0) / cap : 0;
      const bar = el("div", { style: `width:${Math.round(used * 100)}%`, class: used > 0.9 ? "bad" : used > 0.6 ? "warn" : "" });
      card.append(el("div", { class: "gauge", role: "meter", "aria-label": `${name} connections in use`,
                              "aria-valuemin": 0, "aria-valuemax": cap, "aria-valuenow": p.checked_out || 0 }, bar),
                  this.spark(hist, Math.max(cap, 1), `${name} checked out over the last minutes`),
                  el("div", { class: "spark-label", "aria-hidden": "true" }, `checked out over the last ${hist.length * 2 < 120 ? hist.length * 2 + " s" : Math.round(hist.length / 30) + " min"} (of ${cap})`));
      return card;
    }));
    const services = h.services || {};
    $("#op-services").replaceChildren(...Object.entries(services).map(([name, s]) => el("tr", {},
      el("td", {}, name), el("td", {}, s.workers ?? "—"), el("td", {}, s.capacity ?? "—"),
      el("td", {}, s.in_flight ?? "—"), el("td", {}, s.queued ?? "—"))));
  },

  card(title, rows) {
    return el("div", { class: "card" }, el("h4", {}, title),
      el("dl", {}, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k }, v)])));
  },

  spark(values, max, label) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("class", "spark"); svg.setAttribute("viewBox", `0 0 ${this.keep} 30`);
    svg.setAttribute("preserveAspectRatio", "none"); svg.setAttribute("role", "img"); svg.setAttribute("aria-label", label);
    const pts = values.map((v, i) => `${i + this.keep - values.length},${30 - (v / max) * 28 - 1}`).join(" ");
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts); line.setAttribute("fill", "none");
    line.setAttribute("stroke", "#0b5fff"); line.setAttribute("stroke-width", "1.5");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
    return svg;
  },
};

// ---- wiring ------------------------------------------------------------------
$("#login-device").value = defaultDeviceName();
$("#login-form").addEventListener("submit", (e) => { e.preventDefault(); login(false); });
$("#signup-submit").addEventListener("click", () => { if ($("#login-form").reportValidity()) login(true); });
$("#logout").addEventListener("click", () => logout("", true));
for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => show(b.dataset.view));
$("#clip-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("#clip-content").value;
  if (!text) return;
  try { await clipboard.share(text); $("#clip-content").value = ""; notice(""); } catch (err) { notice(err.message); }
});
$("#conv-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  try {
    const title = $("#conv-title").value.trim();
    const c = await api("POST", "/v1/chat/conversations", title ? { title } : {});
    $("#conv-title").value = "";
    await openConversation(c.id);
  } catch (err) { notice(err.message); }
});
$("#msg-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("#msg-content").value.trim();
  if (!text || chat.current == null) return;
  $("#msg-content").value = "";
  sendMessage(text);
});
$("#msg-stop").addEventListener("click", () => chat.abort?.abort());
$("#op-token").addEventListener("change", (e) => localStorage.setItem("sluice.opsToken", e.target.value));
// Ctrl+Enter (Cmd+Enter) sends; Enter alone keeps adding lines
$("#msg-content").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("#msg-send").disabled) $("#msg-form").requestSubmit();
});

refreshHeader();
if (store.session) clipboard.start();
show(views.includes(location.hash.slice(1)) ? location.hash.slice(1) : (store.session ? "clipboard" : "login"));
