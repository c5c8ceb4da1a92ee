// maas-lib's web page: plain JavaScript over the JSON API (docs/service.md).
//
// Security rules this file keeps (the server's Content-Security-Policy and Trusted Types
// enforce the first in the browser as well):
// - Every value from the API (host names, submitters, BMC error details, request fields)
//   is inserted as text: textContent / createTextNode / createElement. Never innerHTML,
//   outerHTML, insertAdjacentHTML or document.write.
// - The token lives in sessionStorage (this tab only) and travels only in the
//   "Authorization: Bearer" header of fetch() calls to this origin: never in a URL (the
//   progress stream is read with fetch, not EventSource, which cannot send headers),
//   never in a cookie (credentials: "omit"), never in localStorage. A cross-site page can
//   make the browser send cookies, but it cannot make it send this header: no CSRF surface.
// - Signing out, or any 401 from the API, forgets the token and shows the sign-in form.

const TOKEN_KEY = "maas-lib.token";
const API = "/api/v1";
const TERMINAL = new Set(["succeeded", "failed", "partial", "cancelled"]);
const ENDED_HOST = new Set(["succeeded", "failed", "dropped", "cancelled"]);
const LIST_REFRESH_MS = 3000;
const INFLIGHT_REFRESH_MS = 3000;
// Browsers allow six HTTP/1.1 connections per origin: the list follows at most this many
// requests through progress streams at once and reads the rest on its refresh.
const MAX_LIST_STREAMS = 3;

const $ = (id) => document.getElementById(id);

// -- the token -------------------------------------------------------------------------

const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

class AuthError extends Error {}

class ApiError extends Error {
  constructor(status, kind, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.kind = kind;
  }
}

// -- DOM helpers: text only --------------------------------------------------------------

/** An element with properties (className, id, href, value, ...) and children; strings
 * and numbers become text nodes, never markup. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (value !== undefined && value !== null) node[key] = value;
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function text(value) {
  return value === null || value === undefined ? "" : String(value);
}

function when(iso) {
  return iso ? String(iso).replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "";
}

function stateBadge(state) {
  return el("span", { className: `state state-${safeClass(state)}` }, text(state));
}

/** A CSS class suffix from a state name: letters and '-' only. */
function safeClass(value) {
  return text(value).toLowerCase().replace(/[^a-z-]/g, "");
}

function requestLink(id) {
  const n = Number(id);
  return Number.isInteger(n) ? el("a", { href: `#/requests/${n}` }, `#${n}`) : text(id);
}

function notice(message) {
  const box = $("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

// -- the API -------------------------------------------------------------------------------

function headers(extra = {}) {
  const h = { Accept: "application/json", ...extra };
  const t = token.get();
  if (t) h.Authorization = `Bearer ${t}`;
  return h;
}

const FETCH_OPTIONS = { credentials: "omit", cache: "no-store", redirect: "error" };

async function failure(res) {
  if (res.status === 401) {
    signOut("The server did not accept your token (401): sign in again.");
    return new AuthError("unauthenticated");
  }
  let kind = "";
  let detail = `HTTP ${res.status}`;
  try {
    const body = await res.json();
    kind = text(body.error);
    detail = text(body.detail) || detail;
  } catch {
    // not the API's JSON error shape: keep the status
  }
  return new ApiError(res.status, kind, detail);
}

async function api(path, { method = "GET", body, extraHeaders = {}, signal } = {}) {
  const init = { ...FETCH_OPTIONS, method, signal, headers: headers(extraHeaders) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const res = await fetch(API + path, init);
  if (!res.ok) throw await failure(res);
  return res.status === 204 ? null : res.json();
}

/** Follow a server-sent-events stream with fetch (EventSource cannot send the
 * Authorization header, and the token never goes in a URL): `onEvent(name, data)` for
 * each event, JSON-decoded. Resolves when the stream closes; true if it sent `end`. */
async function followStream(path, onEvent, signal) {
  const res = await fetch(API + path, {
    ...FETCH_OPTIONS,
    signal,
    headers: headers({ Accept: "text/event-stream" }),
  });
  if (!res.ok) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let ended = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    // One line ending; a '\r' at the very end may be half of a "\r\n" still to come.
    buffer = (buffer + value).replace(/\r\n/g, "\n").replace(/\r(?!$)/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const event = parseEvent(block);
      if (!event) continue;
      if (event.name === "end") ended = true;
      onEvent(event.name, event.data);
    }
  }
  return ended;
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") name = value;
    else if (field === "data") data.push(value);
  }
  if (!data.length && name === "message") return null;
  const raw = data.join("\n");
  try {
    return { name, data: raw ? JSON.parse(raw) : null };
  } catch {
    return { name, data: raw };
  }
}

/** Keep following a request's progress until its stream says `end` (reconnecting after a
 * dropped connection) or `signal` aborts. */
async function followProgress(id, onDoc, signal) {
  let delay = 500;
  let last = null; // the latest whole document: `end` carries only the id and state
  while (!signal.aborted) {
    try {
      const ended = await followStream(
        `/requests/${id}/progress`,
        (name, data) => {
          if (!data || typeof data !== "object") return;
          if (name === "progress") onDoc((last = data));
          else if (name === "end" && last) onDoc((last = { ...last, ...data }));
        },
        signal,
      );
      if (ended) return;
      delay = 500;
    } catch (err) {
      if (signal.aborted || err instanceof AuthError) return;
      if (err instanceof ApiError && err.status < 500 && err.status !== 429) return;
    }
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 10000);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Run `tick` now and every `ms` until `signal` aborts (errors are shown, not fatal). */
async function every(ms, tick, signal) {
  while (!signal.aborted) {
    try {
      await tick();
    } catch (err) {
      if (err instanceof AuthError || signal.aborted) return;
      notice(text(err.message));
    }
    await sleep(ms, signal);
  }
}

// -- views ---------------------------------------------------------------------------------

let viewAbort = new AbortController();

function show(viewId) {
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== viewId;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("current", location.hash.startsWith(link.getAttribute("href")));
  }
}

function route() {
  viewAbort.abort();
  viewAbort = new AbortController();
  notice("");
  if (!token.get()) {
    showSignIn();
    return;
  }
  $("bar").hidden = false;
  const hash = location.hash || "#/requests";
  const one = /^#\/requests\/(\d+)$/.exec(hash);
  if (one) requestView(Number(one[1]), viewAbort.signal);
  else if (hash === "#/inflight") inflightView(viewAbort.signal);
  else if (hash === "#/submit") submitView();
  else requestsView(viewAbort.signal);
}

// sign in / out

function showSignIn(message = "") {
  $("bar").hidden = true;
  $("whoami").textContent = "";
  $("signin-error").textContent = message;
  show("view-signin");
  $("token").focus();
}

function signOut(message = "") {
  viewAbort.abort();
  token.clear();
  showSignIn(message);
}

async function signIn(event) {
  event.preventDefault();
  const field = $("token");
  const value = field.value.trim();
  field.value = "";
  if (!value) return;
  token.set(value);
  try {
    const me = await api("/whoami");
    showWhoami(me);
    route();
  } catch (err) {
    token.clear();
    showSignIn(err instanceof AuthError ? "That token was not accepted." : text(err.message));
  }
}

function showWhoami(me) {
  const name = text(me?.name ?? me?.principal?.name);
  const role = text(me?.role ?? me?.principal?.role);
  $("whoami").textContent = role ? `${name} (${role})` : name;
}

// the request list

const listDocs = new Map(); // request id -> latest progress document from its stream
const listStreams = new Map(); // request id -> AbortController

function requestsView(signal) {
  show("view-requests");
  const stopStreams = () => {
    for (const ctl of listStreams.values()) ctl.abort();
    listStreams.clear();
    listDocs.clear();
  };
  signal.addEventListener("abort", stopStreams);
  const filter = $("state-filter");
  filter.onchange = () => route();
  every(
    LIST_REFRESH_MS,
    async () => {
      const query = filter.value ? `?state=${encodeURIComponent(filter.value)}&limit=100` : "?limit=100";
      const rows = await api(`/requests${query}`, { signal });
      renderRequests(rows);
      followListed(rows, signal);
    },
    signal,
  );
}

function renderRequests(rows) {
  const body = $("requests-table").tBodies[0];
  body.replaceChildren(...rows.map((r) => requestRow(r)));
  $("requests-empty").hidden = rows.length > 0;
}

function requestRow(r) {
  const doc = listDocs.get(r.id);
  const state = doc?.state ?? r.state;
  return el(
    "tr",
    { dataset: { id: text(r.id), state: text(state) } },
    el("td", {}, requestLink(r.id)),
    el("td", {}, text(r.action)),
    el("td", { className: "state-cell" }, stateBadge(state)),
    el("td", { className: "submitter" }, text(r.submitted_by)),
    el("td", { className: "num" }, text(r.host_count)),
    el("td", { className: "progress-cell" }, progressSummary(doc, r)),
    el("td", {}, when(r.created)),
  );
}

/** Per-batch bars from a progress document's summary, else overall counts. */
function progressSummary(doc, r) {
  const batches = doc?.summary?.batches;
  if (Array.isArray(batches) && batches.length) {
    return el("div", { className: "mini-batches" }, batches.map((b) => batchBar(b, true)));
  }
  const counts = r.counts || {};
  const ended = Object.entries(counts)
    .filter(([s]) => ENDED_HOST.has(s))
    .reduce((n, [, c]) => n + Number(c), 0);
  return el(
    "div",
    { className: "mini-batches" },
    el(
      "div",
      { className: "batch-bar" },
      el("progress", { max: Number(r.host_count) || 1, value: ended }),
      el("span", { className: "batch-label" }, `${ended}/${text(r.host_count)} ${countsText(counts)}`),
    ),
  );
}

function countsText(counts) {
  return Object.entries(counts || {})
    .filter(([, n]) => Number(n) > 0)
    .map(([state, n]) => `${n} ${state}`)
    .join(", ");
}

function batchBar(b, compact = false) {
  const counts = b.counts || {};
  const ended = Object.entries(counts)
    .filter(([s]) => ENDED_HOST.has(s))
    .reduce((n, [, c]) => n + Number(c), 0);
  const failed = Number(counts.failed || 0);
  const label = compact
    ? `batch ${text(b.batch)}: ${ended}/${text(b.hosts)}${failed ? ` (${failed} failed)` : ""}`
    : `batch ${text(b.batch)}: ${ended}/${text(b.hosts)} ended — ${countsText(counts)}`;
  return el(
    "div",
    { className: "batch-bar", dataset: { batch: text(b.batch), ended: text(ended), hosts: text(b.hosts) } },
    el("progress", { max: Number(b.hosts) || 1, value: ended }),
    el("span", { className: "batch-label" }, label),
  );
}

/** Follow the newest in-flight requests listed (at most MAX_LIST_STREAMS at once). */
function followListed(rows, signal) {
  const live = rows.filter((r) => !TERMINAL.has(listDocs.get(r.id)?.state ?? r.state));
  for (const r of live) {
    if (listStreams.has(r.id) || listStreams.size >= MAX_LIST_STREAMS || signal.aborted) continue;
    const ctl = new AbortController();
    signal.addEventListener("abort", () => ctl.abort());
    listStreams.set(r.id, ctl);
    followProgress(
      r.id,
      (doc) => {
        listDocs.set(r.id, doc);
        const row = $("requests-table").querySelector(`tr[data-id="${Number(r.id)}"]`);
        if (row) row.replaceWith(requestRow({ ...r, ...pick(doc) }));
      },
      ctl.signal,
    ).finally(() => listStreams.delete(r.id));
  }
}

function pick(doc) {
  const { state, counts, host_count, submitted_by, action, created } = doc;
  return Object.fromEntries(
    Object.entries({ state, counts, host_count, submitted_by, action, created }).filter(
      ([, v]) => v !== undefined,
    ),
  );
}

// one request

function requestView(id, signal) {
  show("view-request");
  $("req-id").textContent = `#${id}`;
  for (const part of ["req-meta", "req-batches"]) $(part).replaceChildren();
  for (const part of ["req-failures", "req-hosts"]) $(part).tBodies[0].replaceChildren();
  $("req-state").replaceChildren();
  $("req-reason").textContent = "";
  $("req-cancel").hidden = true;
  const cancel = $("req-cancel");
  cancel.onclick = async () => {
    if (!confirm(`Cancel request #${id}?`)) return;
    cancel.disabled = true;
    try {
      const doc = await api(`/requests/${id}/cancel`, { method: "POST" });
      notice(`Request #${id}: ${text(doc?.state)}${doc?.cancel_requested ? " (cancel requested)" : ""}`);
    } catch (err) {
      if (!(err instanceof AuthError)) notice(text(err.message));
    } finally {
      cancel.disabled = false;
    }
  };
  (async () => {
    try {
      const doc = await api(`/requests/${id}`, { signal });
      renderRequest(doc);
      if (!TERMINAL.has(doc.state)) await followProgress(id, renderRequest, signal);
    } catch (err) {
      if (!(err instanceof AuthError) && !signal.aborted) notice(text(err.message));
    }
  })();
}

function renderRequest(doc) {
  $("req-state").replaceChildren(stateBadge(doc.state));
  const policy = doc.policy || {};
  const meta = [
    ["Action", doc.action],
    ["Submitted by", doc.submitted_by],
    ["Hosts", doc.host_count],
    ["Image", doc.image],
    ["Patterns", Array.isArray(doc.patterns) ? doc.patterns.join(" ") : doc.patterns],
    [
      "Policy",
      Object.entries(policy)
        .filter(([, v]) => v !== null && v !== undefined)
        .map(([k, v]) => `${k}=${v}`)
        .join(" "),
    ],
    ["Created", when(doc.created)],
    ["Started", when(doc.started)],
    ["Finished", when(doc.finished)],
  ];
  $("req-meta").replaceChildren(
    ...meta
      .filter(([, v]) => v !== null && v !== undefined && v !== "")
      .flatMap(([k, v]) => [el("dt", {}, k), el("dd", { dataset: { field: k } }, text(v))]),
  );
  $("req-reason").textContent = text(doc.reason);
  $("req-cancel").hidden = TERMINAL.has(doc.state);

  const summary = doc.summary || {};
  const batches = summary.batches || [];
  $("req-batches").replaceChildren(
    ...batches.map((b) => batchBar(b)),
    summary.waiting ? el("p", { className: "hint" }, `${summary.waiting} hosts wait for another request`) : "",
  );
  $("req-failures").tBodies[0].replaceChildren(
    ...(summary.failures || []).map((f) =>
      el(
        "tr",
        {},
        el("td", { className: "error-class" }, text(f.error_class)),
        el("td", {}, (f.hosts || []).join(" ")),
        el("td", { className: "detail" }, text(f.example)),
      ),
    ),
  );
  $("req-hosts").tBodies[0].replaceChildren(
    ...(doc.hosts || []).map((h) =>
      el(
        "tr",
        { dataset: { host: text(h.host) } },
        el("td", { className: "host" }, text(h.host)),
        el("td", { className: "num" }, text(h.batch)),
        el("td", {}, stateBadge(h.state)),
        el("td", { className: "error-class" }, text(h.error_class)),
        el("td", { className: "detail" }, text(h.reason), h.holder ? ` (held by ${text(h.holder)})` : ""),
      ),
    ),
  );
}

// the fleet in flight

function inflightView(signal) {
  show("view-inflight");
  every(
    INFLIGHT_REFRESH_MS,
    async () => {
      const [leases, workers] = await Promise.all([
        api("/inflight", { signal }),
        api("/workers", { signal }),
      ]);
      $("inflight-table").tBodies[0].replaceChildren(
        ...leases.map((l) =>
          el(
            "tr",
            { dataset: { host: text(l.host) } },
            el("td", { className: "host" }, text(l.host)),
            el("td", {}, requestLink(l.request_id)),
            el("td", {}, text(l.action)),
            el("td", {}, text(l.pool)),
            el("td", {}, text(l.holder)),
            el("td", {}, when(l.acquired)),
          ),
        ),
      );
      $("inflight-empty").hidden = leases.length > 0;
      $("workers-table").tBodies[0].replaceChildren(
        ...workers.map((w) =>
          el(
            "tr",
            {},
            el("td", {}, `${text(w.id)} (${text(w.hostname)}:${text(w.pid)})`),
            el("td", {}, w.alive ? "yes" : "no"),
            el("td", { className: "num" }, `${Number(w.heartbeat_age_s).toFixed(1)} s`),
            el("td", {}, (w.requests || []).map((id, i) => [i ? " " : "", requestLink(id)])),
            el("td", { className: "num" }, text(w.hosts_leased)),
          ),
        ),
      );
    },
    signal,
  );
}

// the submit form, with its dry-run preview

let previewed = null; // the body the shown preview is of
let idempotencyKey = null; // one key per previewed body: a retried submit is one request

function formBody() {
  const value = (id) => $(id).value.trim();
  const body = {
    action: $("f-action").value,
    patterns: value("f-patterns")
      .split(/[\s,]+/)
      .filter(Boolean),
  };
  const optional = {
    image: value("f-image"),
    batch_size: value("f-batch-size"),
    max_failures: value("f-max-failures"),
    max_unavailable: value("f-max-unavailable"),
  };
  for (const [k, v] of Object.entries(optional)) {
    if (v && !(k === "image" && $("f-image").disabled)) body[k] = v;
  }
  if (value("f-canary") !== "") body.canary = Number(value("f-canary"));
  if (value("f-pause") !== "") body.pause = Number(value("f-pause"));
  body.on_overlap = $("f-on-overlap").value;
  return body;
}

function stalePreview() {
  previewed = null;
  idempotencyKey = null;
  $("submit-button").disabled = true;
  $("preview").hidden = true;
  $("f-image").disabled = !["reimage", "wipe"].includes($("f-action").value);
}

function submitView() {
  show("view-submit");
  $("submit-error").textContent = "";
  stalePreview();
}

function newKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function preview(event) {
  event.preventDefault();
  stalePreview();
  $("submit-error").textContent = "";
  const body = formBody();
  const button = $("preview-button");
  button.disabled = true;
  try {
    const plan = await api("/plan", { method: "POST", body });
    renderPreview(plan);
    previewed = JSON.stringify(body);
    idempotencyKey = newKey();
    $("submit-button").disabled = false;
  } catch (err) {
    if (!(err instanceof AuthError)) $("submit-error").textContent = text(err.message);
  } finally {
    button.disabled = false;
  }
}

function renderPreview(plan) {
  const batches = plan.batches || [];
  $("preview-summary").textContent =
    `${text(plan.action)} of ${text(plan.hosts)} hosts in ${batches.length} batches` +
    ` (nothing is written until you press Submit)`;
  $("preview-batches").tBodies[0].replaceChildren(
    ...batches.map((b) =>
      el(
        "tr",
        { dataset: { batch: text(b.batch) } },
        el("td", {}, `${text(b.batch)}${b.canary ? " (canary)" : ""}`),
        el("td", { className: "hosts" }, (b.hosts || []).join(" ")),
        el("td", {}, (b.budget_waits || []).map(text).join(", ")),
      ),
    ),
  );
  const notes = [];
  const dropped = Object.entries(plan.dropped || {});
  const waiting = Object.entries(plan.waiting || {});
  if (dropped.length) notes.push(`dropped (held by another request): ${dropped.map(([h, r]) => `${h} (#${r})`).join(", ")}`);
  if (waiting.length) notes.push(`waiting for another request: ${waiting.map(([h, r]) => `${h} (#${r})`).join(", ")}`);
  for (const [pool, limit] of Object.entries(plan.pool_limits || {})) {
    const down = (plan.pool_down_now || {})[pool] || 0;
    notes.push(`pool ${pool}: at most ${limit} down at once (${down} now)`);
  }
  $("preview-notes").replaceChildren(...notes.map((n) => el("li", {}, n)));
  $("preview").hidden = false;
}

async function submit() {
  const button = $("submit-button");
  const body = formBody();
  if (previewed === null || JSON.stringify(body) !== previewed) {
    stalePreview();
    $("submit-error").textContent = "The form changed since its preview: preview it again.";
    return;
  }
  button.disabled = true;
  try {
    const made = await api("/requests", {
      method: "POST",
      body,
      extraHeaders: { "Idempotency-Key": idempotencyKey },
    });
    stalePreview();
    location.hash = `#/requests/${Number(made.id)}`;
  } catch (err) {
    if (!(err instanceof AuthError)) {
      $("submit-error").textContent = text(err.message);
      button.disabled = false; // same body, same key: a retry cannot make a second request
    }
  }
}

// -- start ---------------------------------------------------------------------------------

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", () => signOut());
$("submit-form").addEventListener("submit", preview);
$("submit-form").addEventListener("input", stalePreview);
$("submit-form").addEventListener("change", stalePreview);
$("submit-button").addEventListener("click", submit);
window.addEventListener("hashchange", route);

if (token.get()) {
  api("/whoami")
    .then((me) => {
      showWhoami(me);
      route();
    })
    .catch((err) => {
      if (!(err instanceof AuthError)) notice(text(err.message));
    });
} else {
  route();
}
