// The lessons page: each lesson runs one experiment on the live `kith dev` cluster through the
// public API and the playground routes, narrates it step by step, and ends with evidence.
// Every wait has a deadline and every loop a bound, so a lesson always ends (with evidence or
// with the reason it could not finish). The evidence is also in each `.evidence` element's
// data-* attributes, which the browser test reads.
// Refuses: routes a `kith dev` node does not offer, and running two lessons at once.
import { refreshMembers, knownMembers, fetchAny, getJson, el, clock, why as explain } from "./common.js";

const POLL_MS = 500;
const WRITE_EVERY_MS = 100;
const WRITES_MAX = 1200; // two minutes of writes at most, well under the list limit
const ELECTION_WAIT_MS = 30000;
const CATCH_UP_WAIT_MS = 30000;
const RESTART_WAIT_MS = 30000;
const WRITES_AFTER_ELECTION_MS = 3000;
const CUTOFF_WRITES = 40;
const SYNC_WRITES = 20;
const SYNC_WRITE_GAP_MS = 150; // slow enough to watch each entry travel
const LOG_ENTRIES_SHOWN = 16;
const LOG_WAIT_MS = 2000;
const LISTEN_MS = 3000;
const BURST_READS = 300;
const BURST_IN_FLIGHT = 6;
const LEDGER_WRITES = 10;
const FILE_BYTES = 2500000; // three chunks of at most 1 MiB
const JOIN_WAIT_MS = 60000;
const NODES_MAX = 9; // what `kith dev` runs at most
const RATE_WINDOW_MS = 900;
const TALK_WRITES = 40;
const PUZZLE_SIDE = 8; // tiles per row and per column: 64 jobs
const TILE_PX = 16; // pixels per tile side, drawn in the browser
const WORKER_COLOURS = ["#2458d6", "#0d7a4f", "#c45a00", "#b3261e"];
const JOBS_WAIT_MS = 120000;
const JOBS_POLL_MS = 250;
const ENQUEUE_IN_FLIGHT = 4;
const JOB_BURST = 30;
const JOB_LIST_MAX = 500; // what GET /v1/jobs lists at most
const TERM_COLOURS = ["#2458d6", "#0d7a4f", "#a15c00", "#6b4fbb", "#b3261e", "#00798c"];

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The plain-words meaning of every number the page shows, opened by its "?". */
const MEANING = {
  role: "What the node does right now. The leader orders every change; followers copy it; a candidate is asking for votes in an election; down means it does not answer.",
  term: "The election number. It goes up by one each time a node asks to become leader, and a leader rules for one term. A jump in the term means an election happened.",
  log: "The number of the newest entry this node has written down in its log, the ordered list of every change.",
  commit: "The newest entry this node knows a majority has stored. From then on it can never be undone, even if the leader dies.",
  applied: "The newest entry this node has carried out on its own copy of the data. It follows the commit number closely.",
  lag: "How many entries the leader has that this node has not stored yet. 0 means it is up to date; it grows while a node cannot hear the leader.",
  acked: "Writes the cluster answered with yes (2xx). A yes means a majority stored the write on disk.",
  lost: "Acknowledged writes that could not be read back afterwards. kith promises this is always 0.",
  after: "Writes acknowledged after the new leader was elected: the cluster kept working without the dead node.",
  election: "How long the cluster went without a leader: the others wait for a heartbeat that never comes, then vote.",
  peak: "The most entries the cut-off node was behind while it could not hear the leader.",
  catchup: "Time from healing the network until the node had every entry again.",
  committed: "How many entries this node knows are committed: stored by a majority, so they can never be undone.",
  agree: "Whether every node holds the same entry (same term) at every number they both have. Raft guarantees it for committed entries.",
  rate: "Messages per second this node sent on this link, counted by the sender: heartbeats, new log entries, votes, forwarded writes and the rest together. The table below splits them by kind.",
  appends: "Messages carrying new log entries: the leader sending the changes it has put in order, so every follower writes them down too.",
  heartbeats: "Messages with no entries in them: the leader saying \"I am still here\" (and how far the log is agreed), many times a second. A follower that stops hearing them starts an election.",
  votes: "Requests for a vote: a node that heard no heartbeat for a while asks the others to make it leader. Only during an election.",
  snapshots: "Pieces of a snapshot: a copy of all the data at once, sent to a node so far behind that the log entries it misses were already thrown away.",
  forwards: "Writes a follower received from a client and passed on to the leader, since only the leader may put changes in order.",
  queries: "Other questions to the leader: how far the log is agreed before a read, how far each node has copied, or a change of members.",
  chunks: "File pieces stored on, fetched from, or looked for on another node: how files are kept in three copies.",
  link: "One direction between two nodes: the first sends, the second receives. Each node counts what it sends.",
  rest: "Messages per second the leader sent to all followers while nobody wrote: its heartbeats.",
  busy: "Messages per second the leader sent to all followers while the page wrote: heartbeats and new entries.",
  chunks: "The pieces kith cut the file into. Each is stored, and checked by its fingerprint, on its own.",
  copies: "The fewest nodes holding any one chunk (and answering). Three copies mean two nodes can fail and the file is still there.",
  intact: "Whether the file downloaded with one holder dead was byte for byte the file uploaded.",
  verified: "The entry whose fingerprint every node was asked for: the newest one they all have.",
  agreeing: "Nodes whose fingerprint at that entry is the same as most others': they hold the same history.",
  served: "Requests this node answered during the burst (the page's own status checks included).",
  share: "The smallest node's share of the burst against a perfectly fair share: 100% means exactly even.",
  voters: "Members whose vote counts: a change is committed once a majority of them stored it.",
  learner: "Whether the table showed the new node as a learner (copying, no vote) before it became a voter. A quick catch-up can make that moment too short to see.",
  tiles: "Tiles whose job a worker finished. The puzzle is solved when all 64 are done.",
  alone: "Time from putting the first tile on the queue until one worker had finished all of them.",
  together: "Time from putting the first tile on the queue until three workers had finished all of them.",
  speedup: "How many times faster three workers solved the puzzle than one. Three friends cannot be quite three times faster: taking each piece and saying it is done costs a little time too.",
  madeby: "The workers that finished at least one tile. Each takes the next tile from the queue when it is free; nobody hands them out.",
  jobs: "Jobs this worker finished during the burst. A worker takes the next job when it is done with the last, so busy workers and idle ones even out.",
  entry: "One change in the log, numbered in order. Its colour is the term it was written in; a solid box is committed, a hollow one only stored.",
};

/** The "?" that opens the meaning of `key`. */
function why(key) {
  return explain(key, MEANING[key]);
}

// ---- The live table --------------------------------------------------------------------

let cluster = null; // the latest /v1/cluster answer
let preferred = undefined; // the member that answered last (skips dead ones first)

const COLUMNS = [["node", null], ["role", "role"], ["term", "term"], ["log", "log"],
  ["commit", "commit"], ["applied", "applied"], ["lag", "lag"]];

function roleOf(m) {
  if (!m.reachable) return "down";
  if (!m.voter) return "learner";
  return m.role ?? "follower";
}

function drawNow() {
  const head = $("now-head");
  if (!head.children.length) {
    head.append(...COLUMNS.map(([name, key]) => el("th", { scope: "col" }, name, key ? why(key) : null)));
  }
  if (!cluster) return;
  $("now-body").replaceChildren(...cluster.members.map((m) => {
    const role = roleOf(m);
    const cells = [`node ${m.id}`, el("span", { class: `badge ${role}` }, role), m.term ?? "–",
      m.last_log_index ?? "–", m.commit_index ?? "–", m.applied_index ?? "–",
      m.lag ?? (m.id === cluster.leader_id ? 0 : "–")];
    return el("tr", { "data-node": m.id, "data-role": role }, cells.map((c) => el("td", {}, c)));
  }));
  $("served-by").textContent = `served by node ${cluster.node_id}`;
}

let polling = false;

async function poll() {
  if (polling) return;
  polling = true;
  try {
    await readCluster();
    await readLogs();
  } catch {
    $("served-by").textContent = "no node answers";
  } finally {
    polling = false;
  }
}

/** /v1/cluster from the member that answered last, falling over to the others. */
async function readCluster() {
  const { response, base } = await fetchAny("/v1/cluster", { timeoutMs: 3000 }, preferred);
  if (!response.ok) throw new Error(`/v1/cluster: HTTP ${response.status}`);
  preferred = base;
  cluster = await response.json();
  noteLinkCounters(cluster);
  // The member list only needs filling once: the lessons here do not change membership.
  if (knownMembers().length < cluster.members.length) await refreshMembers().catch(() => {});
  drawNow();
  return cluster;
}

function urlOf(id) {
  const m = cluster?.members.find((x) => x.id === id);
  return m ? `${window.location.protocol}//${m.addr}` : undefined;
}

/** Polls `probe` (which returns a value or null) until it gives a value or `ms` pass. */
async function waitFor(ms, probe) {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    try {
      const value = await probe();
      if (value !== null && value !== undefined && value !== false) return value;
    } catch {
      // A member may be down in the middle of a lesson; the next poll tries another.
    }
    await sleep(POLL_MS);
  }
  return null;
}

// ---- What lessons share ----------------------------------------------------------------

class Narration {
  constructor(lesson) {
    this.steps = $(`${lesson}-steps`);
    this.evidence = $(`${lesson}-evidence`);
    this.steps.replaceChildren();
    this.evidence.replaceChildren();
    delete this.evidence.dataset.done;
    this.evidence.className = "evidence";
  }

  step(text) {
    this.steps.append(el("li", {}, el("time", {}, clock()), text));
  }

  /** Shows the evidence: rows of [label, value, meaning key], and the verdict. */
  finish(ok, verdict, rows, data) {
    this.evidence.className = `evidence ${ok ? "ok" : "bad"}`;
    this.evidence.replaceChildren(
      el("p", { class: "verdict" }, verdict),
      el("dl", {}, rows.flatMap(([label, value, key]) => [
        el("dt", {}, label, key ? why(key) : null), el("dd", { "data-field": label }, String(value))])),
    );
    for (const [k, v] of Object.entries(data)) this.evidence.dataset[k] = String(v);
    this.evidence.dataset.done = ok ? "ok" : "failed";
  }
}

async function playground(id, action) {
  const { response } = await fetchAny(`/v1/dev/nodes/${id}/${action}`, { method: "POST", timeoutMs: 15000 }, preferred);
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(`${action} node ${id}: ${body?.error?.message ?? `HTTP ${response.status}`}`);
  }
}

/**
 * Writes `prefix<n>` = n every 100 ms until stopped (at most WRITES_MAX). Each write goes to
 * the member that answered the last one; a failed write is simply not counted: only a 2xx is
 * an acknowledgement.
 */
function startWriter(prefix, onAck) {
  const writer = { acked: [], attempted: 0, stopped: false };
  writer.done = (async () => {
    let base = preferred;
    while (!writer.stopped && writer.attempted < WRITES_MAX) {
      const started = performance.now();
      const n = ++writer.attempted;
      try {
        const { response, base: answered } = await fetchAny(`/v1/kv/${prefix}${n}`,
          { method: "PUT", body: String(n), timeoutMs: 3000 }, base);
        base = answered;
        if (response.ok) {
          writer.acked.push({ n, at: performance.now() });
          onAck?.(writer);
        }
      } catch {
        // No member answered in time: not acknowledged, so not counted.
      }
      await sleep(Math.max(0, WRITE_EVERY_MS - (performance.now() - started)));
    }
  })();
  writer.stop = async () => { writer.stopped = true; await writer.done; };
  return writer;
}

/** The acknowledged writes that cannot be read back under `prefix`. */
async function lostWrites(prefix, acked) {
  const { items } = await getJson(`/v1/kv?prefix=${encodeURIComponent(prefix)}&limit=10000`, preferred);
  const found = new Set(items.map((i) => i.key));
  return acked.filter(({ n }) => !found.has(`${prefix}${n}`)).length;
}

/**
 * The cluster once it has a leader and every member answers (after an earlier lesson's
 * restart or heal it may still be electing); waits at most ELECTION_WAIT_MS.
 */
async function settled(say) {
  const steady = (c) => (c.leader_id && c.members.every((m) => m.reachable) ? c : null);
  const now = steady(await readCluster().catch(() => ({ members: [] })));
  if (now) return now;
  say("Waiting for the cluster to settle: a leader, and every node answering…");
  const later = await waitFor(ELECTION_WAIT_MS, async () => steady(await readCluster()));
  if (!later) throw new Error(`the cluster did not settle within ${ELECTION_WAIT_MS / 1000} s`);
  return later;
}

function runId() {
  return `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

// ---- Fault tolerance -------------------------------------------------------------------

async function faultLesson(say) {
  const before = await settled(say);
  const oldLeader = before.leader_id;
  const oldTerm = before.term;
  const prefix = `learn/fault/${runId()}/`;
  const counter = el("span", { class: "counter" }, "0");
  say(el("span", {}, "Writing a key every 100 ms. Acknowledged so far: ", counter));
  const writer = startWriter(prefix, (w) => { counter.textContent = String(w.acked.length); });
  await sleep(1500);
  say(`Node ${oldLeader} leads in term ${oldTerm}. Killing it now (SIGKILL: no goodbye).`);
  // The playground call must not go to the node being killed: it forwards to the supervisor.
  preferred = cluster.members.map((m) => urlOf(m.id)).find((u) => u !== urlOf(oldLeader));
  const killedAt = performance.now();
  await playground(oldLeader, "kill");
  const elected = await waitFor(ELECTION_WAIT_MS, async () => {
    const c = await readCluster();
    return c.leader_id && c.leader_id !== oldLeader && c.term > oldTerm ? c : null;
  });
  if (!elected) {
    await writer.stop();
    await playground(oldLeader, "restart").catch(() => {});
    throw new Error(`no new leader within ${ELECTION_WAIT_MS / 1000} s`);
  }
  const electedAt = performance.now();
  const electionMs = Math.round(electedAt - killedAt);
  say(`Election over: node ${elected.leader_id} leads in term ${elected.term}, ${electionMs} ms after the kill.`);
  await sleep(WRITES_AFTER_ELECTION_MS);
  await writer.stop();
  const after = writer.acked.filter((a) => a.at > electedAt).length;
  say(`Stopped writing: ${writer.acked.length} of ${writer.attempted} writes acknowledged. Reading every acknowledged one back…`);
  const lost = await lostWrites(prefix, writer.acked);
  say(`Restarting node ${oldLeader}…`);
  await playground(oldLeader, "restart");
  const back = await waitFor(RESTART_WAIT_MS, async () => {
    const c = await readCluster();
    return c.members.find((m) => m.id === oldLeader)?.reachable ? c : null;
  });
  say(back ? `Node ${oldLeader} is back, as a follower of node ${back.leader_id}.` : `Node ${oldLeader} has not answered yet; the dashboard shows when it does.`);
  return {
    ok: lost === 0 && after > 0,
    verdict: lost === 0 ? `Node ${oldLeader} died, node ${elected.leader_id} took over, and lost: 0.` : `lost: ${lost} acknowledged writes!`,
    rows: [["leader before", `node ${oldLeader} (term ${oldTerm})`, "term"],
      ["leader after", `node ${elected.leader_id} (term ${elected.term})`, "term"],
      ["until a new leader was seen", `${electionMs} ms`, "election"],
      ["acknowledged", writer.acked.length, "acked"],
      ["acknowledged after the election", after, "after"],
      ["lost", lost, "lost"]],
    data: { oldLeader, newLeader: elected.leader_id, oldTerm, newTerm: elected.term,
      acked: writer.acked.length, after, lost },
  };
}

// ---- Cut off ---------------------------------------------------------------------------

async function cutoffLesson(say) {
  const before = await settled(say);
  const leader = before.leader_id;
  const followers = before.members.filter((m) => m.id !== leader && m.reachable && m.voter);
  // Prefer a node other than the one serving this page, so the page keeps its own node.
  const target = followers.find((m) => m.id !== before.node_id) ?? followers[0];
  if (!target) throw new Error("no follower is up to cut off");
  const id = target.id;
  preferred = urlOf(leader);
  say(`Cutting node ${id} off from the others. Its process keeps running.`);
  await playground(id, "isolate");
  let healed = false;
  try {
    const prefix = `learn/cutoff/${runId()}/`;
    say(`Writing ${CUTOFF_WRITES} keys while node ${id} cannot hear them…`);
    let acked = 0;
    for (let n = 1; n <= CUTOFF_WRITES; n++) {
      const { response } = await fetchAny(`/v1/kv/${prefix}${n}`, { method: "PUT", body: String(n), timeoutMs: 3000 }, preferred);
      if (response.ok) acked++;
    }
    const behind = await waitFor(CATCH_UP_WAIT_MS, async () => {
      const c = await readCluster();
      const lag = c.members.find((m) => m.id === id)?.lag;
      return lag >= acked ? lag : null;
    });
    const peak = behind ?? cluster.members.find((m) => m.id === id)?.lag ?? 0;
    say(`${acked} writes acknowledged by the others; node ${id} is ${peak} entries behind.`);
    say(`Healing the network…`);
    await playground(id, "heal");
    healed = true;
    const healedAt = performance.now();
    const caught = await waitFor(CATCH_UP_WAIT_MS, async () => {
      const c = await readCluster();
      const m = c.members.find((x) => x.id === id);
      return m?.reachable && m.lag === 0 ? c : null;
    });
    const catchupMs = Math.round(performance.now() - healedAt);
    if (!caught) throw new Error(`node ${id} did not catch up within ${CATCH_UP_WAIT_MS / 1000} s`);
    say(`Node ${id} has every entry again: lag 0.`);
    return {
      ok: peak > 0,
      verdict: `Node ${id} fell ${peak} entries behind while cut off, and caught up: lag 0.`,
      rows: [["cut-off node", `node ${id}`, null],
        ["writes while cut off", acked, "acked"],
        ["most entries behind", peak, "peak"],
        ["lag after the heal", 0, "lag"],
        ["catching up took", `${catchupMs} ms`, "catchup"]],
      data: { node: id, acked, peak, lag: 0 },
    };
  } finally {
    if (!healed) await playground(id, "heal").catch(() => {});
  }
}

// ---- Communication ---------------------------------------------------------------------

let linkReading = null; // { at, counts: Map<"from>to", messages> } from the previous poll
let linkRates = new Map(); // "from>to" → messages per second between the last two polls
let kindRates = new Map(); // "from>to" → { kind: messages per second } between the last two polls
/** The kinds of peer message each link counts, in the order the table shows them. */
const KINDS = [["heartbeats", "heartbeats"], ["appends", "entries"], ["forwards", "forwarded writes"],
  ["queries", "questions"], ["votes", "votes"], ["snapshots", "snapshot pieces"], ["chunks", "file chunks"]];

/** Every directed link's message counter in a cluster answer, keyed "from>to". */
function linkCounts(c, kind) {
  const idByAddr = new Map(c.members.map((m) => [m.addr, m.id]));
  const counts = new Map();
  for (const m of c.members) {
    for (const l of m.links ?? []) {
      const to = idByAddr.get(l.addr);
      const n = kind ? l.kinds?.[kind] : l.messages;
      if (to !== undefined && n !== undefined) counts.set(`${m.id}>${to}`, n);
    }
  }
  return counts;
}

/** Every directed link's counters by kind, keyed "from>to". */
function linkKinds(c) {
  const idByAddr = new Map(c.members.map((m) => [m.addr, m.id]));
  const kinds = new Map();
  for (const m of c.members) {
    for (const l of m.links ?? []) {
      const to = idByAddr.get(l.addr);
      if (to !== undefined && l.kinds) kinds.set(`${m.id}>${to}`, l.kinds);
    }
  }
  return kinds;
}

function noteLinkCounters(c) {
  const reading = { at: performance.now(), counts: linkCounts(c), kinds: linkKinds(c) };
  // Readings taken moments apart (a lesson polls fast) would show noise, not a rate.
  if (linkReading && reading.at - linkReading.at < RATE_WINDOW_MS) {
    drawMap();
    return;
  }
  if (linkReading) {
    const seconds = Math.max(0.001, (reading.at - linkReading.at) / 1000);
    linkRates = new Map();
    kindRates = new Map();
    for (const [key, n] of reading.counts) {
      const before = linkReading.counts.get(key);
      // A restarted node starts counting from 0 again: no rate until the next reading.
      if (before === undefined || n < before) continue;
      linkRates.set(key, (n - before) / seconds);
      const [now, then] = [reading.kinds.get(key), linkReading.kinds.get(key)];
      if (now && then) {
        kindRates.set(key, Object.fromEntries(KINDS.map(([k]) =>
          [k, Math.max(0, (now[k] ?? 0) - (then[k] ?? 0)) / seconds])));
      }
    }
  }
  linkReading = reading;
  drawMap();
  drawKinds();
}

/** The table of messages per second on each link, by kind. */
function drawKinds() {
  const box = $("talk-kinds");
  if (!box || !cluster) return;
  const members = cluster.members;
  const head = el("tr", {}, el("th", { scope: "col" }, "link", why("link")),
    KINDS.map(([k, label]) => el("th", { scope: "col" }, label, why(k))));
  const rows = [];
  for (const a of members) {
    for (const b of members) {
      if (a.id === b.id) continue;
      const key = `${a.id}>${b.id}`;
      const rates = kindRates.get(key);
      rows.push(el("tr", { "data-link": key }, el("th", { scope: "row" }, `${a.id} → ${b.id}`),
        KINDS.map(([k]) => el("td", { "data-kind": k, class: rates?.[k] >= 0.5 ? "busy" : "" },
          rates ? `${rates[k].toFixed(1)}/s` : "–"))));
    }
  }
  box.replaceChildren(el("table", { class: "grid kinds" }, el("thead", {}, head), el("tbody", {}, rows)));
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function drawMap() {
  const map = $("talk-map");
  if (!map || !cluster) return;
  const members = cluster.members;
  const at = new Map(members.map((m, i) => {
    const angle = -Math.PI / 2 + (2 * Math.PI * i) / members.length;
    return [m.id, [180 + 95 * Math.cos(angle), 120 + 90 * Math.sin(angle)]];
  }));
  const parts = [svg("defs", {})];
  const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#5b6473" }));
  parts[0].append(marker);
  for (const a of members) {
    for (const b of members) {
      if (a.id === b.id) continue;
      const rate = linkRates.get(`${a.id}>${b.id}`) ?? 0;
      const [x1, y1] = at.get(a.id);
      const [x2, y2] = at.get(b.id);
      const len = Math.hypot(x2 - x1, y2 - y1);
      const [ux, uy] = [(x2 - x1) / len, (y2 - y1) / len];
      // The two directions of a link side by side; arrows stop short of the circles.
      const [ox, oy] = [-uy * 7, ux * 7];
      const [sx, sy, ex, ey] = [x1 + ux * 24 + ox, y1 + uy * 24 + oy, x2 - ux * 24 + ox, y2 - uy * 24 + oy];
      const busy = rate >= 0.5;
      parts.push(svg("line", { x1: sx, y1: sy, x2: ex, y2: ey, class: busy ? "wire busy" : "wire", "marker-end": "url(#arrow)",
        "stroke-width": Math.min(6, 1 + Math.log2(1 + rate)), "data-from": a.id, "data-to": b.id, "data-rate": rate.toFixed(1) }));
      const [tx, ty] = [sx + (ex - sx) * 0.3 + ox * 1.6, sy + (ey - sy) * 0.3 + oy * 1.6];
      parts.push(svg("text", { x: tx, y: ty + 4, class: "rate", "text-anchor": "middle" }, `${Math.round(rate)}/s`));
    }
  }
  for (const m of members) {
    const [x, y] = at.get(m.id);
    const role = roleOf(m);
    parts.push(svg("circle", { cx: x, cy: y, r: 20, class: `dot ${role}` }));
    parts.push(svg("text", { x, y: y + 5, class: "dot-label", "text-anchor": "middle" }, m.id));
  }
  map.replaceChildren(...parts);
}

/**
 * Messages per second (of `kind`, or of every kind) on the links `pairs` ([from, to]) between
 * two cluster readings.
 */
function ratesBetween(first, second, seconds, pairs, kind) {
  const a = linkCounts(first, kind);
  const b = linkCounts(second, kind);
  let total = 0;
  for (const [from, to] of pairs) {
    const key = `${from}>${to}`;
    if (a.has(key) && b.has(key)) total += Math.max(0, b.get(key) - a.get(key));
  }
  return total / seconds;
}

async function talkLesson(say) {
  const first = await settled(say);
  const leader = first.leader_id;
  const followers = first.members.filter((m) => m.id !== leader && m.reachable).map((m) => m.id);
  if (!followers.length) throw new Error("no follower is up to write through");
  const via = followers[0];
  const out = followers.map((f) => [leader, f]);
  say(`Listening for ${LISTEN_MS / 1000} s while nobody writes…`);
  const t0 = performance.now();
  await sleep(LISTEN_MS);
  const second = await readCluster();
  const t1 = performance.now();
  const rest = ratesBetween(first, second, (t1 - t0) / 1000, out);
  const restHeartbeats = ratesBetween(first, second, (t1 - t0) / 1000, out, "heartbeats");
  say(`At rest node ${leader}, the leader, sent ${rest.toFixed(1)} messages per second to its followers, ${restHeartbeats.toFixed(1)} of them heartbeats.`);
  say(`Writing ${TALK_WRITES} keys through node ${via}, a follower…`);
  const prefix = `learn/talk/${runId()}/`;
  let acked = 0;
  for (let n = 1; n <= TALK_WRITES; n++) {
    const { response } = await fetchAny(`/v1/kv/${prefix}${n}`, { method: "PUT", body: String(n), timeoutMs: 3000 }, urlOf(via));
    if (response.ok) acked++;
  }
  const third = await readCluster();
  const t2 = performance.now();
  const busy = ratesBetween(second, third, (t2 - t1) / 1000, out);
  const busyAppends = ratesBetween(second, third, (t2 - t1) / 1000, out, "appends");
  const forwarded = Math.round(ratesBetween(second, third, 1, [[via, leader]], "forwards"));
  say(`While writing, the leader sent ${busy.toFixed(1)} messages per second, ${busyAppends.toFixed(1)} of them carrying entries, and node ${via} forwarded the leader ${forwarded} messages of writes.`);
  return {
    ok: acked === TALK_WRITES && forwarded > 0 && restHeartbeats > 0 && busyAppends > 0,
    verdict: `Node ${via} passed the writes to node ${leader} in ${forwarded} messages; the leader sent them on to everyone.`,
    rows: [["leader's messages/s at rest", rest.toFixed(1), "rest"],
      ["of which heartbeats", restHeartbeats.toFixed(1), "heartbeats"],
      ["leader's messages/s while writing", busy.toFixed(1), "busy"],
      ["of which carrying entries", busyAppends.toFixed(1), "appends"],
      [`writes node ${via} forwarded to the leader, in messages`, forwarded, "forwards"],
      ["writes acknowledged", acked, "acked"]],
    data: { leader, via, rest: rest.toFixed(1), busy: busy.toFixed(1), forwarded, acked,
      restHeartbeats: restHeartbeats.toFixed(1), busyAppends: busyAppends.toFixed(1) },
  };
}

// ---- Synchronization -------------------------------------------------------------------

let logs = new Map(); // node id → its /v1/dev/log answer, or null when it did not answer

/** Each member's newest log entries, asked of the member itself. */
async function readLogs() {
  if (!cluster) return logs;
  const answers = await Promise.all(cluster.members.map(async (m) => {
    // Asked of the member itself, never failed over: only its own answer is its log.
    if (!m.reachable) return [m.id, null];
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), LOG_WAIT_MS);
    try {
      const response = await fetch(`${urlOf(m.id)}/v1/dev/log?count=${LOG_ENTRIES_SHOWN}`, { signal: controller.signal });
      return [m.id, response.ok ? await response.json() : null];
    } catch {
      return [m.id, null];
    } finally {
      clearTimeout(timer);
    }
  }));
  logs = new Map(answers);
  drawLogs();
  return logs;
}

function drawLogs() {
  const box = $("sync-logs");
  if (!box) return;
  const rows = [...logs.entries()].sort(([a], [b]) => a - b).map(([id, log]) => {
    if (!log) return el("div", { class: "logrow down", "data-node": id }, el("span", { class: "who" }, `node ${id}`), "does not answer");
    const entries = log.entries.map((e) => {
      const committed = e.index <= log.commit_index;
      const colour = TERM_COLOURS[e.term % TERM_COLOURS.length];
      const entry = el("span", {
        class: `entry ${committed ? "committed" : "uncommitted"}`,
        title: `entry ${e.index}, term ${e.term}, ${e.kind}, ${committed ? "committed" : "stored, not committed yet"}`,
        "data-index": e.index, "data-term": e.term,
      }, e.index);
      entry.style.setProperty("--term", colour);
      return entry;
    });
    return el("div", { class: "logrow", "data-node": id },
      el("span", { class: "who" }, `node ${id}`, el("small", {}, ` ${log.role}, term ${log.term}`)),
      el("span", { class: "entries" }, entries),
      el("span", { class: "commit" }, `committed ${log.commit_index}`));
  });
  box.replaceChildren(
    el("p", { class: "legend" }, "Each box is one log entry", why("entry"), "; each row ends with the node's commit number", why("committed"), "."),
    ...rows);
}

/** True when every pair of logs holds the same term at every index both still hold. */
function logsAgree(answers) {
  const seen = new Map();
  for (const log of answers) {
    for (const e of log.entries) {
      if (seen.has(e.index) && seen.get(e.index) !== e.term) return false;
      seen.set(e.index, e.term);
    }
  }
  return true;
}

async function syncLesson(say) {
  const before = await settled(say);
  const startCommit = before.commit_index;
  const prefix = `learn/sync/${runId()}/`;
  say(`The commit number is ${startCommit}. Writing ${SYNC_WRITES} keys, one every ${SYNC_WRITE_GAP_MS} ms, through node ${before.leader_id}, the leader.`);
  preferred = urlOf(before.leader_id);
  let acked = 0;
  let lastRevision = 0;
  for (let n = 1; n <= SYNC_WRITES; n++) {
    const started = performance.now();
    const { response } = await fetchAny(`/v1/kv/${prefix}${n}`, { method: "PUT", body: String(n), timeoutMs: 3000 }, preferred);
    if (response.ok) {
      acked++;
      lastRevision = (await response.json()).revision;
    }
    await readLogs().catch(() => {});
    await sleep(Math.max(0, SYNC_WRITE_GAP_MS - (performance.now() - started)));
  }
  say(`${acked} writes acknowledged (the last one is revision ${lastRevision}). Waiting for every node to have committed them…`);
  const after = await readCluster();
  const target = after.members.find((m) => m.id === after.leader_id)?.last_log_index;
  if (!target) throw new Error("the leader did not answer after the writes");
  const held = await waitFor(CATCH_UP_WAIT_MS, async () => {
    await readCluster();
    const answers = [...(await readLogs()).values()];
    const all = answers.every((log) => log && log.commit_index >= target && log.entries.some((e) => e.index === target));
    return all ? answers : null;
  });
  if (!held) throw new Error(`not every node committed entry ${target} within ${CATCH_UP_WAIT_MS / 1000} s`);
  const agree = logsAgree(held);
  const endCommit = Math.min(...held.map((log) => log.commit_index));
  say(`Every node holds entry ${target} and has committed it.`);
  return {
    ok: agree && acked === SYNC_WRITES,
    verdict: agree ? `${held.length} nodes, one order: the same entries, with the same terms, at the same numbers.` : "The logs disagree!",
    rows: [["writes acknowledged", acked, "acked"],
      ["commit number before", startCommit, "commit"],
      ["commit number after, on every node", endCommit, "commit"],
      ["logs agree", agree ? "yes" : "no", "agree"]],
    data: { acked, from: startCommit, to: endCommit, target, agree, nodes: held.length },
  };
}

// ---- Load balancing --------------------------------------------------------------------

function drawLoad(served) {
  const max = Math.max(1, ...served.values());
  $("load-bars").replaceChildren(...[...served.entries()].map(([id, n]) => {
    const fill = el("div", { class: "fill" });
    fill.style.width = `${(100 * n) / max}%`;
    return el("div", { class: "bar", "data-node": id }, `node ${id}`, el("div", { class: "track" }, fill), `${n}`);
  }));
}

/** Jobs finished per worker, as bars beside the requests per node. */
function drawJobs(byWorker) {
  const max = Math.max(1, ...byWorker.values());
  $("load-jobs").replaceChildren(...[...byWorker.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, n]) => {
    const fill = el("div", { class: "fill" });
    fill.style.width = `${(100 * n) / max}%`;
    fill.style.background = workerColour(name);
    return el("div", { class: "bar", "data-worker": name }, name, el("div", { class: "track" }, fill), `${n}`);
  }));
}

async function loadLesson(say) {
  const before = await settled(say);
  const ids = before.members.map((m) => m.id);
  const start = new Map(before.members.map((m) => [m.id, m.requests_total ?? 0]));
  const key = `learn/load/${runId()}`;
  await fetchAny(`/v1/kv/${key}`, { method: "PUT", body: "candy", timeoutMs: 3000 }, urlOf(before.leader_id));
  say(`Sending ${BURST_READS} reads, taking turns between nodes ${ids.join(", ")}…`);
  let next = 0;
  let answered = 0;
  const worker = async () => {
    while (next < BURST_READS) {
      const turn = next++;
      const id = ids[turn % ids.length];
      try {
        const response = await fetch(`${urlOf(id)}/v1/kv/${key}?consistency=stale`);
        if (response.ok) answered++;
        await response.arrayBuffer();
      } catch {
        // A node that does not answer simply served nothing.
      }
    }
  };
  const ticker = setInterval(async () => {
    const c = await readCluster().catch(() => null);
    if (c) drawLoad(new Map(c.members.map((m) => [m.id, Math.max(0, (m.requests_total ?? 0) - (start.get(m.id) ?? 0))])));
  }, POLL_MS);
  try {
    await Promise.all(Array.from({ length: BURST_IN_FLIGHT }, worker));
  } finally {
    clearInterval(ticker);
  }
  const after = await readCluster();
  const served = new Map(after.members.map((m) => [m.id, Math.max(0, (m.requests_total ?? 0) - (start.get(m.id) ?? 0))]));
  drawLoad(served);
  const fair = BURST_READS / ids.length;
  const least = Math.min(...served.values());
  const share = Math.round((100 * least) / fair);
  say(`${answered} of ${BURST_READS} reads answered; the busiest node served ${Math.max(...served.values())}, the least busy ${least}.`);
  say(`Starting three workers and putting ${JOB_BURST} jobs on a queue…`);
  const byWorker = new Map();
  const jobs = await shareJobs(3, Array.from({ length: JOB_BURST }, (_, n) => ({ n })), (_, worker) => {
    byWorker.set(worker, (byWorker.get(worker) ?? 0) + 1);
    drawJobs(byWorker);
  });
  const busiest = Math.max(...byWorker.values());
  say(`${jobs.done} jobs done by ${byWorker.size} workers in ${(jobs.ms / 1000).toFixed(1)} s; the busiest did ${busiest}.`);
  return {
    ok: answered === BURST_READS && share >= 90 && jobs.done === JOB_BURST && byWorker.size >= 2,
    verdict: `Every node served its share: at least ${least} reads each out of ${BURST_READS}; ${byWorker.size} workers shared ${jobs.done} jobs.`,
    rows: [...[...served.entries()].map(([id, n]) => [`node ${id} served`, n, "served"]),
      ["the least busy node's share of a fair share", `${share}%`, "share"],
      ...[...byWorker.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([w, n]) => [`${w} finished`, `${n} jobs`, "jobs"])],
    data: { answered, least, share, nodes: ids.length, jobs: jobs.done, workers: byWorker.size,
      jobsPerWorker: [...byWorker.values()].join(",") },
  };
}

// ---- Sharing processing: the big puzzle -----------------------------------------------

/** Asks `kith dev` to run `count` workers on `queue` (0 stops them). */
async function setWorkers(count, queue) {
  const { response } = await fetchAny("/v1/dev/workers", {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ count, queue }), timeoutMs: 15000,
  }, preferred);
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(`workers: ${body?.error?.message ?? `HTTP ${response.status}`}`);
  }
}

/**
 * Runs `payloads` as jobs on a fresh queue with `count` of kith dev's workers, calling
 * `onDone(job, worker)` as each finishes. Returns the time from the first job queued until
 * the last one was seen completed, and the jobs each worker finished. The workers are stopped
 * whatever happens.
 */
async function shareJobs(count, payloads, onDone) {
  const queue = `learn-${runId()}`;
  await setWorkers(count, queue);
  try {
    const started = performance.now();
    let next = 0;
    const enqueue = async () => {
      while (next < payloads.length) {
        const payload = payloads[next++];
        const { response } = await fetchAny(`/v1/queues/${queue}/jobs`, {
          method: "POST", headers: { "content-type": "application/json" },
          body: JSON.stringify({ payload, max_attempts: 3, timeout_s: 30 }), timeoutMs: 5000,
        }, preferred);
        if (!response.ok) throw new Error(`a job was refused: HTTP ${response.status}`);
      }
    };
    await Promise.all(Array.from({ length: ENQUEUE_IN_FLIGHT }, enqueue));
    const seen = new Set();
    const byWorker = new Map();
    const deadline = started + JOBS_WAIT_MS;
    while (seen.size < payloads.length && performance.now() < deadline) {
      try {
        const { jobs } = await getJson(`/v1/jobs?queue=${queue}&state=completed&limit=${JOB_LIST_MAX}`, preferred);
        for (const job of jobs) {
          if (seen.has(job.id)) continue;
          seen.add(job.id);
          const worker = String(job.result?.worker ?? "unknown");
          byWorker.set(worker, (byWorker.get(worker) ?? 0) + 1);
          onDone(job, worker);
        }
      } catch {
        // A member may be slow to answer; the next poll asks again.
      }
      if (seen.size < payloads.length) await sleep(JOBS_POLL_MS);
    }
    if (seen.size < payloads.length) {
      throw new Error(`${seen.size} of ${payloads.length} jobs done after ${JOBS_WAIT_MS / 1000} s`);
    }
    return { ms: Math.round(performance.now() - started), byWorker, done: seen.size };
  } finally {
    await setWorkers(0).catch(() => {});
  }
}

/** The colour of worker `name` ("worker-N"). */
function workerColour(name) {
  const n = Number(/(\d+)$/.exec(name)?.[1] ?? 0);
  return WORKER_COLOURS[(n + WORKER_COLOURS.length - 1) % WORKER_COLOURS.length];
}

/** One pixel of the picture, a pattern drawn from `seed`: nothing to download. */
function pixel(seed, x, y) {
  const size = PUZZLE_SIDE * TILE_PX;
  const [cx, cy] = [size * (0.3 + 0.4 * ((seed % 7) / 7)), size * (0.3 + 0.4 * ((seed % 5) / 5))];
  const ring = Math.hypot(x - cx, y - cy) / 9;
  const wave = Math.sin(x / (6 + (seed % 4))) + Math.cos(y / (5 + (seed % 3)));
  const hue = (seed * 47 + ring * 40 + wave * 30) % 360;
  const light = 45 + 15 * Math.sin(ring * 1.7 + wave);
  return `hsl(${hue.toFixed(0)} 70% ${light.toFixed(0)}%)`;
}

/** Paints tile `index` of the picture on `canvas`, tinted with `colour`. */
function paintTile(canvas, seed, index, colour) {
  const ctx = canvas.getContext("2d");
  const [tx, ty] = [(index % PUZZLE_SIDE) * TILE_PX, Math.floor(index / PUZZLE_SIDE) * TILE_PX];
  for (let y = 0; y < TILE_PX; y += 2) {
    for (let x = 0; x < TILE_PX; x += 2) {
      ctx.fillStyle = pixel(seed, tx + x, ty + y);
      ctx.fillRect(x, y, 2, 2);
    }
  }
  ctx.globalAlpha = 0.45;
  ctx.fillStyle = colour;
  ctx.fillRect(0, 0, TILE_PX, TILE_PX);
  ctx.globalAlpha = 1;
}

/** An empty board of 64 tiles, with its title, clock and legend. */
function board(title, workers) {
  const tiles = Array.from({ length: PUZZLE_SIDE * PUZZLE_SIDE }, (_, i) =>
    el("canvas", { class: "tile", width: TILE_PX, height: TILE_PX, "data-tile": i }));
  const clockLine = el("p", { class: "clock" }, "not started");
  const legend = el("p", { class: "legend" }, Array.from({ length: workers }, (_, i) => {
    const name = `worker-${i + 1}`;
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = workerColour(name);
    return el("span", { "data-worker": name }, swatch, name, ": ", el("span", { class: "count" }, "0"));
  }));
  const root = el("div", { class: "board" }, el("h3", {}, title),
    el("div", { class: "tiles", role: "img", "aria-label": `${title}: the picture's 64 tiles` }, tiles),
    clockLine, legend);
  return { root, tiles, clockLine, legend };
}

/** Solves the puzzle on `b` with `count` workers; returns shareJobs' answer. */
async function solve(b, count, seed) {
  const payloads = b.tiles.map((_, tile) => ({ tile, seed }));
  b.clockLine.textContent = "working…";
  const ticker = setInterval(() => { b.clockLine.textContent = `working… ${b.done ?? 0} of 64 tiles`; }, JOBS_POLL_MS);
  try {
    return await shareJobs(count, payloads, (job, worker) => {
      const tile = Number(job.payload?.tile);
      const canvas = b.tiles[tile];
      if (!canvas) return;
      paintTile(canvas, seed, tile, workerColour(worker));
      canvas.dataset.worker = worker;
      canvas.title = `tile ${tile}, made by ${worker}`;
      b.done = (b.done ?? 0) + 1;
      const count = b.legend.querySelector(`[data-worker="${worker}"] .count`);
      if (count) count.textContent = String(Number(count.textContent) + 1);
    });
  } finally {
    clearInterval(ticker);
  }
}

async function puzzleLesson(say) {
  await settled(say);
  const seed = Math.floor(Math.random() * 1000);
  const alone = board("One worker", 1);
  const together = board("Three workers", 3);
  $("puzzle-boards").replaceChildren(alone.root, together.root);
  say("Starting one worker and putting the 64 tiles on a queue…");
  const one = await solve(alone, 1, seed);
  alone.clockLine.replaceChildren(`done in ${(one.ms / 1000).toFixed(1)} s`, why("alone"));
  say(`One worker made all ${one.done} tiles in ${(one.ms / 1000).toFixed(1)} s. Now three workers, a fresh queue, the same picture…`);
  const three = await solve(together, 3, seed);
  together.clockLine.replaceChildren(`done in ${(three.ms / 1000).toFixed(1)} s`, why("together"));
  const speedup = one.ms / Math.max(1, three.ms);
  say(`Three workers made all ${three.done} tiles in ${(three.ms / 1000).toFixed(1)} s.`);
  const shares = [...three.byWorker.entries()].sort(([a], [b]) => a.localeCompare(b));
  return {
    ok: one.done === 64 && three.done === 64 && three.ms < one.ms && three.byWorker.size === 3,
    verdict: three.ms < one.ms
      ? `Three workers finished the puzzle ${speedup.toFixed(1)} times faster than one.`
      : "Three workers were not faster than one!",
    rows: [["tiles done by one worker", one.done, "tiles"],
      ["one worker took", `${(one.ms / 1000).toFixed(1)} s`, "alone"],
      ["tiles done by three workers", three.done, "tiles"],
      ["three workers took", `${(three.ms / 1000).toFixed(1)} s`, "together"],
      ["faster by", `${speedup.toFixed(1)}×`, "speedup"],
      ...shares.map(([w, n]) => [`tiles ${w} made`, n, "madeby"])],
    data: { tilesOne: one.done, tilesThree: three.done, msOne: one.ms, msThree: three.ms,
      workersOne: one.byWorker.size, workersThree: three.byWorker.size, faster: three.ms < one.ms },
  };
}

// ---- Sharing storage and redundancy --------------------------------------------------------

function randomBytes(n) {
  const bytes = new Uint8Array(n);
  // getRandomValues fills at most 65,536 bytes per call.
  for (let at = 0; at < n; at += 65536) crypto.getRandomValues(bytes.subarray(at, Math.min(n, at + 65536)));
  return bytes;
}

/** The file's chunk placement, drawn as chunks × nodes; returns the fewest holders of a chunk. */
async function placement(path) {
  const manifest = await getJson(`/v1/files/${path}?explain=1`, preferred);
  const ids = cluster.members.map((m) => m.id);
  const head = el("tr", {}, el("th", { scope: "col" }, "chunk"), ids.map((id) => el("th", { scope: "col" }, `node ${id}`)));
  const rows = manifest.chunks.map((c) => el("tr", { "data-chunk": c.index },
    el("th", { scope: "row" }, `#${c.index}`),
    ids.map((id) => el("td", { class: c.holders.includes(id) ? "held" : "" }, c.holders.includes(id) ? "●" : ""))));
  $("store-chunks").replaceChildren(el("table", { class: "grid chunkgrid" }, el("thead", {}, head), el("tbody", {}, rows)));
  return { manifest, copies: Math.min(...manifest.chunks.map((c) => c.holders.length)) };
}

async function storeLesson(say) {
  const before = await settled(say);
  const path = `learn/redundancy/${runId()}.bin`;
  const original = randomBytes(FILE_BYTES);
  say(`Uploading ${FILE_BYTES.toLocaleString()} random bytes as ${path}…`);
  const { response } = await fetchAny(`/v1/files/${path}`, { method: "PUT", body: original, headers: { "content-type": "application/octet-stream" }, timeoutMs: 30000 }, preferred);
  if (!response.ok) throw new Error(`upload refused: HTTP ${response.status}`);
  const first = await placement(path);
  say(`${first.manifest.chunk_count} chunks, each on ${first.copies} nodes.`);
  // A holder that neither leads nor serves this page: the lesson is about the data.
  const holders = new Set(first.manifest.chunks.flatMap((c) => c.holders));
  const victim = before.members.map((m) => m.id)
    .find((id) => holders.has(id) && id !== before.leader_id && id !== before.node_id)
    ?? [...holders].find((id) => id !== before.leader_id);
  if (!victim) throw new Error("no follower holds a chunk");
  preferred = urlOf(before.leader_id);
  say(`Killing node ${victim}, which holds chunks of the file…`);
  await playground(victim, "kill");
  await waitFor(ELECTION_WAIT_MS, async () => {
    const c = await readCluster();
    return c.leader_id && !c.members.find((m) => m.id === victim)?.reachable ? c : null;
  });
  const during = await placement(path);
  say(`With node ${victim} dead, each chunk is still on ${during.copies} nodes. Downloading…`);
  let intact = false;
  try {
    const { response: got } = await fetchAny(`/v1/files/${path}`, { timeoutMs: 30000 }, preferred);
    const bytes = new Uint8Array(await got.arrayBuffer());
    intact = got.ok && bytes.length === original.length && bytes.every((b, i) => b === original[i]);
  } finally {
    say(`Restarting node ${victim}…`);
    await playground(victim, "restart");
  }
  say(intact ? "Every byte came back." : "The download did not match!");
  const back = await waitFor(RESTART_WAIT_MS, async () => {
    await readCluster();
    const p = await placement(path);
    return p.copies >= first.copies ? p : null;
  });
  const after = back ?? await placement(path);
  say(back ? `Node ${victim} is back with its chunks: ${after.copies} copies again.` : `Node ${victim} has not answered yet.`);
  return {
    ok: intact && during.copies >= 1 && after.copies >= first.copies,
    verdict: intact ? `Node ${victim} died and the file still came back intact; ${after.copies} copies again after it restarted.` : "The file did not come back intact!",
    rows: [["chunks", first.manifest.chunk_count, "chunks"],
      ["copies of each chunk", first.copies, "copies"],
      [`copies while node ${victim} was dead`, during.copies, "copies"],
      ["downloaded intact", intact ? "yes" : "no", "intact"],
      ["copies after the restart", after.copies, "copies"]],
    data: { node: victim, chunks: first.manifest.chunk_count, copies: first.copies, during: during.copies, intact, after: after.copies },
  };
}

// ---- Ledger ----------------------------------------------------------------------------

/** `/v1/ledger` of one member, asked of the member itself. */
async function ledgerOf(id, query = "") {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), LOG_WAIT_MS);
  try {
    const response = await fetch(`${urlOf(id)}/v1/ledger${query}`, { signal: controller.signal });
    return response.ok ? await response.json() : null;
  } finally {
    clearTimeout(timer);
  }
}

async function ledgerLesson(say) {
  const before = await settled(say);
  const target = before.members.find((m) => m.id !== before.leader_id && m.id !== before.node_id)
    ?? before.members.find((m) => m.id !== before.leader_id);
  if (!target) throw new Error("no follower to tamper with");
  const id = target.id;
  say(`Restarting node ${id} so that it alters the next change it records…`);
  await playground(id, "tamper");
  const steady = await settled(say);
  preferred = urlOf(steady.leader_id);
  say(`Writing ${LEDGER_WRITES} keys…`);
  const prefix = `learn/ledger/${runId()}/`;
  for (let n = 1; n <= LEDGER_WRITES; n++) {
    await fetchAny(`/v1/kv/${prefix}${n}`, { method: "PUT", body: String(n), timeoutMs: 3000 }, preferred);
  }
  const ids = steady.members.map((m) => m.id);
  const goal = (await readCluster()).commit_index;
  const heads = await waitFor(CATCH_UP_WAIT_MS, async () => {
    const all = await Promise.all(ids.map((m) => ledgerOf(m)));
    return all.every((h) => h && h.index >= goal) ? all : null;
  });
  if (!heads) throw new Error(`not every node recorded entry ${goal} within ${CATCH_UP_WAIT_MS / 1000} s`);
  const index = Math.min(...heads.map((h) => h.index));
  say(`Asking every node for its fingerprint at entry ${index}…`);
  const hashes = await Promise.all(ids.map((m) => ledgerOf(m, `?index=${index}`)));
  const byHash = new Map();
  ids.forEach((m, i) => {
    const hash = hashes[i]?.hash ?? "none";
    byHash.set(hash, [...(byHash.get(hash) ?? []), m]);
  });
  const groups = [...byHash.values()].sort((a, b) => b.length - a.length);
  const agreeing = groups[0];
  const odd = groups.slice(1).flat();
  if (!odd.length) {
    say("Every fingerprint matches.");
    return {
      ok: false,
      verdict: `All ${ids.length} nodes agree: node ${id}'s copy was not altered, or not yet at entry ${index}.`,
      rows: [["entry verified", index, "verified"], ["nodes agreeing", agreeing.length, "agreeing"]],
      data: { tampered: id, index, agreeing: agreeing.length, named: "none" },
    };
  }
  say(`Node${odd.length > 1 ? "s" : ""} ${odd.join(", ")} disagree${odd.length > 1 ? "" : "s"} with the others.`);
  return {
    ok: odd.length === 1 && odd[0] === id,
    verdict: `Caught: node ${odd.join(", ")} holds a different history from entry ${index} on; nodes ${agreeing.join(", ")} agree.`,
    rows: [["entry verified", index, "verified"],
      ["nodes agreeing", agreeing.length, "agreeing"],
      ["the node that disagrees", `node ${odd.join(", ")}`, null]],
    data: { tampered: id, index, agreeing: agreeing.length, named: odd.join(",") },
  };
}

// ---- Scale -----------------------------------------------------------------------------

async function scaleLesson(say) {
  const before = await settled(say);
  const id = Math.max(...before.members.map((m) => m.id)) + 1;
  if (id > NODES_MAX) throw new Error(`kith dev runs at most ${NODES_MAX} nodes`);
  const votersBefore = before.members.filter((m) => m.voter).length;
  say(`Starting node ${id} and asking the cluster to let it in…`);
  await playground(id, "add");
  let seenAsLearner = false;
  const joined = await waitFor(JOIN_WAIT_MS, async () => {
    const c = await readCluster();
    const m = c.members.find((x) => x.id === id);
    if (m && !m.voter) seenAsLearner = true;
    return m ? c : null;
  });
  if (!joined) throw new Error(`node ${id} did not join within ${JOIN_WAIT_MS / 1000} s`);
  say(`Node ${id} is a member${seenAsLearner ? ", a learner for now: it copies the log but has no vote" : ""}.`);
  const voter = await waitFor(JOIN_WAIT_MS, async () => {
    const c = await readCluster();
    const m = c.members.find((x) => x.id === id);
    if (m && !m.voter) seenAsLearner = true;
    return m?.voter && m.reachable && m.lag === 0 ? c : null;
  });
  if (!voter) throw new Error(`node ${id} did not become an up-to-date voter within ${JOIN_WAIT_MS / 1000} s`);
  const voters = voter.members.filter((m) => m.voter).length;
  const quorum = Math.floor(voters / 2) + 1;
  say(`Node ${id} has caught up and votes: ${voters} voters, so ${quorum} make a majority.`);
  return {
    ok: voters === votersBefore + 1,
    verdict: `${voters} voters now: node ${id} joined, caught up (lag 0) and votes.`,
    rows: [["voters before", votersBefore, "voters"],
      ["voters after", voters, "voters"],
      ["seen as a learner first", seenAsLearner ? "yes" : "no (too quick to see)", "learner"],
      [`node ${id}'s lag`, 0, "lag"]],
    data: { node: id, votersBefore, voters, learner: seenAsLearner, lag: 0 },
  };
}

// ---- Running lessons -------------------------------------------------------------------

const LESSONS = { talk: talkLesson, fault: faultLesson, cutoff: cutoffLesson, sync: syncLesson, load: loadLesson, puzzle: puzzleLesson, store: storeLesson, ledger: ledgerLesson, scale: scaleLesson };
let running = false;

async function run(lesson) {
  if (running) return;
  running = true;
  const buttons = [...document.querySelectorAll("button.run")];
  for (const b of buttons) b.disabled = true;
  const story = new Narration(lesson);
  try {
    const result = await LESSONS[lesson]((text) => story.step(text));
    story.finish(result.ok, result.verdict, result.rows, result.data);
  } catch (error) {
    story.step(`Stopped: ${error.message}`);
    story.finish(false, `The experiment could not finish: ${error.message}`, [], {});
  } finally {
    for (const b of buttons) b.disabled = false;
    running = false;
  }
}

async function start() {
  for (const b of document.querySelectorAll("button.run")) {
    b.addEventListener("click", () => run(b.dataset.lesson));
  }
  $("talk-map").after(el("p", { class: "legend" }, "The number on each arrow is messages per second from one node to another", why("rate"), "; the table splits them by kind."));
  drawNow();
  await poll();
  setInterval(poll, POLL_MS * 2);
}

start();
