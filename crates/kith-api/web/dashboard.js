// The live cluster dashboard: polls /v1/cluster every second and draws what it sees.
import { refreshMembers, fetchAny, getJson, el, formatBytes, clock, why } from "./common.js";

/** The plain-words meaning of every number on a member's card, opened by its "?". */
const MEANING = {
  address: "Where the node listens: its computer's address and port. Clients and the other nodes reach it there.",
  term: "The election number. It goes up by one each time a node asks to become leader; a leader rules for one term.",
  "log/durable/commit/applied": "Four positions in the node's log, the ordered list of every change: the newest entry written, the newest safely on disk, the newest a majority has stored (it can never be undone), and the newest carried out on the node's copy of the data.",
  lag: "How many entries the leader has that this node has not stored yet. 0 means up to date.",
  "ledger head": "The newest entry of the node's hash chain and its fingerprint. Nodes with the same fingerprint at the same number hold exactly the same history.",
  "requests/s": "Requests from clients this node answered per second. Any node answers any request, so the load spreads.",
  "data on disk": "How much disk this node uses for its log, its copy of the data and its snapshot.",
  "file chunks held": "Pieces of uploaded files stored on this node. Each piece is kept on several nodes, so losing one node loses no file.",
  "storage quota": "How much of its allowed storage this node's data uses. Past the quota, writes that add data are refused until something is deleted.",
  links: "What this node's last messages to each other node found: up (answered), down (no answer, and since when) or idle (nothing sent lately).",
};

const POLL_MS = 1000;
const HISTORY_POINTS = 180; // 3 minutes at one point per second
const EVENTS_MAX = 100;
const LINK_IDLE_MS = 5000; // a link with no message for this long shows as idle

const rateSeries = [];
let previous = null; // { at, commit, requests: Map<id, number> }
let lastLeader = undefined;
let lastTerm = undefined;
const lastReachable = new Map();
let playground = false;

const $ = (id) => document.getElementById(id);

function logEvent(text) {
  const list = $("events");
  list.prepend(el("li", {}, el("time", {}, clock()), text));
  while (list.children.length > EVENTS_MAX) list.lastChild.remove();
}

function roleOf(m) {
  if (!m.reachable) return "down";
  if (!m.voter) return "learner";
  return m.role ?? "follower";
}

function shortHash(h) {
  return h ? `${h.slice(0, 8)}…` : "–";
}

async function act(id, action, button) {
  button.disabled = true;
  try {
    const { response } = await fetchAny(`/v1/dev/nodes/${id}/${action}`, { method: "POST" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) logEvent(`${action} node ${id} failed: ${body?.error?.message ?? response.status}`);
    else logEvent(`you asked: ${action} node ${id}`);
  } catch (error) {
    logEvent(`${action} node ${id} failed: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

/**
 * A member's links to the others, as its own last messages found them: "→ 2 up", or
 * "→ 3 down 12 s" with the error on hover, or "idle" when the node has sent nothing on it
 * lately (followers mostly send nothing until an election or a forwarded write).
 */
function linksOf(m, idByAddr) {
  if (!m.links?.length) return "–";
  const now = Date.now();
  return el("span", { class: "links" }, ...m.links.map((l) => {
    const to = idByAddr.get(l.addr) ?? l.addr;
    const age = Math.max(0, Math.round((now - l.since_ms) / 1000));
    const idle = now - l.last_ms > LINK_IDLE_MS;
    const state = idle ? "idle" : l.up ? "up" : "down";
    const text = state === "down" ? `→ ${to} down ${age} s` : `→ ${to} ${state}`;
    const title = `${l.tls ? "TLS" : "plain TCP"}; ${idle ? `no message for ${Math.round((now - l.last_ms) / 1000)} s; last ` : ""}${l.up ? "answered" : "failed"}${l.error ? `: ${l.error}` : ""}`;
    return el("span", { class: `link ${state}`, title }, text, l.tls ? " 🔒" : "");
  }));
}

function memberCard(m, rates, leaderId, idByAddr) {
  const role = roleOf(m);
  const title = el("h3", {}, `Node ${m.id}`, el("span", { class: `badge ${role}` }, role));
  const rows = [
    ["address", m.addr],
    ["term", m.term ?? "–"],
    ["log/durable/commit/applied", m.reachable ? `${m.last_log_index} / ${m.durable_index} / ${m.commit_index} / ${m.applied_index}` : "–"],
    ["lag", m.lag ?? (m.id === leaderId ? 0 : "–")],
    ["ledger head", m.reachable ? el("span", { class: "hash", title: m.ledger_hash }, `#${m.ledger_index} ${shortHash(m.ledger_hash)}`) : "–"],
    ["requests/s", rates.get(m.id)?.toFixed(1) ?? "–"],
    ["data on disk", formatBytes(m.disk_bytes)],
    ["file chunks held", m.reachable ? `${m.file_chunks} (${formatBytes(m.file_chunk_bytes)})` : "–"],
    ["storage quota", m.quota ? `${formatBytes(m.quota.used_bytes)} of ${formatBytes(m.quota.quota_bytes)}` : "–"],
    ["links", m.reachable ? linksOf(m, idByAddr) : "–"],
  ];
  const dl = el("dl", {}, rows.flatMap(([k, v]) => [el("dt", {}, k, MEANING[k] ? why(k, MEANING[k]) : null), el("dd", {}, v)]));
  const card = el("article", { class: `panel member ${role}`, "data-node": m.id, "aria-label": `Node ${m.id}, ${role}` }, title, dl);
  if (m.quota?.exceeded) {
    // The NOSPACE alarm: say what is refused and how to get back under.
    card.classList.add("over-quota");
    card.append(el("p", { class: "alarm", role: "alert" },
      "Storage quota exceeded: writes that add data answer 507 until data is deleted."));
  }
  if (playground) {
    const actions = [["kill", "Kill"], ["pause", "Pause"], ["resume", "Resume"], ["restart", "Restart"], ["isolate", "Cut off"], ["heal", "Heal"]];
    const buttons = el("div", { class: "buttons" });
    for (const [action, label] of actions) {
      const b = el("button", { type: "button", "data-action": action, "aria-label": `${label} node ${m.id}` }, label);
      b.addEventListener("click", () => act(m.id, action, b));
      buttons.append(b);
    }
    card.append(buttons);
  }
  return card;
}

function drawChart() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const max = Math.max(10, ...rateSeries);
  ctx.strokeStyle = "#dde1e7";
  ctx.fillStyle = "#5b6473";
  ctx.font = "12px system-ui, sans-serif";
  for (const f of [0, 0.5, 1]) {
    const y = height - 16 - f * (height - 28);
    ctx.beginPath(); ctx.moveTo(36, y); ctx.lineTo(width, y); ctx.stroke();
    ctx.fillText(String(Math.round(max * f)), 0, y + 4);
  }
  ctx.strokeStyle = "#2458d6";
  ctx.lineWidth = 2;
  ctx.beginPath();
  const step = (width - 40) / (HISTORY_POINTS - 1);
  rateSeries.forEach((v, i) => {
    const x = 40 + (HISTORY_POINTS - rateSeries.length + i) * step;
    const y = height - 16 - (v / max) * (height - 28);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function drawBars(members, rates) {
  const bars = $("bars");
  const max = Math.max(1, ...rates.values());
  bars.replaceChildren(...members.map((m) => {
    const r = rates.get(m.id) ?? 0;
    const fill = el("div", { class: "fill" });
    fill.style.width = `${(100 * r) / max}%`;
    return el("div", { class: "bar" }, `node ${m.id}`, el("div", { class: "track" }, fill), `${r.toFixed(1)}/s`);
  }));
}

function ledgerSummary(members) {
  const byIndex = new Map();
  for (const m of members.filter((m) => m.reachable)) {
    if (!byIndex.has(m.ledger_index)) byIndex.set(m.ledger_index, new Set());
    byIndex.get(m.ledger_index).add(m.ledger_hash);
  }
  for (const [index, hashes] of byIndex) {
    if (hashes.size > 1) return { ok: false, text: `diverged at #${index}` };
  }
  const top = Math.max(0, ...byIndex.keys());
  return { ok: true, text: `agree (#${top})` };
}

function noticeChanges(cluster, members) {
  const leader = cluster.leader_id ?? null;
  if (lastLeader !== undefined && leader !== lastLeader) {
    logEvent(leader === null ? "no leader: an election is under way (or there is no quorum)" : `node ${leader} is the leader now (term ${cluster.term})`);
  } else if (lastLeader === undefined && leader !== null) {
    logEvent(`node ${leader} leads, term ${cluster.term}`);
  }
  if (lastTerm !== undefined && cluster.term !== lastTerm) logEvent(`term ${lastTerm} → ${cluster.term}: someone called an election`);
  for (const m of members) {
    const was = lastReachable.get(m.id);
    if (was === true && !m.reachable) logEvent(`node ${m.id} stopped answering`);
    if (was === false && m.reachable) logEvent(`node ${m.id} is back`);
    lastReachable.set(m.id, m.reachable);
  }
  lastLeader = leader;
  lastTerm = cluster.term;
}

async function tick() {
  let cluster;
  try {
    cluster = await refreshMembers();
  } catch (error) {
    $("served-by").textContent = "no node answers";
    return;
  }
  const members = cluster.members;
  const now = performance.now();
  const leader = members.find((m) => m.id === cluster.leader_id);
  const commit = leader?.commit_index ?? cluster.commit_index ?? 0;
  const rates = new Map();
  const requests = new Map(members.map((m) => [m.id, m.requests_total]));
  if (previous) {
    const seconds = Math.max(0.001, (now - previous.at) / 1000);
    rateSeries.push(Math.max(0, (commit - previous.commit) / seconds));
    if (rateSeries.length > HISTORY_POINTS) rateSeries.shift();
    for (const m of members) {
      const before = previous.requests.get(m.id);
      if (m.requests_total != null && before != null) rates.set(m.id, Math.max(0, (m.requests_total - before) / seconds));
    }
  }
  previous = { at: now, commit, requests };

  const voters = members.filter((m) => m.voter);
  const up = voters.filter((m) => m.reachable).length;
  const quorum = Math.floor(voters.length / 2) + 1;
  $("served-by").textContent = `served by node ${cluster.node_id}`;
  $("s-leader").textContent = cluster.leader_id ? `node ${cluster.leader_id}` : "none";
  $("s-term").textContent = cluster.term;
  $("s-up").textContent = `${up} / ${voters.length}`;
  $("s-quorum").textContent = up >= quorum ? `yes (${quorum} needed)` : `lost (${quorum} needed)`;
  $("s-rate").textContent = rateSeries.length ? rateSeries[rateSeries.length - 1].toFixed(1) : "–";
  const ledger = ledgerSummary(members);
  $("s-ledger").textContent = ledger.text;

  noticeChanges(cluster, members);
  const idByAddr = new Map(members.map((m) => [m.addr, m.id]));
  $("members").replaceChildren(...members.map((m) => memberCard(m, rates, cluster.leader_id, idByAddr)));
  drawChart();
  drawBars(members, rates);
}

async function start() {
  try {
    const dev = await getJson("/v1/dev");
    playground = dev.enabled === true;
  } catch {
    playground = false;
  }
  $("playground-note").hidden = !playground;
  // The lessons drive the playground, so only `kith dev` nodes offer them.
  $("learn-link").hidden = !playground;
  await tick();
  setInterval(tick, POLL_MS);
}

start();
