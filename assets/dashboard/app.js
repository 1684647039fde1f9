// sting-proxy dashboard. Reads the analytics REST API only (so a script can fetch everything
// shown here), renders with uPlot, and takes the live active count from the API's
// Server-Sent Events stream. Every string from the data goes into the page as text
// (textContent / createTextNode), never as HTML.
"use strict";

const API = document.querySelector('meta[name="sting-api"]').content;
const REFRESH_MS = 30000;
const SPARK_POINTS = 120;
let token = sessionStorage.getItem("sting-token") || "";
let granularity = "hour";
// The date range every panel reads (UTC days): a preset or a custom from/to.
let rangeKey = "today";
let customRange = null;
let funnelNames = null;
const charts = {};
const spark = { xs: [], ys: [] };

// ---- small helpers ---------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "–" : String(c)));
  return e;
}

function setText(id, v) { $(id).textContent = v == null ? "–" : String(v); }
const utcDay = (offsetDays) => new Date(Date.now() - offsetDays * 864e5).toISOString().slice(0, 10);
const shortTime = (iso) => (iso ? iso.slice(0, 19).replace("T", " ") : "–");
const labelSeconds = (t) => Date.parse(t.length === 10 ? t + "T00:00:00Z" : t + ":00:00Z") / 1000;

// {from, to, prevFrom, prevTo, days, label} of the chosen range; the previous range is as long
// and ends the day before it starts.
function currentRange() {
  let from, to;
  if (rangeKey === "custom" && customRange) ({ from, to } = customRange);
  else {
    const days = rangeKey === "7d" ? 7 : rangeKey === "30d" ? 30 : 1;
    from = utcDay(days - 1);
    to = utcDay(0);
  }
  const day = (iso, offset) => new Date(Date.parse(iso + "T00:00:00Z") + offset * 864e5).toISOString().slice(0, 10);
  const days = Math.round((Date.parse(to) - Date.parse(from)) / 864e5) + 1;
  const label = rangeKey === "today" ? "today" : from === to ? from : from + " – " + to;
  return { from, to, prevFrom: day(from, -days), prevTo: day(from, -1), days, label };
}
const rangeQuery = (r) => "from=" + r.from + "&to=" + r.to;

function duration(s) {
  if (s == null) return "–";
  if (s < 60) return s + " s";
  if (s < 3600) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

class Unauthorized extends Error {}

async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const r = await fetch(API + path, { headers, credentials: "same-origin", cache: "no-store" });
  if (r.status === 401 || r.status === 403) throw new Unauthorized(r.status + " " + path);
  if (!r.ok) throw new Error("HTTP " + r.status + " for " + path);
  return r.json();
}

// A change (revocation): the CSRF header a browser session must send, and the token if any.
async function apiChange(method, path) {
  const headers = { "X-Sting-Csrf": "1" };
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(API + path, { method, headers, credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error("HTTP " + r.status + " for " + method + " " + path);
  return r.json();
}

function fill(tableId, rows, cells) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren(...rows.map((r) => el("tr", null, ...cells(r).map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", null, c))))));
  if (!rows.length) body.append(el("tr", null, el("td", { colspan: String($(tableId).tHead.rows[0].cells.length), class: "muted" }, "no data")));
}

// ---- charts ----------------------------------------------------------------------------------

function chartWidth(id) { return Math.max(200, $(id).clientWidth); }

function lineChart(id, height, xs, ys, opts) {
  const data = [xs, ys];
  const kind = opts.bars ? "bars" : "line";
  if (charts[id] && charts[id].kind === kind) { charts[id].setData(data); return; }
  if (charts[id]) { charts[id].destroy(); delete charts[id]; }
  const accent = cssVar("--accent"), muted = cssVar("--muted"), line = cssVar("--line");
  const axis = { stroke: muted, grid: { stroke: line }, ticks: { stroke: line } };
  charts[id] = new uPlot({
    width: chartWidth(id), height,
    legend: { show: false },
    cursor: { show: !opts.spark },
    scales: { x: { time: true } },
    // Every panel speaks UTC, as the API does.
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
    axes: opts.spark ? [{ show: false }, { show: false }] : [axis, axis],
    series: [{}, { stroke: accent, fill: cssVar("--accent-soft"), width: 2, paths: opts.bars ? uPlot.paths.bars({ size: [0.8] }) : undefined }],
  }, data, $(id));
  charts[id].kind = kind;
}

function histogram(buckets) {
  const id = "dur-chart";
  const short = (s) => (s < 60 ? s + "s" : s < 3600 ? s / 60 + "m" : s / 3600 + "h");
  const labels = buckets.map((b) => (b.le_seconds == null ? "more" : short(b.le_seconds)));
  const xs = buckets.map((_, i) => i), ys = buckets.map((b) => b.count);
  if (charts[id]) { charts[id].setData([xs, ys]); return; }
  const muted = cssVar("--muted"), line = cssVar("--line");
  charts[id] = new uPlot({
    width: chartWidth(id), height: 200,
    legend: { show: false },
    scales: { x: { time: false, range: [-0.5, xs.length - 0.5] } },
    axes: [
      { stroke: muted, grid: { show: false }, ticks: { stroke: line }, splits: () => xs, values: (u, splits) => splits.map((i) => labels[i] || ""), rotate: -60, size: 44 },
      { stroke: muted, grid: { stroke: line }, ticks: { stroke: line } },
    ],
    series: [{}, { stroke: cssVar("--accent"), fill: cssVar("--accent-soft"), paths: uPlot.paths.bars({ size: [0.8] }), points: { show: false } }],
  }, [xs, ys], $(id));
}

window.addEventListener("resize", () => {
  for (const [id, c] of Object.entries(charts)) c.setSize({ width: chartWidth(id), height: c.height });
});

// ---- panels ----------------------------------------------------------------------------------

async function loadCompare() {
  const r = currentRange();
  const [today, yesterday] = await Promise.all([api("sessions/stats?" + rangeQuery(r)), api("sessions/stats?from=" + r.prevFrom + "&to=" + r.prevTo)]);
  setText("cur-label", r.label);
  setText("prev-label", rangeKey === "today" ? "yesterday" : r.prevFrom === r.prevTo ? r.prevFrom : r.prevFrom + " – " + r.prevTo);
  setText("today-sessions", today.total_sessions_today);
  setText("yesterday-sessions", yesterday.total_sessions_today);
  setText("today-views", today.page_views_today);
  setText("yesterday-views", yesterday.page_views_today);
  setText("today-users", today.unique_users_today);
  setText("yesterday-users", yesterday.unique_users_today);
  if (!spark.ys.length) setText("active-now", today.active_sessions);
}

async function loadTimeseries() {
  const metric = $("ts-metric").value;
  const r = currentRange();
  // Today: the last 24 hours (or 30 days); another range: its own days or hours.
  const window = rangeKey === "today" ? "" : granularity === "day" ? "&" + rangeQuery(r) : "&from=" + r.from + "T00&to=" + r.to + "T23";
  const ts = await api("timeseries?metric=" + encodeURIComponent(metric) + "&granularity=" + granularity + window);
  const xs = ts.points.map((p) => labelSeconds(p.t)), ys = ts.points.map((p) => p.value);
  setText("ts-total", ys.reduce((a, b) => a + b, 0));
  lineChart("ts-chart", 220, xs, ys, { bars: granularity === "day" });
}

async function loadDurations() {
  const d = await api("sessions/durations?" + rangeQuery(currentRange()));
  setText("dur-ended", d.sessions_ended);
  setText("dur-avg", d.sessions_ended ? duration(Math.round(d.average_seconds)) : "–");
  setText("dur-median", d.median_le_seconds == null ? (d.sessions_ended ? "more" : "–") : duration(d.median_le_seconds));
  histogram(d.buckets);
}

async function loadPages() {
  const path = "pages/top?limit=15&" + rangeQuery(currentRange());
  $("top-pages-csv").href = API + path + "&format=csv";
  const t = await api(path);
  fill("top-pages", t.pages, (p) => [p.name, p.count, p.unique_sessions]);
}

// A weekday × hour grid (`matrix[weekday][hour]`, UTC) into a table, shaded by value.
function heatmap(tableId, weekdays, matrix) {
  const max = Math.max(1, ...matrix.flat());
  const head = el("tr", null, el("th", null, ""), ...Array.from({ length: 24 }, (_, h) => el("th", null, String(h))));
  const rows = matrix.map((row, d) =>
    el("tr", null, el("th", null, weekdays[d]), ...row.map((v, h) => {
      const td = el("td", { title: weekdays[d] + " " + h + ":00 UTC: " + v, "data-weekday": String(d), "data-hour": String(h) }, v ? String(v) : "");
      td.style.backgroundColor = "color-mix(in srgb, var(--heat1) " + Math.round((v / max) * 100) + "%, var(--heat0))";
      if (v / max > 0.55) td.style.color = "#fff";
      return td;
    })));
  $(tableId).replaceChildren(el("thead", null, head), el("tbody", null, ...rows));
}

async function loadPeak() {
  const p = await api("activity/peak-hours?days=28");
  heatmap("heatmap", p.weekdays, p.matrix);
  $("peak-summary").textContent = p.peak ? "· busiest: " + p.peak.weekday + " " + p.peak.hour + ":00 (" + p.peak.value + ")" : "";
}

async function loadDevices() {
  const d = await api("devices?limit=8&" + rangeQuery(currentRange()));
  fill("browsers", d.browsers, (r) => [r.name, r.count]);
  fill("os", d.os, (r) => [r.name, r.count]);
  fill("device-types", d.device_types, (r) => [r.name, r.count]);
  setText("bots", d.bots);
}

async function loadGeo() {
  const g = await api("geo?limit=10&" + rangeQuery(currentRange()));
  fill("countries", g.countries, (r) => [r.name, r.count]);
  fill("cities", g.cities, (r) => [r.name, r.count]);
}

async function loadAcquisition() {
  const path = "acquisition?limit=10&" + rangeQuery(currentRange());
  $("acq-csv").href = API + path + "&format=csv";
  const a = await api(path);
  $("acq-summary").textContent = "· " + a.sessions + " sessions";
  const row = (x) => [x.name, x.sessions, x.users];
  fill("acq-referrers", a.referrers, row);
  fill("acq-sources", a.utm_source, row);
  fill("acq-campaigns", a.utm_campaign, row);
}

// The funnel chosen (the list is read once); a bar per step, as wide as its share of step 1.
async function loadFunnel() {
  if (funnelNames == null) {
    funnelNames = (await api("funnels")).funnels.map((f) => f.name);
    $("funnel-name").replaceChildren(...funnelNames.map((n) => el("option", { value: n }, n)));
  }
  const name = $("funnel-name").value;
  if (!name) {
    fill("funnel-steps", [], () => []);
    return;
  }
  const f = await api("funnels/" + encodeURIComponent(name) + "?" + rangeQuery(currentRange()));
  const first = Math.max(1, f.steps.length ? f.steps[0].sessions : 1);
  fill("funnel-steps", f.steps, (s) => {
    const bar = el("span", { class: "bar" });
    bar.style.width = Math.round((s.sessions / first) * 100) + "%";
    return [el("td", null, s.step + ". " + s.goal, bar), s.sessions, s.users, s.conversion == null ? "–" : Math.round(s.conversion * 1000) / 10 + "%"];
  });
}

// Cohorts by first-seen day (a range up to 14 days) or week, and the share active after.
async function loadRetention() {
  const r = currentRange();
  const g = r.days > 14 ? "week" : "day";
  const ret = await api("retention?granularity=" + g + "&" + rangeQuery(r));
  const periods = Math.max(0, ...ret.cohorts.map((c) => c.active.length));
  const head = el("tr", null, el("th", null, g === "week" ? "week of" : "day"), el("th", null, "users"), ...Array.from({ length: periods }, (_, k) => el("th", null, (g === "week" ? "W" : "D") + k)));
  const rows = ret.cohorts.map((c) =>
    el("tr", { "data-cohort": c.cohort }, el("th", null, c.cohort), el("td", null, String(c.users)), ...c.share.map((x, k) => {
      const td = el("td", { title: c.active[k] + " of " + c.users }, x == null ? "" : Math.round(x * 100) + "%");
      td.style.backgroundColor = "color-mix(in srgb, var(--heat1) " + Math.round((x || 0) * 100) + "%, var(--heat0))";
      if ((x || 0) > 0.55) td.style.color = "#fff";
      return td;
    })));
  $("retention").replaceChildren(el("thead", null, head), el("tbody", null, ...rows));
  $("retention-summary").textContent = "(" + (g === "week" ? "weekly" : "daily") + " cohorts by first visit, " + r.label + ")";
}

function showError(e) {
  $("error").hidden = false;
  $("error").textContent = String(e && e.message ? e.message : e);
}

function sessionButton(sid) {
  return el("button", { type: "button", class: "link session-link", title: sid, on: { click: () => showSession(sid).catch(showError) } }, sid);
}

function userButton(uid) {
  if (uid == null) return el("span", { class: "muted" }, "anonymous");
  return el("button", { type: "button", class: "link user-link", on: { click: () => showUser(uid).catch(showError) } }, uid);
}

const device = (s) => [s.device.browser, s.device.os, s.device.type].filter(Boolean).join(" / ") || "–";
const state = (s) => (s.end_time ? "ended (" + (s.end_reason || "?") + ")" : "active");

// Revoke takes two clicks (the second confirms), then says what happened; `done` runs after
// a revocation (the online list reloads, so the session leaves it).
function revokeButton(sid, done) {
  const b = el("button", { type: "button", class: "revoke", "data-sid": sid }, "revoke");
  b.addEventListener("click", async () => {
    if (b.dataset.armed !== "1") {
      b.dataset.armed = "1";
      b.textContent = "confirm revoke";
      return;
    }
    b.disabled = true;
    try {
      await apiChange("DELETE", "sessions/" + encodeURIComponent(sid));
      b.textContent = "revoked";
      if (done) await done();
    } catch (e) {
      b.textContent = "failed";
      showError(e);
    }
  });
  return b;
}

function stateCell(s) {
  return s.end_time ? el("td", null, state(s)) : el("td", null, "active ", revokeButton(s.session_id));
}

async function loadRecent() {
  const r = await api("sessions?limit=25");
  fill("recent", r.sessions, (s) => [shortTime(s.start_time), userButton(s.user_id), sessionButton(s.session_id), s.page_views, duration(s.duration), device(s), s.location.country, stateCell(s)]);
}

async function loadAnomalies() {
  const r = await api("sessions/anomalies?limit=50&" + rangeQuery(currentRange()));
  $("anomaly-summary").textContent = "· " + r.total + " anomalies";
  fill("anomalies", r.anomalies, (a) => [
    shortTime(a.timestamp),
    el("td", { class: "sev-" + a.severity }, a.severity),
    a.detector,
    userButton(a.user_id),
    sessionButton(a.session_id),
    Object.entries(a.evidence || {}).map(([k, v]) => k + ": " + v).join(", "),
  ]);
}

async function loadOnline() {
  const r = await api("sessions/online?limit=50");
  $("online-summary").textContent = "· " + r.sessions.length + " signed in";
  fill("online", r.sessions, (s) => [
    userButton(s.user_id),
    device(s),
    s.location.country,
    s.last_route,
    shortTime(s.last_activity),
    el("td", null, revokeButton(s.session_id, () => loadOnline().catch(showError))),
  ]);
}

// The behaviour page of a user: usual hours, devices, countries, routes, session lengths and
// the sessions across devices. Hidden again when the API knows no patterns for the user.
async function showBehavior(uid) {
  let b;
  try {
    b = await api("users/" + encodeURIComponent(uid) + "/behavior-patterns?limit=20");
  } catch (e) {
    if (e instanceof Unauthorized) throw e;
    $("panel-behavior").hidden = true;
    return;
  }
  $("panel-behavior").hidden = false;
  $("panel-behavior").dataset.user = uid;
  $("behavior-title").textContent = "Behaviour of user " + uid;
  setText("bh-first", shortTime(b.first_seen));
  setText("bh-last", shortTime(b.last_seen));
  setText("bh-requests", b.requests);
  setText("bh-median", b.median_session_seconds == null ? "–" : duration(b.median_session_seconds));
  $("bh-measured").textContent = "(over " + b.sessions_measured + " sessions)";
  heatmap("bh-hours", b.hours.weekdays, b.hours.matrix);
  fill("bh-devices", b.devices, (r) => [r.name.split("|").join(" / "), r.count]);
  fill("bh-countries", b.countries, (r) => [r.name, r.count]);
  fill("bh-routes", b.routes, (r) => [r.name, r.count]);
  $("bh-sessions-total").textContent = "(" + b.sessions.length + " of " + b.sessions_total + ", newest first)";
  fill("bh-sessions", b.sessions, (s) => [sessionButton(s.session_id), device(s), s.location.country, shortTime(s.start_time), shortTime(s.last_activity), s.end_time ? shortTime(s.end_time) + " (" + (s.end_reason || "?") + ")" : "active", duration(s.length_seconds)]);
  $("panel-behavior").dataset.loaded = uid;
}

async function showUser(uid) {
  $("panel-behavior").dataset.loaded = "";
  const behavior = showBehavior(uid).catch(showError);
  const r = await api("users/" + encodeURIComponent(uid) + "/sessions?limit=50");
  $("panel-detail").hidden = false;
  $("detail-title").textContent = "Sessions of user " + uid + " (" + r.total_count + ")";
  $("detail-sessions").hidden = false;
  fill("detail-sessions", r.sessions, (s) => [shortTime(s.start_time), sessionButton(s.session_id), s.page_views, duration(s.duration), s.end_reason || "active", device(s), s.ip_address]);
  $("detail-actions").replaceChildren();
  $("panel-detail").scrollIntoView({ block: "nearest" });
  await behavior;
}

async function showSession(sid) {
  const s = await api("sessions/" + encodeURIComponent(sid));
  $("panel-detail").hidden = false;
  $("detail-title").textContent = "Session " + sid + (s.user_id ? " of " + s.user_id : "") + " · " + s.page_views + " page views · " + state(s);
  $("detail-sessions").hidden = true;
  $("detail-actions").replaceChildren(...s.actions.map((a) => el("li", null, el("time", null, shortTime(a.timestamp)), a.action + (a.page ? " " + a.page : ""))));
  $("panel-detail").scrollIntoView({ block: "nearest" });
}

// ---- live count (Server-Sent Events over fetch, so a bearer token can be sent) ---------------

let sseEvents = 0;
function onActive(data) {
  const v = JSON.parse(data);
  document.body.dataset.sseEvents = String(++sseEvents);
  setText("active-now", v.active_sessions);
  spark.xs.push(Date.parse(v.timestamp) / 1000);
  spark.ys.push(v.active_sessions);
  if (spark.xs.length > SPARK_POINTS) { spark.xs.shift(); spark.ys.shift(); }
  lineChart("active-spark", 60, spark.xs, spark.ys, { spark: true });
}

function setLive(s) { const p = $("live-status"); p.textContent = s; p.className = "pill " + s; }

// A hidden tab lets go of its stream (each holds one of the browser's few connections to this
// origin, which the app shares) and reconnects when shown again.
let liveAbort = null;
document.addEventListener("visibilitychange", () => {
  if (document.hidden && liveAbort) liveAbort.abort();
});

async function live() {
  let delay = 2000;
  for (;;) {
    while (document.hidden) await new Promise((res) => setTimeout(res, 1000));
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      liveAbort = new AbortController();
      const r = await fetch(API + "stream/active", { headers, credentials: "same-origin", cache: "no-store", signal: liveAbort.signal });
      // Refused (logged out, role removed): back off instead of asking every 2 s.
      delay = r.status === 401 || r.status === 403 ? Math.min(delay * 2, 60000) : 2000;
      if (r.ok && r.body) {
        setLive("live");
        const reader = r.body.getReader(), decoder = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let event = "message", data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) event = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trim();
            }
            if (event === "active" && data) onActive(data);
          }
        }
      }
    } catch (e) { /* the stream dropped: reconnect below */ }
    setLive("reconnecting");
    await new Promise((res) => setTimeout(res, delay));
  }
}

// ---- start -----------------------------------------------------------------------------------

async function loadAll() {
  const key = rangeKey + (customRange ? ":" + customRange.from + ":" + customRange.to : "");
  const label = currentRange().label;
  for (const e of document.querySelectorAll(".range-text")) e.textContent = "(" + label + ")";
  setText("range-label", rangeKey === "today" ? "" : currentRange().from + " – " + currentRange().to + " UTC");
  const results = await Promise.allSettled([
    loadCompare(), loadTimeseries(), loadDurations(), loadPages(), loadPeak(), loadDevices(), loadGeo(), loadRecent(), loadAnomalies(), loadOnline(),
    loadAcquisition(), loadFunnel(), loadRetention(),
  ]);
  const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason);
  if (failed.some((e) => e instanceof Unauthorized)) {
    $("auth-form").hidden = false;
    return false;
  }
  $("error").hidden = !failed.length;
  $("error").textContent = failed.length ? "Some panels could not be loaded: " + failed.map((e) => e.message).join("; ") : "";
  setText("updated", "updated " + new Date().toISOString().slice(11, 19) + " UTC");
  // Which range the panels now show (the browser test waits for it).
  document.body.dataset.range = key;
  return true;
}

$("range").addEventListener("change", () => {
  $("custom-range").hidden = $("range").value !== "custom";
  if ($("range").value === "custom") return;
  rangeKey = $("range").value;
  customRange = null;
  loadAll();
});
$("range-apply").addEventListener("click", () => {
  const from = $("range-from").value, to = $("range-to").value;
  if (!from || !to || from > to) return showError(new Error("choose a from day on or before the to day"));
  rangeKey = "custom";
  customRange = { from, to };
  loadAll();
});
$("funnel-name").addEventListener("change", () => loadFunnel().catch(showError));

$("gran-hour").addEventListener("click", () => { granularity = "hour"; $("gran-hour").classList.add("on"); $("gran-day").classList.remove("on"); loadTimeseries(); });
$("gran-day").addEventListener("click", () => { granularity = "day"; $("gran-day").classList.add("on"); $("gran-hour").classList.remove("on"); loadTimeseries(); });
$("ts-metric").addEventListener("change", () => loadTimeseries());
$("auth-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem("sting-token", token);
  $("auth-form").hidden = true;
  start();
});

let running = false;
async function start() {
  if (!(await loadAll()) || running) return;
  running = true;
  document.body.dataset.loaded = "1";
  // performance.now() counts from the start of navigation: time to the first full render.
  document.body.dataset.renderMs = String(Math.round(performance.now()));
  live();
  setInterval(loadAll, REFRESH_MS);
}
start();
