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
  $("#who").textContent = s ? `${s.username} · device ${s.device_id}` : "not signed in";
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
    store.session = { ...s, username };
    $("#login-password").value = "";
    refreshHeader();
    clipboard.start();
    show("clipboard");
  } catch (e) {
    notice(e.message);
  }
}

function logout(reason) {
  clipboard.stop();
  store.session = null;
  refreshHeader();
  show("login");
  if (reason) notice(reason);
}

// ---- devices ---------------------------------------------------------------
async function loadDevices() {
  const { devices } = await api("GET", "/v1/devices");
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
  ws: null, seq: 0, items: new Map(), backoff: 500, timer: null, stopped: true,

  setState(text, cls) { const s = $("#sync-state"); s.textContent = text; s.className = "state " + cls; },

  start() {
    this.stopped = false; this.seq = 0; this.items.clear(); this.render();
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
    const url = `${proto}//${location.host}/v1/sync/notify?token=${encodeURIComponent(s.token)}&after=${this.seq}`;
    this.setState("connecting", "warn");
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => { this.backoff = 500; this.setState("live", "ok"); };
    ws.onmessage = (ev) => this.onMessage(JSON.parse(ev.data));
    ws.onclose = (ev) => {
      this.ws = null;
      if (ev.code === 4001) { logout("This device was revoked."); return; }
      if (this.stopped) return;
      const wait = Math.min(this.backoff, 15000) * (0.75 + Math.random() / 2);
      this.backoff *= 2;
      this.setState(`reconnecting in ${Math.round(wait / 1000)} s`, "bad");
      this.timer = setTimeout(() => this.connect(), wait);
    };
  },

  onMessage(msg) {
    if (msg.type === "hello") {
      // First connect: load the recent history; later connects replay by after=seq.
      if (this.seq === 0 && msg.seq > 0) this.loadRecent();
    } else if (msg.type === "clipboard.item") {
      this.add(msg.item);
    } else if (msg.type === "clipboard.deleted") {
      this.items.delete(String(msg.id)); this.render();
    }
  },

  async loadRecent() {
    try {
      const page = await api("GET", `/v1/clipboard?after=0&limit=500`);
      for (const it of page.items) this.add(it, false);
      this.render();
    } catch (e) { notice(e.message); }
  },

  add(item, render = true) {
    this.items.set(String(item.id), item);
    this.seq = Math.max(this.seq, Number(item.seq));
    if (render) this.render();
  },

  render() {
    const list = $("#clip-list");
    const sorted = [...this.items.values()].sort((a, b) => Number(b.seq) - Number(a.seq));
    list.replaceChildren(...sorted.map((it) => el("li", { "data-seq": it.seq },
      el("pre", {}, it.content),
      el("div", { class: "meta" }, `#${it.seq} · ${when(it.created_at)} · from device ${it.source_device_id}`),
      el("div", { class: "row" },
        el("button", { type: "button", onclick: (ev) => {
          navigator.clipboard?.writeText(it.content).then(() => { ev.target.textContent = "Copied"; },
            () => notice("The browser did not allow copying."));
        } }, "Copy"),
        el("button", { type: "button", onclick: async () => {
          try { await api("DELETE", `/v1/clipboard/${it.id}`); this.items.delete(String(it.id)); this.render(); }
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
    el("button", { type: "button", "aria-current": String(c.id) === String(chat.current) ? "true" : "false",
                   onclick: () => openConversation(c.id) }, c.title || `Conversation ${c.id}`))));
}

function messageNode(m) {
  const status = m.role === "assistant" && m.status !== "complete" ? ` (${m.status})` : "";
  return el("li", { class: m.role, "data-id": m.id, "data-status": m.status }, m.content + status);
}

async function openConversation(id) {
  chat.current = id;
  $("#msg-content").disabled = false;
  $("#msg-send").disabled = false;
  const { messages } = await api("GET", `/v1/chat/conversations/${id}/messages`);
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
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      yield { event, data: data ? JSON.parse(data) : null };
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
      throw new ApiError(res.status, data?.error?.code, data?.error?.message || res.statusText);
    }
    for await (const { event, data } of sseEvents(res.body)) {
      if (event === "message") {
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
      const res = await fetch("/health");
      health = await res.json();
      metrics = await (await fetch("/metrics")).text();
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
    const sockets = this.gauge(metrics, "websocket"), streams = this.gauge(metrics, "stream");
    $("#op-summary").replaceChildren(
      this.card("Gateway", [["open WebSockets", sockets ?? "—"], ["active streams", streams ?? "—"]]),
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
      const card = this.card(name, fields.filter((f) => f in p).map((f) => [f, p[f]]));
      card.dataset.worker = name;
      const used = cap ? (p.checked_out || 0) / cap : 0;
      const bar = el("div", { style: `width:${Math.round(used * 100)}%`, class: used > 0.9 ? "bad" : used > 0.6 ? "warn" : "" });
      card.append(el("div", { class: "gauge", role: "meter", "aria-label": `${name} connections in use`,
                              "aria-valuemin": 0, "aria-valuemax": cap, "aria-valuenow": p.checked_out || 0 }, bar),
                  this.spark(hist, Math.max(cap, 1), `${name} checked out over the last minutes`));
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
$("#logout").addEventListener("click", () => logout());
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

refreshHeader();
if (store.session) clipboard.start();
show(views.includes(location.hash.slice(1)) ? location.hash.slice(1) : (store.session ? "clipboard" : "login"));
