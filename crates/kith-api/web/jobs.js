// The jobs page: queue counts and rates, running jobs, failures, dead letters with retry.
import { fetchAny, getJson, el } from "./common.js";

const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
let previous = null; // { at, completed: Map<queue, total> }

function table(id, header, rows, empty) {
  const head = el("thead", {}, el("tr", {}, header.map((h) => el("th", { scope: "col" }, h))));
  const body = el("tbody", {}, rows.length
    ? rows.map((cells) => el("tr", {}, cells.map((c) => el("td", {}, c))))
    : el("tr", {}, el("td", { colspan: header.length, class: "notice" }, empty)));
  $(id).replaceChildren(head, body);
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  return s < 60 ? `${s}s ago` : `${Math.round(s / 60)}m ago`;
}

function short(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 59)}…` : text;
}

async function retry(id, button) {
  button.disabled = true;
  try {
    const { response } = await fetchAny(`/v1/jobs/${id}/retry`, { method: "POST" });
    $("notice").textContent = response.ok ? `job ${id} is ready again` : `retry of job ${id} refused (${response.status})`;
  } catch (error) {
    $("notice").textContent = `retry failed: ${error.message}`;
  }
}

async function tick() {
  let queues;
  try {
    queues = (await getJson("/v1/queues")).queues;
  } catch {
    $("served-by").textContent = "no node answers";
    return;
  }
  $("served-by").textContent = `live · ${new Date().toLocaleTimeString([], { hour12: false })}`;
  const now = performance.now();
  const rates = new Map();
  if (previous) {
    const seconds = Math.max(0.001, (now - previous.at) / 1000);
    for (const q of queues) {
      const before = previous.completed.get(q.name);
      if (before !== undefined) rates.set(q.name, (q.completed_total - before) / seconds);
    }
  }
  previous = { at: now, completed: new Map(queues.map((q) => [q.name, q.completed_total])) };
  table("queues", ["queue", "ready", "delayed", "running", "dead", "completed", "failures", "done/s"],
    queues.map((q) => [q.name, q.ready, q.delayed, q.leased, q.dead, q.completed_total, q.failed_total, (rates.get(q.name) ?? 0).toFixed(1)]),
    "No queues yet: push a job with kith jobs push QUEUE '{}'");

  const [running, delayed] = await Promise.all([
    getJson("/v1/jobs?state=leased&limit=50").catch(() => ({ jobs: [] })),
    getJson("/v1/jobs?state=delayed&limit=50").catch(() => ({ jobs: [] })),
  ]);
  table("running", ["job", "queue", "attempt", "worker", "lease ends", "payload"],
    running.jobs.map((j) => [j.id, j.queue, `${j.lease?.attempt}/${j.max_attempts}`, j.lease?.worker ?? "–",
      new Date(j.lease?.until_ms ?? 0).toLocaleTimeString([], { hour12: false }), short(j.payload)]),
    "Nothing running.");
  table("failures", ["job", "queue", "attempts", "last error", "retries at"],
    delayed.jobs.filter((j) => j.last_error).map((j) => [j.id, j.queue, `${j.attempts}/${j.max_attempts}`, short(j.last_error),
      new Date(j.run_at_ms).toLocaleTimeString([], { hour12: false })]),
    "No failures waiting.");

  const dead = [];
  for (const q of queues.filter((q) => q.dead > 0)) {
    const list = await getJson(`/v1/queues/${q.name}/dead?limit=50`).catch(() => ({ jobs: [] }));
    dead.push(...list.jobs);
  }
  table("dead", ["job", "queue", "attempts", "last error", "died", ""],
    dead.map((j) => {
      const b = el("button", { type: "button", "aria-label": `Retry job ${j.id}` }, "Retry");
      b.addEventListener("click", () => retry(j.id, b));
      return [j.id, j.queue, j.attempts, short(j.last_error ?? ""), ago(j.updated_ms), b];
    }),
    "No dead letters.");
}

tick();
setInterval(tick, POLL_MS);
