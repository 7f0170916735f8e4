// Shared helpers for kith's pages: talking to the cluster with failover.

/** Base URL of the node that served this page. */
export const origin = window.location.origin;

/** Known members' base URLs, refreshed from /v1/cluster. The serving node comes first. */
let members = [origin];

export function knownMembers() {
  return members.slice();
}

/** Refreshes the member list from any reachable node. Returns the cluster document. */
export async function refreshMembers() {
  const cluster = await getJson("/v1/cluster");
  // Members serve the same scheme as this page (https when the cluster has TLS).
  const urls = cluster.members.map((m) => `${window.location.protocol}//${m.addr}`);
  members = [origin, ...urls.filter((u) => u !== origin)];
  return cluster;
}

/**
 * Fetches `path` from the first member that answers, starting with `preferred`.
 * Returns { response, base } so callers know which node served them.
 */
export async function fetchAny(path, options = {}, preferred = origin) {
  const order = [preferred, ...members.filter((m) => m !== preferred)];
  let lastError = null;
  for (const base of order) {
    try {
      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(), options.timeoutMs ?? 4000);
      const response = await fetch(base + path, { ...options, signal: controller.signal });
      clearTimeout(timer);
      if (response.status === 503) {
        lastError = new Error(`${base}: 503`);
        continue;
      }
      if (response.status === 401) {
        // This cluster asks for a token. The login cookie belongs to this page's node; the
        // others cannot be asked with it.
        if (base === origin) {
          window.location.assign("/login");
          return new Promise(() => {});
        }
        lastError = new Error(`${base}: 401`);
        continue;
      }
      return { response, base };
    } catch (error) {
      lastError = error;
    }
  }
  throw lastError ?? new Error("no member answered");
}

export async function getJson(path, preferred) {
  const { response } = await fetchAny(path, {}, preferred);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

/** Creates an element with attributes and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function formatBytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function clock(date = new Date()) {
  return date.toLocaleTimeString([], { hour12: false });
}

/**
 * A "?" that opens `text`, the plain-words meaning of the number `name` (a native
 * disclosure, so it works from the keyboard and with screen readers).
 */
export function why(name, text) {
  return el("details", { class: "why" }, el("summary", { "aria-label": `What is ${name}?` }, "?"),
    el("span", { class: "explain" }, text));
}
