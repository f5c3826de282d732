// The console's shared helpers: calling the public API as the signed-in session, and building
// DOM from data. Every value from the API enters the page as text (textContent), never as
// HTML, so a model name, tag, dataset row or job message cannot inject markup.

const CSRF = document.querySelector('meta[name="csrf-token"]')?.content ?? "";

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && body.error && body.error.message ? body.error.message : `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.body = body;
  }
}

// fetch() against this server's API with the session cookie; changes carry the CSRF token.
export async function api(path, { method = "GET", body, query, raw = false } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = CSRF;
  let payload = body;
  if (body !== undefined && !(body instanceof FormData)) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(url, { method, headers, body: payload, credentials: "same-origin" });
  if (response.status === 401) {
    window.location.assign("/ui/sign-in");
    throw new ApiError(401, null);
  }
  if (raw) return response;
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// h("p", {class: "x"}, "text", child): an element; strings become text nodes.
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "text") {
      node.textContent = String(value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// A table from column titles and rows of cells (text or nodes); a caption for screen readers.
export function table(caption, columns, rows, empty = "Nothing yet.") {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, columns.map((title) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))),
  );
}

export function fill(id, ...children) {
  const target = document.getElementById(id);
  target.replaceChildren(...children.flat());
  return target;
}

// What a part of a page shows when its API call fails: the API's own message.
export function failure(error) {
  const reason = error instanceof ApiError && error.status === 403
    ? `Not for this key: ${error.message}`
    : error.message;
  return h("p", { class: "error" }, reason);
}

export async function section(id, load) {
  try {
    fill(id, await load());
  } catch (error) {
    fill(id, failure(error));
  }
}

export function say(message, kind = "info") {
  const status = document.getElementById("status");
  if (status) {
    status.textContent = message;
    status.dataset.kind = kind;
  }
}

export function values() {
  return JSON.parse(document.body.dataset.values || "{}");
}

export function hasScope(scope) {
  const scopes = (document.body.dataset.scopes || "").split(" ");
  return scopes.includes("admin") || scopes.includes(scope);
}

// A chart when the bundled Chart.js is there; the tables beside it carry the same numbers.
export function chart(canvasId, config) {
  const canvas = document.getElementById(canvasId);
  if (!canvas || typeof window.Chart !== "function") return null;
  const existing = window.Chart.getChart(canvas);
  if (existing) existing.destroy();
  return new window.Chart(canvas, {
    ...config,
    options: { responsive: true, maintainAspectRatio: false, animation: false, ...config.options },
  });
}

export function megabytes(bytes) {
  return bytes === null || bytes === undefined ? "" : `${(bytes / 2 ** 20).toFixed(1)} MB`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

const signOut = document.getElementById("sign-out");
if (signOut) {
  signOut.addEventListener("click", async () => {
    await fetch("/ui/session/end", {
      method: "POST",
      headers: { "X-CSRF-Token": CSRF },
      credentials: "same-origin",
    });
    window.location.assign("/ui/sign-in");
  });
}
