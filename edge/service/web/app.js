// The status page: polls /status and /history (same origin, so the auth cookie or basic-auth
// credentials go along) and draws everything from counts. No library, nothing fetched from
// elsewhere, no image: the monitor may be offline and the page must never show a face.
"use strict";

const STATUS_EVERY_MS = 2000;
const HISTORY_EVERY_MS = 10000;
// A connection that drops mid-request (Wi-Fi gone, the Pi unplugged) gets neither an answer nor
// a reset, and the browser would wait for minutes: the poll gives up after this, so the figures
// go stale instead of passing for current ones.
const ANSWER_WITHIN_MS = 8000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);

// Bytes in the units df -h, edge doctor and head office's alert use: "12.3 GiB", "420 MiB".
const size = (n) => n >= 2 ** 30 ? (n / 2 ** 30).toFixed(1) + " GiB" : Math.round(n / 2 ** 20) + " MiB";
function pct(x) { return typeof x === "number" && Number.isFinite(x) ? Math.round(100 * x) + "%" : "–"; }
// The monitor's clock, as its last answer gave it. Every time on the page was stamped by it, and a
// Pi without NTP (it has no real-time clock) can be hours or days off this browser's, so how long
// ago something was is reckoned on it.
let monitorAheadMs = 0;
const monitorNow = () => new Date(Date.now() + monitorAheadMs);
// The monitor's time zone over the times of its last answer (/status and /history: `zones`, oldest
// first, each in force from its `from`, in seconds): every time is shown as the store's local time
// of its own day, as its staff read a clock then (an alert raised before the clocks went forward
// would otherwise read an hour off), and the zone named where this browser's differs (a manager at
// head office elsewhere). Until the first answer, the browser's own.
let monitorZones = [];
function zone(answer) { if (Array.isArray(answer.zones) && answer.zones.length) monitorZones = answer.zones; }
// The monitor's zone at `d` ({utc_offset_s, time_zone}), or null before its first answer.
function zoneAt(d) {
  let z = monitorZones[0] || null;
  for (const c of monitorZones) if (1000 * c.from <= d.getTime()) z = c;
  return z;
}
const offsetS = (d) => { const z = zoneAt(d); return z ? z.utc_offset_s : -60 * d.getTimezoneOffset(); };
// `d` shifted so that read in UTC it gives the monitor's local time.
const atMonitor = (d) => new Date(d.getTime() + 1000 * offsetS(d));
// " CET" (or " UTC+05:30" for a zone without a name) where the browser's zone differs at `d`, else "".
function zoneSaid(d) {
  const z = zoneAt(d);
  if (!z || z.utc_offset_s === -60 * d.getTimezoneOffset()) return "";
  const o = Math.abs(z.utc_offset_s) / 60, sign = z.utc_offset_s < 0 ? "−" : "+";
  const utc = "UTC" + (o ? sign + String(Math.floor(o / 60)).padStart(2, "0") + ":" + String(o % 60).padStart(2, "0") : "");
  return " " + (/^[A-Za-z]+$/.test(z.time_zone) ? z.time_zone : utc);
}
// A time of day, with the date when it is not today (an alert can stay raised overnight), and the zone when not the browser's;
// `hm`: to the minute.
function clock(iso, hm) {
  const d = new Date(iso), local = atMonitor(d), time = (hm ? hhmm(d) : hms(d)) + zoneSaid(d);
  return local.toISOString().slice(0, 10) === atMonitor(monitorNow()).toISOString().slice(0, 10) ? time
    : local.toLocaleDateString([], {day: "numeric", month: "short", timeZone: "UTC"}) + " " + time;
}
// A span of whole minutes: "12 min", "3 h 05 min"; "under 1 min", not "0 min", which read as no time at all
// (a manager opening the page from an alert's notification saw "since 14:02 (0 min)", "0 min ago raised").
function minutes(min) {
  return min < 1 ? "under 1 min" : min < 60 ? `${min} min` : `${Math.floor(min / 60)} h ${String(min % 60).padStart(2, "0")} min`;
}
// How long ago, by the monitor's clock.
function ago(iso) { return minutes(Math.max(0, Math.floor((monitorNow() - new Date(iso)) / 60000))); }
// Whether NTP has set the monitor's clock (/status health.clock_synced; a Pi has no real-time clock): until it has,
// its time of day may be 1970 or the last shutdown's, and the card and header say how long ago instead, as the list does.
let clockSet = true;
function since(iso) { return !iso ? "" : clockSet ? `since ${clock(iso)} (${ago(iso)})` : `since ${ago(iso)} ago`; }
const at = (iso) => clockSet ? clock(iso) : `${ago(iso)} ago`;
// When a recent alert or outage started or ended, to the minute. Stamped before NTP set the Pi's clock (clock_set
// false: 1970, or the last shutdown's time), how long ago, which the monitor knows while it runs on; from before a
// restart, not even that.
function alertTime(a) {
  if (a.clock_set !== false) return clock(a.time, true);
  return a.time ? `${ago(a.time)} ago` : "time unknown (clock not set)";
}
// A recent alert or camera outage as the period it was (/status alert_periods), not its raise and its clear apart
// (a manager read "cleared: 10% of 4 faces unhappy" as an alert): "17:31 – 17:38 (7 min): queue unhappy, up to 46% of
// 4 faces", "17:56 – now (3 min): …", "17:40 – 17:42 (2 min): camera gave no picture".
function period(p) {
  // minutes between the times as written (to the minute): 17:31:50 – 17:38:10 reads 7 min, as 17:31 – 17:38 does
  const {start, end} = p, last = (e) => Math.floor(new Date(e.time) / 60000) - Math.floor(new Date(start.time) / 60000);
  const until = p.ongoing ? `now (${ago(start.time)})` : !end ? "not recorded (the monitor stopped)"
    : alertTime(end) + (start.time && end.time ? ` (${minutes(last(end))})` : "");
  const what = p.kind === "unhappy" ? `queue unhappy, up to ${pct(p.peak_share)} of ${p.peak_faces} faces`
    // joins_dropped: outages older than the monitor keeps belong to the line too, so its count is a lower bound
    : p.times > 1 || p.joins_dropped ? `camera dropped out ${p.joins_dropped ? "more than " : ""}${p.times > 1 ? p.times + " times" : "once"}`
      + (p.ongoing ? ", gives no picture now" : "")
    : p.ongoing ? "camera gives no picture" : "camera gave no picture";
  return `${alertTime(start)} – ${until}: ${what}`;
}
// The lines the list shows (/status alert_periods, newest first), at most `most`. Outages starting within `joinS`
// seconds (/status outage_join_s, the sinks' window for outages that come and go) of the end of the one before are
// one line (`times` outages): a loose cable's dozen short outages in an hour filled the list, and the alert raised
// meanwhile was not on it. Alerts come first within `most`, the outages newest first after. A monitor rolled back
// to a release without outage_join_s (this page open in a tab meanwhile): each outage is its own line.
function lines(periods, most, joinS) {
  const joined = [];
  let later = null;  // the line of the outage after this one
  for (const p of periods) {
    if (p.kind !== "camera_down") { joined.push(p); continue; }
    if (later && p.end && p.end.t != null && later.start.t != null && later.start.t - p.end.t <= joinS) {
      later.start = p.start;
      later.times += 1;
      later.joins_dropped = later.joins_dropped || p.joins_dropped;
    } else joined.push(later = {...p, times: 1});
  }
  joined.sort((a, b) => (b.start.t ?? -Infinity) - (a.start.t ?? -Infinity));  // a merged line starts earlier
  const alerts = joined.filter((p) => p.kind === "unhappy").slice(0, most);
  const kept = new Set([...alerts, ...joined.filter((p) => p.kind !== "unhappy").slice(0, most - alerts.length)]);
  return joined.filter((p) => kept.has(p));
}
// A time of day in the browser's locale (14:02:08, or 02:02:08 PM), as every time on the page is written, in the monitor's zone.
function hms(d) { return atMonitor(d).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit", timeZone: "UTC"}); }
function hhmm(d) { return atMonitor(d).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", timeZone: "UTC"}); }
function text(el, value) { if (el.textContent !== String(value)) el.textContent = value; }

// The first cell names the row (an expression, a health figure): a row header, so a screen reader
// says "frame rate" with "4.9 fps", not a bare number.
function row(table, cells) {
  const tr = document.createElement("tr");
  cells.forEach((c, i) => {
    const td = document.createElement(i ? "td" : "th");
    if (!i) td.scope = "row";
    if (c instanceof Node) td.appendChild(c); else td.textContent = c;
    tr.appendChild(td);
  });
  table.appendChild(tr);
}

// An expression counted as unhappy (the config's mood.negative): said by more than the bar's colour,
// a "*" and stripes (see the key under the table), and in words to a screen reader.
function unhappy(name) {
  const cell = document.createDocumentFragment(), mark = document.createElement("span"), said = document.createElement("span");
  mark.className = "neg-mark";
  mark.setAttribute("aria-hidden", "true");  // the words below say it to a screen reader, as the key does on screen
  mark.textContent = "*";
  said.className = "sr-only";
  said.textContent = ", counted as unhappy";
  cell.append(name, mark, said);
  return cell;
}

function renderStatus(s) {
  if (s.now) monitorAheadMs = new Date(s.now) - Date.now();
  zone(s);
  clockSet = (s.health || {}).clock_synced !== false;
  text($("device"), s.device ? "· " + s.device : "");
  // Only "raised" and "clear" are asserted; "starting" (no frame yet), a silent camera, or any state
  // this page does not know, never reads as "clear".
  const state = s.camera === "down" ? "down" : ["raised", "clear", "starting"].includes(s.alert_state) ? s.alert_state : "unknown";
  const unseen = state === "down" || state === "starting";  // no figures: nothing is being watched
  text($("faces"), unseen ? "–" : s.faces);
  text($("negative-share"), unseen ? "–" : pct(s.negative_share));
  text($("alert-state"), {raised: "RAISED", clear: "clear", starting: "starting", down: "CAMERA DOWN", unknown: "unknown"}[state]);
  $("alert-card").className = "card alert-" + state;
  // The tab says it too: a manager with the page in a background tab sees the state change.
  text(document.querySelector("title"), {raised: "ALERT · ", down: "CAMERA DOWN · ", clear: "", starting: "", unknown: ""}[state] + "Queue mood");
  text($("alert-since"), {
    raised: since(s.alert_raised_at),
    clear: since(s.alert_state_since),  // the alert cleared, or the queue has been watched (again) from then
    starting: "The monitor has not watched the queue yet",
    down: `${since(s.alert_state_since)}: the queue is not being watched — check the camera`,
    unknown: "The monitor does not know the queue's mood",
  }[state]);

  // A screen reader announces the state when it changes, and nothing else: "since … (N min)" changes
  // every minute and the figures every poll, so they are outside this live region.
  text($("alert-announce"), {
    raised: "Alert raised" + (s.alert_advice ? ": " + s.alert_advice : ""),
    clear: "Alert clear",
    starting: "",
    down: "Camera down: the queue is not being watched",
    unknown: "The monitor does not know the queue's mood",
  }[state]);

  // What the staff should do (status.alert_advice), only while an alert is raised.
  text($("alert-advice"), state === "raised" ? s.alert_advice || "" : "");
  $("alert-advice").hidden = state !== "raised" || !s.alert_advice;
  // Clear, yet the queue is over the raise share: the cooldown after the last alert holds a new one back.
  const held = state === "clear" && s.alert_held_back_until;
  const from = () => clockSet ? `from ${clock(s.alert_held_back_until)}`
    : `in ${minutes(Math.max(0, Math.ceil((new Date(s.alert_held_back_until) - monitorNow()) / 60000)))}`;
  text($("alert-held"), held ? `unhappy again: a new alert can be raised ${from()}` : "");
  $("alert-held").hidden = !held;

  const emotions = $("emotions");
  emotions.replaceChildren();
  const most = Math.max(1, ...Object.values(s.counts));
  for (const [name, n] of Object.entries(s.counts)) {
    const bar = document.createElement("div"), negative = s.negative.includes(name);
    bar.className = "bar" + (negative ? " neg" : "");
    bar.style.width = unseen ? "0" : (100 * n / most) + "%";
    row(emotions, [negative ? unhappy(name) : name, bar, unseen ? "–" : n]);  // unknown (NaN in /metrics), not 0 of each
  }
  $("neg-key").hidden = !s.negative.length;

  const alerts = $("alerts");
  alerts.replaceChildren();
  for (const p of lines(s.alert_periods, 10, Number.isFinite(s.outage_join_s) ? s.outage_join_s : -Infinity)) {
    const li = document.createElement("li");
    li.textContent = period(p);
    alerts.appendChild(li);
  }
  // No alert yet is said in words beside the list, not as an item numbered "1." in it
  alerts.hidden = !s.alert_periods.length;
  $("no-alerts").hidden = !alerts.hidden;

  const h = s.health, health = $("health");
  health.replaceChildren();
  row(health, ["frame rate", s.fps.toFixed(1) + " fps"]);
  row(health, ["dropped frames", s.dropped_frames]);
  // Frames coming yet no face for hours in opening time: the camera may be knocked askew or covered.
  row(health, ["last face seen", s.faces && !unseen ? "now" : s.face_seen_at ? (clockSet ? `${clock(s.face_seen_at)} (${ago(s.face_seen_at)} ago)` : at(s.face_seen_at)) : "none since the start"]);
  row(health, ["stage times", Object.entries(s.stage_ms).map(([k, v]) => `${k} ${v.toFixed(1)} ms`).join(", ") || "–"]);
  const failures = Object.entries(s.sink_failures).filter(([, n]) => n > 0);
  row(health, ["sink failures", failures.map(([k, n]) => `${k} ${n}`).join(", ") || "none"]);
  if (h.process_cpu_share !== null && h.process_cpu_share !== undefined) row(health, ["monitor CPU", Math.round(100 * h.process_cpu_share) + "% of one core"]);
  if (h.clock_synced === false) row(health, ["clock", "not set by NTP: alert times may be wrong"]);
  if (h.cpu_temperature_c !== null && h.cpu_temperature_c !== undefined) row(health, ["CPU temperature", h.cpu_temperature_c.toFixed(1) + " °C"]);
  if (h.throttled_flags !== null && h.throttled_flags !== undefined) row(health, ["throttling", h.throttled_now.join(", ") || "none"]);
  // One disk on most Pis (the SD card); a folder of the monitor's on another disk is named.
  const disks = Object.entries(h.disks || {});
  if (disks.length) row(health, ["disk free", disks.map(([k, d]) => `${size(d.free_bytes)} of ${size(d.size_bytes)}` + (disks.length > 1 ? ` (${k})` : "")
    + (d.read_only ? ", READ-ONLY: nothing can be saved there; see edge doctor" : "")).join(", ")]);
  row(health, ["up for", minutes(Math.floor(s.uptime_s / 60))]);
  row(health, ["source", s.source]);
  // Which build this Pi runs, for the IT person asked by head office (its fleet table shows the same)
  const r = s.release || {};
  const build = [r.commit && "commit " + r.commit, r.bundle_created && "bundle made " + r.bundle_created.slice(0, 10),
                 r.model_sha256 && "model " + r.model_sha256.slice(0, 12)].filter(Boolean);
  if (build.length) row(health, ["release", build.join(", ")]);

  text($("updated"), "updated " + at(s.now || new Date().toISOString()));
  document.body.dataset.live = "1";
  lastStatusAt = s.now || new Date().toISOString();
}

// A /status poll that failed (no answer, 401, an error status): the figures on the page are the
// last ones received, not current ones, so they are marked as old under a banner until a poll succeeds.
let lastStatusAt = null;  // the monitor's time (its `now`) at the last answer, as every time on the page
// `refused`: the monitor answered 401 (the page's 30-day cookie ran out, the token or password was changed);
// it is there, and what helps is what it opens the page with (its X-Queue-Mood-Login: "token", "password" or both).
const ASK = {token: "open its link with the token again", password: "reload it and give the user and password",
             "token password": "open its link with the token again, or reload it and give the user and password"};
const ask = (login) => ASK[login] || ASK.token;
function setStale(stale, refused) {
  document.body.classList.toggle("stale", stale);
  $("stale").hidden = !stale;
  const why = refused ? "the monitor refuses this page: " + ask(refused) : "the monitor is not reachable";
  if (stale) text($("stale"), (lastStatusAt ? "No data since " + at(lastStatusAt) : "No data yet") + " — " + why);
  // The tab too: the state it said (or "Queue mood", read as all well) is no longer known. A poll that
  // succeeds sets it again (renderStatus).
  if (stale) text(document.querySelector("title"), "NO DATA · Queue mood");
}

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  parent.appendChild(e);
  return e;
}

function renderHistory(h) {
  // The last hour, or since the first point when the monitor has run for less (5 min at least).
  // Margins fit labels at 26 px (style.css): the chart is drawn about 0.54x on a 390-px phone, so text stays 14 px there.
  const svg = $("chart"), W = 600, H = 260, L = 84, R = 46, T = 18, B = 36;
  svg.replaceChildren();
  zone(h);
  const end = h.now;  // the monitor's clock: its points are stamped by it
  const pts = h.points.filter((p) => p.t + h.step_s >= end - h.span_s);
  const start = Math.max(end - h.span_s, Math.min(end - 300, pts.length ? pts[0].t : end));
  const x = (t) => L + (W - L - R) * Math.max(0, (t - start) / (end - start));
  const maxFaces = Math.max(1, ...pts.map((p) => p.faces));
  const yShare = (v) => T + (H - T - B) * (1 - v);
  const yFaces = (n) => T + (H - T - B) * (1 - n / maxFaces);
  for (const v of [0, 0.5, 1]) {
    el("line", {x1: L, x2: W - R, y1: yShare(v), y2: yShare(v), class: "grid"}, svg);
    el("text", {x: L - 8, y: yShare(v) + 8, "text-anchor": "end"}, svg).textContent = pct(v);
  }
  el("text", {x: W - R + 6, y: yFaces(maxFaces) + 8}, svg).textContent = maxFaces;
  el("text", {x: W - R + 6, y: yFaces(0) + 8}, svg).textContent = "0";
  const hm = (t) => hhmm(new Date(t * 1000));
  // The axis's times are the monitor's too: the legend says in which zone (both, where the clocks changed within the hour).
  const zoned = [...new Set([start, end].map((t) => zoneSaid(new Date(t * 1000))))].filter(Boolean).join(" /");
  text($("chart-zone"), zoned ? " ·\u00a0times" + zoned.replaceAll(" ", "\u00a0") : "");  // wrapped as one
  for (let i = 0; i <= 2; i++) {  // three times fit a phone at this size
    const t = start + (end - start) * i / 2;
    el("text", {x: x(t), y: H - 7, "text-anchor": ["start", "middle", "end"][i]}, svg).textContent = hm(t);
  }
  for (const p of pts) {
    if (p.alert) el("rect", {x: x(p.t), y: T, width: Math.max(1, x(p.t + h.step_s) - x(p.t)), height: H - T - B, class: "alert"}, svg);
  }
  // One line per run of steps that all had frames: where a step is missing (the camera was down,
  // the monitor stopped) the chart stays empty, not bridged by a slope through figures nobody saw.
  const runs = [];
  for (const p of pts) {
    const last = runs.length ? runs[runs.length - 1] : null;
    if (last && p.t - last[last.length - 1].t <= 1.5 * h.step_s) last.push(p); else runs.push([p]);
  }
  const line = (f, cls) => {
    for (const run of runs) {
      const coords = run.map((p) => `${x(Math.min(end, p.t + h.step_s / 2)).toFixed(1)},${f(p).toFixed(1)}`);
      if (coords.length === 1) coords.unshift(`${x(run[0].t).toFixed(1)},${f(run[0]).toFixed(1)}`);
      el("polyline", {points: coords.join(" "), class: cls}, svg);
    }
  };
  line((p) => yFaces(p.faces), "faces");
  line((p) => yShare(p.negative_share), "share");
  svg.dataset.points = pts.length;

  // What the chart shows, in words, for a screen reader (the svg is one image to it).
  const spans = [];  // alert periods: [first step, last step]
  for (const p of pts.filter((q) => q.alert)) {
    const last = spans.length ? spans[spans.length - 1] : null;
    if (last && p.t - last[1] <= 1.5 * h.step_s) last[1] = p.t; else spans.push([p.t, p.t]);
  }
  const shares = pts.map((p) => p.negative_share), faces = pts.map((p) => p.faces);
  const figures = pts.length ? `unhappy share ${pct(Math.min(...shares))} to ${pct(Math.max(...shares))}, ` +
    `${pct(shares[shares.length - 1])} at ${hm(pts[pts.length - 1].t)}; ${Math.min(...faces)} to ${Math.max(...faces)} faces; `
    : "no figures; ";
  const alerts = spans.length ? "alert raised " + spans.map(([a, b]) => b + 1.5 * h.step_s >= end ? `from ${hm(a)}` : `${hm(a)} to ${hm(b + h.step_s)}`).join(", ")
    : "no alert";
  svg.setAttribute("aria-label", `Last hour, ${hm(start)} to ${hm(end)}${zoned}: ${figures}${alerts}`);
}

// Only the /status poll (the one given `stale`) speaks in the header line: a failed /history
// leaves the chart as it was, and must not call a monitor that answers /status unreachable.
async function poll(path, render, every, stale) {
  let ok = false, refused = "";
  const say = (what) => { if (stale) text($("updated"), what); };
  const abort = new AbortController(), giveUp = setTimeout(() => abort.abort(), ANSWER_WITHIN_MS);
  try {
    // From the origin: a page opened by a link with the user and password in it (a till's kiosk) has them in its
    // base URL, and chromium refuses to fetch a relative path against it; the browser sends them along anyway.
    // X-Queue-Mood-Poll: a refusal comes without a Basic challenge, for which the browser would ask for the
    // password, a prompt the poll's time limit takes away again; the banner says what to do instead.
    const r = await fetch(new URL(path, location.origin), {cache: "no-store", credentials: "same-origin", signal: abort.signal,
                                                           headers: {"X-Queue-Mood-Poll": "1"}});
    if (r.status === 401) { refused = r.headers.get("X-Queue-Mood-Login") || "token"; say("not authorised: " + ask(refused)); return; }
    if (r.ok) { render(await r.json()); ok = true; }
    else say(`monitor answered ${r.status}`);
  } catch (e) {
    say("monitor not reachable, retrying…");
  } finally {
    clearTimeout(giveUp);
    if (stale) stale(!ok, refused);
    setTimeout(() => poll(path, render, every, stale), every);
  }
}

poll("/status", renderStatus, STATUS_EVERY_MS, setStale);
poll("/history", renderHistory, HISTORY_EVERY_MS);
