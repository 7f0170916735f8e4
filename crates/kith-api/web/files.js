// The files page: upload (drop or pick, with progress), list with a prefix filter and paging,
// download, share links, delete, and where each chunk of a file lives (?explain=1).
// Every request fails over to another member when a node stops answering; an upload is sent
// again from the start to the next member, since a File can be read again.
import { refreshMembers, knownMembers, origin, fetchAny, el, formatBytes } from "./common.js";

const PAGE_SIZE = 50;
const REFRESH_MS = 5000;          // the list is re-read this often (and after a failure)
const LIST_TIMEOUT_MS = 10000;    // a linearizable list waits for a read index
const UPLOAD_ROUNDS = 2;          // passes over the member list before an upload gives up
const UPLOAD_IDLE_MS = 30000;     // an upload with no progress for this long is abandoned
const PATH_BYTES_MAX = 1024;
const SEGMENT_BYTES_MAX = 255;

const $ = (id) => document.getElementById(id);
const plural = (n, noun) => `${n} ${noun}${n === 1 ? "" : "s"}`;
const state = {
  base: origin,        // the member that answered last
  prefix: "",
  pages: [null],       // the `after` cursor of each page shown so far; the last is current
  next: null,          // the cursor of the following page, or null
  armedDelete: null,   // the path whose delete button awaits a second click
  listGeneration: 0,   // bumps on every list request; only the newest answer is shown
  shown: "",           // what the table shows now, so an unchanged refresh leaves it alone
};

function setConnection(text, ok) {
  const c = $("connection");
  c.textContent = text;
  c.className = `served-by status ${ok ? "ok" : "bad"}`;
}

function notice(text) {
  $("notice").textContent = text;
}

/** Percent-encodes each segment, keeping the slashes. */
function encodePath(path) {
  return path.split("/").map(encodeURIComponent).join("/");
}

/** The documented path rule (docs/FILES.md); null when `path` is fine, else why not. */
function pathProblem(path) {
  const bytes = new TextEncoder().encode(path).length;
  if (bytes === 0 || bytes > PATH_BYTES_MAX) return `a path is 1–${PATH_BYTES_MAX} bytes`;
  if (path.startsWith("/") || path.endsWith("/")) return "a path does not start or end with '/'";
  for (const segment of path.split("/")) {
    const n = new TextEncoder().encode(segment).length;
    if (n === 0 || n > SEGMENT_BYTES_MAX) return `each segment is 1–${SEGMENT_BYTES_MAX} bytes`;
    if (segment === "." || segment === "..") return "'.' and '..' are not allowed";
    // eslint-disable-next-line no-control-regex
    if (/[\u0000-\u001f\u007f\\]/.test(segment)) return "no control characters or '\\'";
  }
  return null;
}

async function errorMessage(response) {
  const body = await response.json().catch(() => null);
  return body?.error?.message ?? `HTTP ${response.status}`;
}

// ---- upload ----------------------------------------------------------------------------

/** One PUT of `file` to `base`; resolves { status, body } or rejects on a network failure. */
function putOnce(base, path, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    let idle = null;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => xhr.abort(), UPLOAD_IDLE_MS);
    };
    xhr.open("PUT", `${base}/v1/files/${encodePath(path)}`);
    xhr.setRequestHeader("content-type", file.type || "application/octet-stream");
    xhr.upload.addEventListener("progress", (e) => {
      arm();
      onProgress(e.loaded, e.lengthComputable ? e.total : file.size);
    });
    xhr.addEventListener("load", () => {
      clearTimeout(idle);
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { body = null; }
      resolve({ status: xhr.status, body });
    });
    xhr.addEventListener("error", () => { clearTimeout(idle); reject(new Error("network error")); });
    xhr.addEventListener("abort", () => { clearTimeout(idle); reject(new Error("no progress; gave up")); });
    arm();
    xhr.send(file);
  });
}

/** Uploads one file, trying each member in turn on a network failure or a 503. */
async function upload(file, path) {
  const bar = $("upload-progress");
  const status = $("upload-status");
  const members = knownMembers();
  const order = [state.base, ...members.filter((m) => m !== state.base)];
  let last = "no member answered";
  for (let attempt = 0; attempt < order.length * UPLOAD_ROUNDS; attempt++) {
    const base = order[attempt % order.length];
    bar.hidden = false;
    bar.max = Math.max(1, file.size);
    bar.value = 0;
    status.textContent = `uploading ${path} to ${base.replace(/^https?:\/\//, "")}…`;
    try {
      const { status: code, body } = await putOnce(base, path, file, (loaded, total) => {
        bar.max = Math.max(1, total);
        bar.value = loaded;
        status.textContent = `uploading ${path}: ${formatBytes(loaded)} of ${formatBytes(total)}`;
      });
      if (code === 201 || code === 200) {
        state.base = base;
        bar.value = bar.max;
        status.textContent = `stored ${body?.path ?? path} (${formatBytes(body?.size ?? file.size)}, ` +
          `${plural(body?.chunk_count ?? 0, "chunk")} × ${body?.replicas ?? "?"} copies)`;
        return true;
      }
      last = body?.error?.message ?? `HTTP ${code}`;
      if (code !== 503) break; // refused for a reason another node would share
    } catch (error) {
      last = `${base}: ${error.message}`;
    }
  }
  bar.hidden = true;
  status.textContent = `${path} was not stored: ${last}`;
  return false;
}

async function uploadAll(files) {
  const folder = $("upload-prefix").value.trim().replace(/^\/+|\/+$/g, "");
  for (const file of files) {
    const path = folder ? `${folder}/${file.name}` : file.name;
    const problem = pathProblem(path);
    if (problem) {
      $("upload-status").textContent = `cannot upload "${path}": ${problem}`;
      continue;
    }
    await upload(file, path);
  }
  await showPage();
}

// ---- list --------------------------------------------------------------------------------

function table(id, header, rows, empty) {
  const head = el("thead", {}, el("tr", {}, header.map((h) => el("th", { scope: "col" }, h))));
  const body = el("tbody", {}, rows.length
    ? rows
    : el("tr", {}, el("td", { colspan: header.length, class: "notice" }, empty)));
  $(id).replaceChildren(head, body);
}

function fileRow(f) {
  const href = `${state.base}/v1/files/${encodePath(f.path)}`;
  const name = f.path.split("/").pop();
  const armed = state.armedDelete === f.path;
  const del = el("button", { type: "button", "aria-label": `Delete ${f.path}` }, armed ? "Really delete?" : "Delete");
  del.addEventListener("click", () => removeFile(f.path, del));
  return el("tr", { "data-path": f.path },
    el("td", {}, f.path),
    el("td", {}, formatBytes(f.size)),
    el("td", {}, f.version),
    el("td", {}, f.content_type ?? ""),
    el("td", { class: "hash", title: f.blake3 }, (f.blake3 ?? "").slice(0, 12)),
    el("td", {}, el("div", { class: "actions" },
      el("a", { class: "download", href, download: name, "aria-label": `Download ${f.path}` }, "Download"),
      el("button", { type: "button", onclick: () => share(f.path), "aria-label": `Share ${f.path}` }, "Share"),
      el("button", { type: "button", onclick: () => where(f.path), "aria-label": `Where is ${f.path}` }, "Where"),
      del)));
}

async function showPage() {
  state.listGeneration += 1;
  const generation = state.listGeneration;
  const after = state.pages[state.pages.length - 1];
  let query = `/v1/files?prefix=${encodeURIComponent(state.prefix)}&limit=${PAGE_SIZE}`;
  if (after) query += `&after=${encodeURIComponent(after)}`;
  try {
    const { response, base } = await fetchAny(query, { timeoutMs: LIST_TIMEOUT_MS }, state.base);
    if (generation !== state.listGeneration) return; // a newer request is under way
    if (!response.ok) {
      notice(`could not list files: ${await errorMessage(response)}`);
      return;
    }
    state.base = base;
    setConnection(`connected to ${base.replace(/^https?:\/\//, "")}`, true);
    if ($("notice").textContent.startsWith("could not list")) notice("");
    const page = await response.json();
    if (generation !== state.listGeneration) return;
    state.next = page.files.length === PAGE_SIZE ? page.next : null;
    // Re-render only on a change, so that the rows (and a half-confirmed delete) stay put.
    const shown = JSON.stringify([base, state.prefix, state.pages, page]);
    if (shown === state.shown) return;
    state.shown = shown;
    table("files", ["path", "size", "version", "type", "blake3", ""], page.files.map(fileRow),
      state.prefix ? `No files under "${state.prefix}".` : "No files yet: drop one above, or run kith files put LOCAL PATH.");
    $("prev-page").disabled = state.pages.length <= 1;
    $("next-page").disabled = !state.next;
    $("page-label").textContent = `page ${state.pages.length}`;
  } catch (error) {
    if (generation !== state.listGeneration) return;
    setConnection("no node answers; retrying", false);
    notice(`could not list files: ${error.message}`);
  }
}

// ---- actions -----------------------------------------------------------------------------

async function share(path) {
  const expires = 24 * 3600;
  try {
    const { response, base } = await fetchAny(`/v1/files/${encodePath(path)}/share`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ expires_in_s: expires }),
    }, state.base);
    if (!response.ok) {
      notice(`could not share ${path}: ${await errorMessage(response)}`);
      return;
    }
    const link = await response.json();
    $("share-link").value = `${base}${link.url}`;
    $("share-box").hidden = false;
    notice(`anyone with the link can download ${path} from any node until ${new Date(link.expires_at_ms).toLocaleString()}`);
  } catch (error) {
    notice(`could not share ${path}: ${error.message}`);
  }
}

async function copyLink() {
  const input = $("share-link");
  try {
    await navigator.clipboard.writeText(input.value);
    notice("link copied");
  } catch {
    // No clipboard permission (e.g. plain http on another host): leave it selected instead.
    input.select();
    notice("press Ctrl+C to copy the selected link");
  }
}

async function removeFile(path, button) {
  if (state.armedDelete !== path) {
    state.armedDelete = path;
    button.textContent = "Really delete?";
    return;
  }
  state.armedDelete = null;
  button.disabled = true;
  try {
    const { response } = await fetchAny(`/v1/files/${encodePath(path)}`, { method: "DELETE" }, state.base);
    if (!response.ok) {
      notice(`could not delete ${path}: ${await errorMessage(response)}`);
    } else {
      const body = await response.json();
      notice(body.deleted ? `deleted ${path}` : `${path} was already gone`);
    }
  } catch (error) {
    notice(`could not delete ${path}: ${error.message}`);
  }
  state.shown = ""; // re-render even if nothing changed, to reset the button
  await showPage();
}

function chips(ids, other, present) {
  // present: the chip's node holds the chunk; other: the set it is compared with.
  return el("div", { class: "chips" }, ids.map((id) => {
    const kind = present ? (other.includes(id) ? "ok" : "extra") : (other.includes(id) ? "ok" : "missing");
    return el("span", { class: `chip ${kind}`, title: `node ${id}` }, `node ${id}`);
  }));
}

function placementState(chunk, replicas) {
  if (chunk.desired.every((d) => chunk.holders.includes(d))) return "ok";
  if (chunk.holders.length < Math.max(replicas, chunk.desired.length)) return "under";
  return "moving";
}

async function where(path) {
  try {
    const { response } = await fetchAny(`/v1/files/${encodePath(path)}?explain=1`, {}, state.base);
    if (!response.ok) {
      notice(`could not explain ${path}: ${await errorMessage(response)}`);
      return;
    }
    const explain = await response.json();
    $("where").hidden = false;
    $("where-path").textContent = explain.path;
    const states = explain.chunks.map((c) => placementState(c, explain.replicas));
    const healthy = states.filter((s) => s === "ok").length;
    $("where-summary").textContent = `${formatBytes(explain.size)} in ${plural(explain.chunks.length, "chunk")}, ` +
      `${explain.replicas} copies of each wanted; ${healthy} of ${explain.chunks.length} where they should be.`;
    table("placement", ["chunk", "offset", "size", "hash", "held by", "should be on", "state"],
      explain.chunks.map((c, i) => el("tr", { "data-chunk": c.index },
        el("td", {}, c.index),
        el("td", {}, c.offset),
        el("td", {}, formatBytes(c.size)),
        el("td", { class: "hash", title: c.hash }, c.hash.slice(0, 12)),
        el("td", {}, chips(c.holders, c.desired, true)),
        el("td", {}, chips(c.desired, c.holders, false)),
        el("td", { class: `state-${states[i]}` }, states[i]))),
      "An empty file has no chunks.");
    $("where").scrollIntoView({ behavior: "smooth", block: "start" });
  } catch (error) {
    notice(`could not explain ${path}: ${error.message}`);
  }
}

// ---- wiring ------------------------------------------------------------------------------

function start() {
  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.remove("over");
    });
  }
  drop.addEventListener("drop", (e) => {
    const files = [...(e.dataTransfer?.files ?? [])];
    if (files.length) uploadAll(files);
  });
  $("file-input").addEventListener("change", async (e) => {
    const input = e.target;
    const files = [...input.files];
    await uploadAll(files);
    input.value = "";
  });
  $("filter").addEventListener("submit", (e) => {
    e.preventDefault();
    state.prefix = $("prefix").value.trim();
    state.pages = [null];
    showPage();
  });
  $("next-page").addEventListener("click", () => {
    if (!state.next) return;
    state.pages.push(state.next);
    showPage();
  });
  $("prev-page").addEventListener("click", () => {
    if (state.pages.length > 1) state.pages.pop();
    showPage();
  });
  $("copy-link").addEventListener("click", copyLink);
  refreshMembers().catch(() => setConnection("no node answers", false));
  setInterval(() => refreshMembers().catch(() => {}), 5000);
  // Keeps the list current (files uploaded elsewhere appear) and recovers from a failure.
  setInterval(() => { if (!document.hidden) showPage(); }, REFRESH_MS);
  showPage();
}

start();
