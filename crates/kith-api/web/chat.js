// The chat page: history, a live stream that follows the cluster through failures, sending.
import { refreshMembers, knownMembers, origin, fetchAny, el } from "./common.js";

const HISTORY_SHOWN = 100;
const SEND_ATTEMPTS = 6;
const RETRY_DELAY_MS = 400;

const $ = (id) => document.getElementById(id);
const state = {
  room: new URLSearchParams(location.search).get("room") || "general",
  base: origin,     // the node the stream is connected to
  lastSeq: 0,       // highest seq shown
  source: null,     // the EventSource
  generation: 0,    // bumps on every room switch, to ignore stale callbacks
};

function setConnection(text, ok) {
  const c = $("connection");
  c.textContent = text;
  c.className = `served-by status ${ok ? "ok" : "bad"}`;
}

function nodeName(base) {
  return base.replace(/^https?:\/\//, "");
}

function showMessage(m) {
  if (m.seq <= state.lastSeq) return; // already shown: never twice
  state.lastSeq = m.seq;
  const item = el("li", { "data-seq": m.seq, "data-id": m.id },
    el("span", { class: "seq" }, `#${m.seq}`),
    el("span", { class: "who" }, m.author),
    el("span", { class: "text" }, m.text));
  const log = $("log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(item);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function showGap(from, to) {
  $("log").append(el("li", { class: "gap" }, `messages ${from}–${to} are no longer kept`));
}

async function loadHistory(generation) {
  const { response } = await fetchAny(`/v1/rooms/${state.room}/messages?after=0&limit=1`);
  if (generation !== state.generation) return;
  const first = await response.json();
  if (first.last_seq === 0) return; // no messages yet
  const after = Math.max(0, first.last_seq - HISTORY_SHOWN);
  const { response: page } = await fetchAny(`/v1/rooms/${state.room}/messages?after=${after}&limit=${HISTORY_SHOWN}`);
  const body = await page.json();
  if (generation !== state.generation) return;
  if (body.dropped > 0 && after === 0) showGap(1, body.first_seq - 1);
  for (const m of body.messages) showMessage(m);
}

function connect(generation, base) {
  if (generation !== state.generation) return;
  state.base = base;
  const url = `${base}/v1/rooms/${state.room}/stream?after=${state.lastSeq}`;
  const source = new EventSource(url);
  state.source = source;
  source.addEventListener("open", () => setConnection(`connected to ${nodeName(base)}`, true));
  source.addEventListener("message", (e) => showMessage(JSON.parse(e.data)));
  source.addEventListener("gap", (e) => {
    const g = JSON.parse(e.data);
    showGap(g.from_seq, g.to_seq);
  });
  const failover = () => {
    source.close();
    if (generation !== state.generation) return;
    setConnection(`lost ${nodeName(base)}; reconnecting…`, false);
    // Try the next member; resume after the last message shown, so nothing is lost or repeated.
    const members = knownMembers();
    const next = members[(members.indexOf(base) + 1) % members.length] ?? origin;
    setTimeout(() => connect(generation, next), RETRY_DELAY_MS);
  };
  source.addEventListener("error", failover);
  source.addEventListener("cut", failover);
}

async function send(text) {
  const author = $("name").value.trim();
  if (!author) {
    $("notice").textContent = "Pick a name first.";
    $("name").focus();
    return false;
  }
  // One id for every attempt: a retry after a lost answer is stored once.
  const id = `w${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  const body = JSON.stringify({ author, text, id });
  for (let attempt = 0; attempt < SEND_ATTEMPTS; attempt++) {
    try {
      const { response } = await fetchAny(`/v1/rooms/${state.room}/messages`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body,
        timeoutMs: 8000,
      }, state.base);
      if (response.ok) {
        $("notice").textContent = "";
        return true;
      }
      const error = await response.json().catch(() => ({}));
      if (response.status < 500) {
        $("notice").textContent = error?.error?.message ?? `refused (${response.status})`;
        return false;
      }
    } catch {
      // fall through to retry on another node
    }
    await new Promise((r) => setTimeout(r, RETRY_DELAY_MS));
  }
  $("notice").textContent = "Not sent: no node accepted the message. Try again.";
  return false;
}

async function showRooms() {
  try {
    const { response } = await fetchAny("/v1/rooms?consistency=stale");
    const body = await response.json();
    const names = new Set(body.rooms.map((r) => r.name));
    names.add(state.room);
    $("rooms").replaceChildren(...[...names].sort().map((name) => el("li", {},
      el("button", { type: "button", "aria-pressed": name === state.room ? "true" : "false", onclick: () => openRoom(name) }, name))));
  } catch {
    // keep the last list
  }
}

async function openRoom(name) {
  state.generation += 1;
  const generation = state.generation;
  if (state.source) state.source.close();
  state.room = name;
  state.lastSeq = 0;
  $("room-label").textContent = name;
  $("log").replaceChildren();
  history.replaceState(null, "", `/chat?room=${encodeURIComponent(name)}`);
  await showRooms();
  try {
    await loadHistory(generation);
  } catch (error) {
    $("notice").textContent = `could not load history: ${error.message}`;
  }
  connect(generation, state.base);
}

async function start() {
  $("name").value = localStorage.getItem("kith-name") ?? "";
  $("name").addEventListener("change", () => localStorage.setItem("kith-name", $("name").value.trim()));
  $("compose").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("text");
    const text = input.value.trim();
    if (!text) return;
    $("send").disabled = true;
    if (await send(text)) input.value = "";
    $("send").disabled = false;
    input.focus();
  });
  $("new-room").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("room-name").value.trim();
    if (/^[A-Za-z0-9._-]{1,64}$/.test(name)) {
      $("room-name").value = "";
      openRoom(name);
    } else {
      $("notice").textContent = "Room names are 1–64 letters, digits, '-', '_' or '.'.";
    }
  });
  try {
    await refreshMembers();
  } catch {
    setConnection("no node answers", false);
  }
  setInterval(() => refreshMembers().catch(() => {}), 5000);
  setInterval(showRooms, 5000);
  await openRoom(state.room);
}

start();
