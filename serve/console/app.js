// Hardy's web console: plain JavaScript against the public HTTP API, no build step.
//
// - Models: GET /v1/models.
// - Try an image: POST /v1/models/{m}/classify, POST /v1/corrupt then classify the PNG it
//   returns, POST /v1/models/{m}/attack?method=fgsm; the three side by side.
// - Jobs: GET/POST /v1/evaluations, DELETE /v1/evaluations/{id}, and the report
//   (GET /v1/evaluations/{id}/report), all with the bearer token. Images in the report are
//   fetched with the token too and shown through blob: URLs (an <img> cannot send headers).
//
// The page's Content-Security-Policy forbids inline script and style, so everything is
// wired here, and text from the server is only ever inserted as text (textContent), except
// the report, which is parsed inertly and stripped of anything active before insertion.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);

/// An API error: the HTTP status and the JSON `error` field (or the body's text).
class ApiError extends Error {
  constructor(status, message) {
    super(`${status}: ${message}`);
    this.status = status;
  }
}

/// fetch() that throws an ApiError for any non-2xx answer.
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {
    throw new Error(`cannot reach the server (${e.message})`);
  }
  if (!response.ok) {
    let message = response.statusText || "request failed";
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      if (body && typeof body.error === "string") message = body.error;
    } catch (_) {
      if (text) message = text.slice(0, 300);
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

function showError(el, error) {
  if (!el) return;
  if (error) {
    el.textContent = error.message || String(error);
    el.hidden = false;
  } else {
    el.textContent = "";
    el.hidden = true;
  }
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// ---------------------------------------------------------------- models

let models = [];
let names = { corruptions: [], benchmark_corruptions: [], perturbations: [], data_sets: [] };

async function loadServer() {
  try {
    const meta = await (await api("/v2")).json();
    $("#server").textContent = `${meta.name} ${meta.version}`;
  } catch (e) {
    $("#server").textContent = `server unreachable: ${e.message}`;
  }
}

async function loadNames() {
  try {
    names = await (await api("/console/names.json")).json();
  } catch (_) {
    // The selects stay empty; the API's errors still tell the user what is accepted.
  }
  const select = $("#corruption");
  select.replaceChildren(...names.corruptions.map((n) => el("option", { value: n, text: n.replaceAll("_", " ") })));
  if (names.corruptions.includes("fog")) select.value = "fog";
  $("#data-sets").replaceChildren(...names.data_sets.map((n) => el("option", { value: n })));
}

async function loadModels() {
  const error = $("#models-error");
  try {
    models = (await (await api("/v1/models")).json()).models;
    showError(error, null);
  } catch (e) {
    showError(error, e);
    return;
  }
  const rows = models.map((m) =>
    el(
      "tr",
      { "data-model": m.name },
      el("td", { class: "name", text: m.name }),
      el("td", { text: m.versions.join(", ") }),
      el("td", { text: m.device }),
      el("td", { text: String(m.classes) }),
      el("td", { text: `${m.input_width}×${m.input_height}` }),
    ),
  );
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: "5", class: "muted", text: "no model is loaded" })));
  $("#models").replaceChildren(...rows);
  for (const id of ["#try-model", "#job-model"]) {
    const select = $(id);
    const before = select.value;
    select.replaceChildren(...models.map((m) => el("option", { value: m.name, text: m.name })));
    if (models.some((m) => m.name === before)) select.value = before;
  }
}

// ---------------------------------------------------------------- try an image

let picked = null; // the File being shown
const blobUrls = { original: null, corrupted: null };
let runNumber = 0; // a newer run makes older answers stale

function card(name) {
  return $(`#card-${name}`);
}

function setCard(name, state, { image, caption, error, predictions } = {}) {
  const c = card(name);
  c.dataset.state = state;
  const img = $("img", c);
  if (image !== undefined) {
    if (image) {
      img.src = image;
      img.hidden = false;
    } else {
      img.removeAttribute("src");
      img.hidden = true;
    }
  }
  if (caption !== undefined) $(".caption", c).textContent = caption;
  showError($(".error", c), error || null);
  const list = $(".predictions", c);
  if (predictions) {
    list.replaceChildren(...predictions.map(predictionItem));
  } else if (state !== "done") {
    list.replaceChildren();
  }
}

function predictionItem(p) {
  const label = p.label ?? `class ${p.index}`;
  const pct = `${(p.score * 100).toFixed(1)}%`;
  const bar = el("span", { class: "bar" });
  bar.style.width = `${Math.max(0, Math.min(1, p.score)) * 100}%`;
  return el(
    "li",
    { "data-index": String(p.index), "data-label": label, "data-score": String(p.score) },
    el("span", { class: "label", text: label }),
    el("span", { class: "score", text: pct }),
    el("span", { class: "track" }, bar),
  );
}

function contentType(blob) {
  return blob.type && blob.type.startsWith("image/") ? blob.type : "application/octet-stream";
}

function modelPath() {
  const m = $("#try-model").value;
  if (!m) throw new Error("no model is loaded");
  return `/v1/models/${encodeURIComponent(m)}`;
}

function topK() {
  const k = parseInt($("#top-k").value, 10);
  return Number.isFinite(k) && k > 0 ? k : 5;
}

async function classify(blob) {
  const response = await api(`${modelPath()}/classify?top_k=${topK()}`, {
    method: "POST",
    headers: { "Content-Type": contentType(blob) },
    body: blob,
  });
  const body = await response.json();
  return { body, predictions: body.results[0].predictions };
}

function replaceBlobUrl(which, blob) {
  if (blobUrls[which]) URL.revokeObjectURL(blobUrls[which]);
  blobUrls[which] = blob ? URL.createObjectURL(blob) : null;
  return blobUrls[which];
}

async function runOriginal(file, run) {
  setCard("original", "loading", { image: replaceBlobUrl("original", file), caption: file.name });
  try {
    const { body, predictions } = await classify(file);
    if (run !== runNumber) return;
    setCard("original", "done", {
      caption: `${file.name} · ${body.model_name} v${body.model_version} on ${body.device}`,
      predictions,
    });
  } catch (e) {
    if (run === runNumber) setCard("original", "error", { error: e });
  }
}

async function runCorrupted(file, run) {
  const name = $("#corruption").value;
  const severity = $("#severity").value;
  setCard("corrupted", "loading", { image: null, caption: `${name.replaceAll("_", " ")}, severity ${severity}` });
  try {
    if (!name) throw new Error("no corruption names: /console/names.json did not load");
    const query = new URLSearchParams({ name, severity });
    const png = await (
      await api(`/v1/corrupt?${query}`, { method: "POST", headers: { "Content-Type": contentType(file) }, body: file })
    ).blob();
    if (run !== runNumber) return;
    setCard("corrupted", "loading", { image: replaceBlobUrl("corrupted", png) });
    const { predictions } = await classify(new Blob([png], { type: "image/png" }));
    if (run !== runNumber) return;
    setCard("corrupted", "done", { predictions });
  } catch (e) {
    if (run === runNumber) setCard("corrupted", "error", { error: e });
  }
}

async function runAdversarial(file, run) {
  const eps = $("#eps").value;
  setCard("adversarial", "loading", { image: null, caption: `FGSM, eps ${eps}/255` });
  try {
    const query = new URLSearchParams({ method: "fgsm", eps, top_k: String(topK()) });
    const body = await (
      await api(`${modelPath()}/attack?${query}`, {
        method: "POST",
        headers: { "Content-Type": contentType(file) },
        body: file,
      })
    ).json();
    if (run !== runNumber) return;
    const flipped = body.before[0] && body.after[0] && body.before[0].index !== body.after[0].index;
    setCard("adversarial", "done", {
      image: `data:image/png;base64,${body.image}`,
      caption: `FGSM, eps ${body.eps}/255 · L∞ ${body.linf}/255 · ${flipped ? "top-1 changed" : "top-1 unchanged"}`,
      predictions: body.after,
    });
  } catch (e) {
    if (run === runNumber) setCard("adversarial", "error", { error: e });
  }
}

function runAll() {
  if (!picked) return;
  runNumber += 1;
  const run = runNumber;
  $("#rerun").disabled = false;
  runOriginal(picked, run);
  runCorrupted(picked, run);
  runAdversarial(picked, run);
}

function pick(file) {
  if (!file) return;
  picked = file;
  runAll();
}

function wireTry() {
  const drop = $("#drop");
  $("#file").addEventListener("change", (e) => pick(e.target.files[0]));
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    pick(e.dataTransfer.files[0]);
  });
  $("#rerun").addEventListener("click", runAll);
  $("#try-model").addEventListener("change", runAll);
  $("#top-k").addEventListener("change", runAll);
  $("#corruption").addEventListener("change", () => picked && runCorrupted(picked, runNumber));
  $("#severity").addEventListener("change", () => picked && runCorrupted(picked, runNumber));
  $("#eps").addEventListener("change", () => picked && runAdversarial(picked, runNumber));
}

// ---------------------------------------------------------------- jobs

const TOKEN_KEY = "hardy.token";
let pollTimer = null;
const ownJobs = new Set(); // submitted from this tab: their report opens when they succeed
const seenStates = new Map();

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function authorised(options = {}) {
  return { ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${token()}` } };
}

function list(text) {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

function numbers(field, text) {
  return list(text).map((s) => {
    const n = Number(s);
    if (!Number.isFinite(n)) throw new Error(`${field}: ${JSON.stringify(s)} is not a number`);
    return n;
  });
}

/// The JSON spec of the form; options of a suite not chosen are left out.
function jobSpec() {
  const form = $("#job-form");
  const suites = [...form.querySelectorAll("input[name=suite]:checked")].map((i) => i.value);
  const spec = { model: $("#job-model").value, suites };
  if (!spec.model) throw new Error("no model is loaded");
  const data = $("#job-data").value.trim();
  if (data) spec.data = data;
  const limit = $("#job-limit").value.trim();
  if (limit) spec.limit = numbers("limit", limit)[0];
  if (suites.includes("c")) {
    const c = $("#job-corruptions").value.trim();
    if (c) spec.corruptions = c === "benchmark" || c === "all" ? c : list(c);
    const s = $("#job-severities").value.trim();
    if (s) spec.severities = numbers("severities", s);
  }
  if (suites.includes("fgsm") || suites.includes("pgd")) {
    const eps = $("#job-eps").value.trim();
    if (eps) spec.eps = numbers("eps", eps);
  }
  return spec;
}

async function submitJob(event) {
  event.preventDefault();
  const error = $("#jobs-error");
  const button = $("#submit-job");
  button.disabled = true;
  showError(error, null);
  try {
    if (!token()) throw new Error("enter the bearer token first");
    const spec = jobSpec();
    const body = await (
      await api(
        "/v1/evaluations",
        authorised({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(spec) }),
      )
    ).json();
    ownJobs.add(body.id);
    showError(error, null);
    poll();
  } catch (e) {
    showError(error, e);
    error.dataset.from = "submit";
  } finally {
    button.disabled = false;
  }
}

function when(seconds) {
  if (seconds == null) return "";
  return new Date(seconds * 1000).toLocaleTimeString();
}

function duration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function jobRow(job) {
  const row = el("tr", { "data-job": job.id });
  row.append(
    el("td", { class: "id", text: job.id }),
    el("td", { class: "model" }),
    el("td", { class: "suites" }),
    el("td", { class: "state" }),
    el("td", { class: "progress" }),
    el("td", { class: "speed" }),
    el("td", { class: "created" }),
    el("td", { class: "actions" }),
  );
  return row;
}

function updateRow(row, job) {
  row.dataset.state = job.state;
  const cells = (name) => $(`td.${name}`, row);
  cells("model").textContent = `${job.model} v${job.version}`;
  cells("suites").textContent = ((job.spec && job.spec.suites) || ["clean"]).join(", ");
  const state = el("span", { class: `badge ${job.state}`, text: job.state });
  const stateCell = cells("state");
  stateCell.replaceChildren(state);
  if (job.error) stateCell.append(el("div", { class: "error-text", text: job.error }));

  const p = job.progress || {};
  const done = p.done || 0;
  const total = p.total || 0;
  const progress = el("progress", { max: String(Math.max(total, 1)), value: String(done) });
  const parts = (p.parts || []).filter((x) => x.state === "running").map((x) => x.key);
  const label = el("span", { class: "count", text: `${done} / ${total}` });
  const cell = cells("progress");
  cell.replaceChildren(progress, label);
  if (parts.length) cell.append(el("div", { class: "muted small", text: parts.join(", ") }));

  const speed = [];
  if (job.state === "running") {
    if (p.images_per_second) speed.push(`${p.images_per_second.toFixed(1)} img/s`);
    if (p.eta_seconds != null) speed.push(`ETA ${duration(p.eta_seconds)}`);
  } else if (job.finished_at && job.started_at) {
    speed.push(`took ${duration(job.finished_at - job.started_at)}`);
  }
  cells("speed").textContent = speed.join(" · ");
  cells("created").textContent = when(job.created_at);

  const actions = cells("actions");
  const wanted = [];
  if (job.state === "queued" || job.state === "running") wanted.push("cancel");
  if (job.state === "succeeded") wanted.push("report");
  if (actions.dataset.actions !== wanted.join(",")) {
    actions.dataset.actions = wanted.join(",");
    actions.replaceChildren(
      ...wanted.map((a) => {
        const b = el("button", { type: "button", class: a, text: a === "cancel" ? "Cancel" : "Report" });
        b.addEventListener("click", () => (a === "cancel" ? cancelJob(job.id) : openReport(job.id)));
        return b;
      }),
    );
  }
}

function renderJobs(jobs) {
  const body = $("#jobs");
  const rows = new Map([...body.querySelectorAll("tr[data-job]")].map((r) => [r.dataset.job, r]));
  const ordered = jobs.map((job) => {
    const row = rows.get(job.id) || jobRow(job);
    updateRow(row, job);
    return row;
  });
  if (ordered.length === 0) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "8", class: "muted", text: "no jobs yet" })));
  } else {
    // Keeps existing rows (and their buttons) in place; only the order is set.
    body.replaceChildren(...ordered);
  }
  for (const job of jobs) {
    const before = seenStates.get(job.id);
    seenStates.set(job.id, job.state);
    if (job.state === "succeeded" && before !== "succeeded" && ownJobs.has(job.id)) {
      ownJobs.delete(job.id);
      openReport(job.id);
    }
  }
}

async function poll() {
  clearTimeout(pollTimer);
  if (!token()) return;
  let delay = 1000;
  try {
    const body = await (await api("/v1/evaluations", authorised())).json();
    renderJobs(body.jobs || []);
    // Clear only the poll's own error: a refused submission stays until the next submission.
    const shown = $("#jobs-error");
    if (shown.dataset.from === "poll") showError(shown, null);
  } catch (e) {
    showError($("#jobs-error"), e);
    $("#jobs-error").dataset.from = "poll";
    // Wrong token or jobs disabled: retrying every second would only repeat the error.
    delay = e.status === 401 || e.status === 403 ? 10000 : 3000;
  }
  if (token()) pollTimer = setTimeout(poll, delay);
}

async function cancelJob(id) {
  try {
    await api(`/v1/evaluations/${encodeURIComponent(id)}`, authorised({ method: "DELETE" }));
    showError($("#jobs-error"), null);
  } catch (e) {
    showError($("#jobs-error"), e);
    $("#jobs-error").dataset.from = "cancel";
  }
  poll();
}

// ---------------------------------------------------------------- reports

let reportUrls = [];
let reportJob = null;

function clearReport() {
  for (const u of reportUrls) URL.revokeObjectURL(u);
  reportUrls = [];
  $("#report-body").replaceChildren();
}

/// The report's body, made inert: no scripts, frames, forms, styles, event handlers or
/// javascript: links (the CSP would block them anyway).
function sanitise(doc) {
  for (const bad of doc.querySelectorAll("script, iframe, object, embed, form, style, link, meta, base")) bad.remove();
  for (const node of doc.body.querySelectorAll("*")) {
    for (const attr of [...node.attributes]) {
      const name = attr.name.toLowerCase();
      const value = attr.value.trim().toLowerCase();
      if (name.startsWith("on") || name === "style" || value.startsWith("javascript:")) node.removeAttribute(attr.name);
    }
  }
  return doc.body;
}

async function openReport(id) {
  const section = $("#report");
  const error = $(".error", section);
  reportJob = id;
  clearReport();
  section.hidden = false;
  section.dataset.job = id;
  section.dataset.state = "loading";
  $("#report-title").textContent = `Report of job ${id}`;
  showError(error, null);
  const base = `/v1/evaluations/${encodeURIComponent(id)}/`;
  try {
    const html = await (await api(`${base}report`, authorised())).text();
    if (reportJob !== id) return;
    // The page's own <style> would only be refused by this page's CSP (and logged as a
    // violation): drop it before parsing; our style sheet styles reports.
    const doc = new DOMParser().parseFromString(html.replace(/<style\b[^>]*>[\s\S]*?<\/style\s*>/gi, ""), "text/html");
    const body = sanitise(doc);
    const images = [...body.querySelectorAll("img")];
    const sources = images.map((img) => img.getAttribute("src") || "");
    for (const img of images) img.removeAttribute("src");
    $("#report-body").replaceChildren(...body.childNodes);
    section.scrollIntoView({ behavior: "smooth", block: "start" });
    // Each plot is fetched with the token and shown from a blob: URL.
    await Promise.all(
      images.map(async (img, i) => {
        const url = new URL(sources[i], new URL(base, location.href));
        if (url.origin !== location.origin) return;
        try {
          const blob = await (await api(url.pathname, authorised())).blob();
          if (reportJob !== id) return;
          const objectUrl = URL.createObjectURL(blob);
          reportUrls.push(objectUrl);
          img.src = objectUrl;
          await img.decode().catch(() => {});
          img.dataset.loaded = "true";
        } catch (e) {
          img.replaceWith(el("p", { class: "error", text: `${sources[i]}: ${e.message}` }));
        }
      }),
    );
    if (reportJob === id) section.dataset.state = "done";
  } catch (e) {
    if (reportJob === id) {
      section.dataset.state = "error";
      showError(error, e);
    }
  }
}

async function downloadResult() {
  if (!reportJob) return;
  const error = $(".error", $("#report"));
  try {
    const blob = await (await api(`/v1/evaluations/${encodeURIComponent(reportJob)}/result`, authorised())).blob();
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: `${reportJob}-result.json` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) {
    showError(error, e);
  }
}

function wireJobs() {
  $("#token").value = token();
  $("#token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const t = $("#token").value.trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    else sessionStorage.removeItem(TOKEN_KEY);
    poll();
  });
  $("#forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    $("#token").value = "";
    clearTimeout(pollTimer);
    $("#jobs").replaceChildren(
      el("tr", { class: "empty" }, el("td", { colspan: "8", class: "muted", text: "enter the token to see the jobs" })),
    );
  });
  $("#job-form").addEventListener("submit", submitJob);
  $("#report-close").addEventListener("click", () => {
    reportJob = null;
    clearReport();
    $("#report").hidden = true;
    $("#report").dataset.state = "idle";
  });
  $("#report-json").addEventListener("click", downloadResult);
}

// ---------------------------------------------------------------- start

document.addEventListener("DOMContentLoaded", async () => {
  wireTry();
  wireJobs();
  loadServer();
  await Promise.all([loadNames(), loadModels()]);
  document.body.dataset.ready = "true";
  poll();
});
