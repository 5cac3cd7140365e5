// The lamp page: renders the /api/status/ payload pushed over ws /ws/status/, polling if the socket drops.
"use strict";

const VERDICT_WORDS = { ok: "All good: hedging normally", degraded: "Degraded: needs attention", blocked: "Blocked: no new hedges" };
const CONFIRM = {
  start: ["Start the daemon?", "supervisord starts the daemon program; it reconnects to the broker and resumes where it left off (a persisted pause stays)."],
  pause: ["Pause hedging?", "No new hedge orders until you resume. Monitoring and the self-check continue."],
  resume: ["Resume hedging?", "Bifrost sends hedge orders again whenever delta leaves the band."],
  flatten: ["Flatten Bifrost's hedge?", "Cancels Bifrost's working orders and trades only Bifrost's own hedge shares back to 0, then stays paused. Your manual positions are not touched."],
  stop: ["Stop the daemon?", "The daemon cancels its working orders and exits. No new order leaves after the stop is acknowledged. Use Start to bring it back."],
  reset_halt: ["Reset the risk halt?", "Clears the risk halt so hedging can resume. Make sure you understand why it fired."],
  reconnect: ["Reconnect to the broker?", "Drops and re-opens the broker connection, then re-syncs and reconciles orders."],
  refresh_account: ["Refresh the account?", "Fetches the account summary and positions from the broker now."],
};

const $ = (id) => document.getElementById(id);
const fmt = (v, digits = 2, unit = "") => (v === null || v === undefined ? "–" : `${Number(v).toFixed(digits)}${unit}`);
const signed = (v, digits = 1, unit = "") => (v === null || v === undefined ? "–" : `${v > 0 ? "+" : ""}${Number(v).toFixed(digits)}${unit}`);
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));

function dl(el, rows) {
  el.innerHTML = rows.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("");
}

function render(s) {
  const lamp = $("lamp");
  lamp.className = `lamp lamp-${s.lamp}`;
  lamp.setAttribute("aria-label", `status lamp ${s.lamp}`);
  lamp.dataset.lamp = s.lamp;
  $("verdict").textContent = VERDICT_WORDS[s.verdict] || s.verdict;
  const t = s.trading || {};
  const silent = (s.block_reasons || []).includes("heartbeat_stale");
  $("summary").textContent = (silent ? `daemon not responding (last seen ${s.daemon.state})` : `daemon ${s.daemon.state}`)
    + (t.paused ? " · paused" : "") + (t.halted ? " · HALTED" : "") + ` · trading ${t.state || "–"}`;
  const problems = (s.checks || []).filter((c) => c.status !== "ok");
  $("reasons").innerHTML = problems.length
    ? problems.map((c) => `<li class="${c.status}" title="${esc(c.detail)}">${esc(c.reason || c.name)}</li>`).join("")
    : '<li>no block reasons</li>';
  $("updated").textContent = s.ts ? new Date(s.ts).toLocaleTimeString() : "never";

  const d = s.daemon;
  dl($("daemon"), [["state", d.state], ["mode", d.mode], ["broker", d.broker_connected ? "connected" : "disconnected"],
    ["heartbeat", d.heartbeat_age_s === null ? "none" : `${fmt(d.heartbeat_age_s, 1)} s ago`], ["pid", d.pid ?? "–"],
    ["config", s.config && s.config.name ? `${s.config.name} [${(s.config.params_hash || "").slice(0, 8)}]` : "–"]]);
  const m = s.market || {};
  dl($("market"), [["symbol", m.symbol || "–"], ["spot", fmt(m.spot, 2, " USD")], ["bid / ask", `${fmt(m.bid)} / ${fmt(m.ask)}`],
    ["spread", fmt(m.spread_bps, 1, " bps")], ["data lag", fmt(m.data_lag_ms, 0, " ms")]]);
  const b = s.book || {};
  dl($("book"), [["net delta", signed(b.net_delta_shares, 1, " sh")], ["options delta", signed(b.option_delta_shares, 1, " sh")],
    ["hedge shares", signed(b.hedge_shares, 0, " sh")], ["gamma", fmt(b.gamma, 2, " sh/USD")], ["theta", fmt(b.theta, 2, " USD/day")],
    ["vega", fmt(b.vega, 2, " USD/vol pt")]]);
  const p = s.pnl || {};
  dl($("pnl"), [["daily P&L", signed(p.daily_usd, 2, " USD")], ["realized", signed(p.realized_usd, 2, " USD")],
    ["unrealized", signed(p.unrealized_usd, 2, " USD")], ["hedges today", (s.counters || {}).daily_hedges ?? 0]]);
  const a = s.account || {};
  dl($("account"), [["account", a.account || "–"], ["net liquidation", fmt(a.net_liquidation, 0, " USD")],
    ["available funds", fmt(a.available_funds, 0, " USD")], ["buying power", fmt(a.buying_power, 0, " USD")],
    ["fetched", a.fetched_at ? new Date(a.fetched_at).toLocaleTimeString() : "never"]]);
  const accountStale = d.responding === false ? "stale: daemon not responding" : !d.broker_connected ? "stale: broker disconnected" : "";
  $("account-stale").hidden = !accountStale;
  $("account-stale").textContent = accountStale;
  const legs = (s.book && s.book.legs) || [];
  $("legs").innerHTML = legs.length ? legs.map((l) => `<tr><td>${esc(l.local_symbol || l.symbol)}${l.settled !== null && l.settled !== undefined ? ' <span class="tag">settled</span>' : ""}</td>`
    + `<td class="num">${fmt(l.qty, 0)}</td><td class="num">${fmt(l.bid)} / ${fmt(l.ask)}</td><td class="num">${fmt(l.mid)}</td>`
    + `<td class="num">${fmt(l.iv === null ? null : l.iv * 100, 1, " %")} <span class="muted small">${esc(l.iv_source || "")}</span></td>`
    + `<td class="num">${fmt(l.delta, 3)}</td><td class="num">${fmt(l.gamma, 4)}</td><td class="num">${fmt(l.theta, 3)}</td>`
    + `<td class="num">${fmt(l.vega, 3)}</td><td class="num">${signed(l.pnl_usd, 2)}</td>`
    + `<td>${esc(l.in_the_money || "–")} <span class="muted small">${fmt(l.moneyness, 3)}</span></td></tr>`).join("")
    : '<tr><td colspan="11" class="muted">no managed legs</td></tr>';
  // A daemon that no longer answers: its figures are its last words, shown greyed with their age.
  const stale = d.responding === false && s.ts;
  document.querySelectorAll(".figures").forEach((el) => el.classList.toggle("stale", !!stale));
  $("as-of").hidden = !stale;
  if (stale) $("as-of").textContent = `The daemon is not responding: figures as of ${new Date(s.ts).toLocaleTimeString()}`
    + (d.snapshot_age_s !== null && d.snapshot_age_s !== undefined ? ` (${fmt(d.snapshot_age_s, 0)} s ago)` : "") + ", checks unknown.";

  $("checks").innerHTML = (s.checks || []).map((c) => `<tr><td>${esc(c.name)}</td><td class="st-${c.status}">${c.status}</td>`
    + `<td>${esc(c.reason)}</td><td>${esc(c.detail)}</td></tr>`).join("");
  const positions = (s.account && s.account.positions) || [];
  $("positions").innerHTML = positions.length ? positions.map((pos) => {
    const shared = pos.data && pos.data.hedge_shares;  // one broker position: Bifrost's hedge + your shares
    const who = pos.managed ? '<span class="tag tag-managed">managed</span>'
      : shared ? '<span class="tag tag-managed">hedge</span> <span class="tag tag-manual">manual</span>'
      : '<span class="tag tag-manual">manual</span>';
    const split = pos.data && pos.data.hedge_shares !== undefined
      ? ` <span class="muted small">(Bifrost ${signed(pos.data.hedge_shares, 0)} + manual ${fmt(pos.data.manual_shares, 0)})</span>` : "";
    return `<tr><td>${esc(pos.local_symbol || pos.symbol)}${split}</td><td class="num">${fmt(pos.qty, 0)}</td>`
      + `<td class="num">${fmt(pos.avg_cost)}</td><td class="num">${fmt(pos.market_price)}</td><td>${who}</td></tr>`;
  }).join("") : '<tr><td colspan="5" class="muted">no positions synced yet</td></tr>';

  const running = !["stopped"].includes(d.state) && !(s.block_reasons || []).includes("heartbeat_stale");
  const start = $("btn-start");
  if (start) start.hidden = running;
  const reset = $("btn-reset");
  if (reset) reset.hidden = !t.halted;
  const pause = $("btn-pause"), resume = $("btn-resume");
  if (pause && resume) { pause.hidden = !!t.paused; resume.hidden = !t.paused; }
}

// ---- live updates: websocket first, polling while it is down ----------------------------------------------
let pollTimer = null;
function startPolling() {
  if (pollTimer) return;
  $("live").textContent = "polling (live connection lost)";
  pollTimer = setInterval(async () => {
    const r = await fetch("/api/status/", { credentials: "same-origin" });
    if (r.ok) render(await r.json());
  }, 1000);
}
function stopPolling() { if (pollTimer) { clearInterval(pollTimer); pollTimer = null; } }
function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/status/`);
  ws.onopen = () => { stopPolling(); $("live").textContent = "live"; };
  ws.onmessage = (e) => render(JSON.parse(e.data));
  ws.onclose = () => { startPolling(); setTimeout(connect, 3000); };
}

async function refreshOperations() {
  const r = await fetch("/api/operations/?limit=12", { credentials: "same-origin" });
  if (!r.ok) return;
  const rows = (await r.json()).results || [];
  $("operations").innerHTML = rows.map((o) => `<tr><td>${esc(o.ts.slice(11, 19))}</td><td>${esc(o.kind)}</td><td>${esc(o.message)}</td></tr>`).join("");
}

async function refreshAlerts() {
  const r = await fetch("/api/alerts/?state=firing&limit=20", { credentials: "same-origin" });
  if (!r.ok) return;
  const rows = (await r.json()).results || [];
  $("alerts").innerHTML = rows.length
    ? rows.map((a) => `<tr class="sev-${esc(a.severity)}"><td>${esc(a.last_seen.slice(11, 19))}</td><td>${esc(a.severity)}</td><td>${esc(a.message)}</td><td class="num">${esc(a.count)}</td><td>${esc(a.acked_by || "")}</td></tr>`).join("")
    : '<tr><td colspan="5" class="muted">none</td></tr>';
}

async function refreshCommander() {
  const r = await fetch("/api/commander/runs/?limit=1", { credentials: "same-origin" });
  if (!r.ok) return;
  const run = ((await r.json()).results || [])[0];
  if (!run) return;
  const skipped = run.decision.skipped || {};
  const names = (kind) => Object.keys(skipped[kind] || {});
  const lame = ["stale", "missing", "errored"].filter((k) => names(k).length).map((k) => `${k}: ${names(k).join(", ")}`);
  $("commander").className = `small${lame.length || run.state === "failed" ? " warn" : ""}`;
  $("commander").textContent = `#${run.id} ${run.executed_at.slice(0, 16).replace("T", " ")} UTC · ${run.state}`
    + ` · ${run.summary}` + (lame.length ? ` · skipped ${lame.join("; ")}` : "");
}

// ---- control buttons, each confirmed in words -----------------------------------------------------------
function csrfToken() {
  const m = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}
async function send(command, reason) {
  const out = $("command-result");
  out.textContent = `${command}: sending…`;
  const r = await fetch("/api/control/", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
    body: JSON.stringify({ command, reason }),
  });
  const body = await r.json();
  if (!r.ok) { out.textContent = `${command}: refused: ${body.detail}`; return; }
  out.textContent = `${command} #${body.id}: ${body.state}`;
  for (let i = 0; i < 60 && !["done", "rejected", "expired"].includes(body.state); i++) {
    await new Promise((res) => setTimeout(res, 500));
    const poll = await fetch(`/api/control/${body.id}/`, { credentials: "same-origin" });
    Object.assign(body, await poll.json());
    out.textContent = `${command} #${body.id}: ${body.state}${body.result ? " – " + body.result : ""}`;
  }
}
function wireControls() {
  const dialog = $("confirm");
  if (!dialog) return;
  let pending = null;
  document.querySelectorAll("#controls [data-command]").forEach((btn) => btn.addEventListener("click", () => {
    pending = btn.dataset.command;
    const [title, text] = CONFIRM[pending];
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-reason").value = "";
    dialog.showModal();
  }));
  dialog.addEventListener("close", () => {
    if (dialog.returnValue === "ok" && pending) send(pending, $("confirm-reason").value);
    pending = null;
  });
}

render(JSON.parse(document.getElementById("initial-status").textContent));
wireControls();
connect();
refreshOperations();
setInterval(refreshOperations, 3000);
refreshAlerts();
setInterval(refreshAlerts, 3000);
refreshCommander();
setInterval(refreshCommander, 10000);
