// gradprobe playground: controls <-> URL, theory on every change, jobs streamed over SSE.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  options: null, config: {}, job: null, source: null, theory: null,
  run: null, runs: [], theorySeq: 0, drawPending: false,
};
const PLOT = { displaylogo: false, responsive: true };
const MARGIN = { l: 55, r: 15, t: 35, b: 40 };

// ---------------------------------------------------------------- controls and the URL

function control(name) { return $("c-" + name); }

function readControls() {
  const out = {};
  for (const name of state.options.controls) {
    const el = control(name);
    out[name] = el.type === "checkbox" ? el.checked : el.value;
  }
  return out;
}

function writeControls(cfg) {
  for (const [name, value] of Object.entries(cfg)) {
    const el = control(name);
    if (!el) continue;
    if (el.type === "checkbox") el.checked = value === true || value === "true";
    else el.value = value;
  }
  showSliderValues();
}

function showSliderValues() {
  for (const name of ["sigma_w2", "sigma_b2"]) $("v-" + name).textContent = control(name).value;
}

function configFromURL() {
  const params = new URLSearchParams(window.location.search);
  const cfg = { ...state.options.defaults };
  for (const [key, value] of params) cfg[key] = value;  // unknown keys: the server says so
  return cfg;
}

function fillSelect(el, values) {
  for (const v of values) {
    const opt = document.createElement("option");
    opt.value = v; opt.textContent = v;
    el.appendChild(opt);
  }
}

function setError(message) {
  const box = $("error");
  box.hidden = !message;
  box.textContent = message || "";
  for (const name of state.options.controls) {
    const bad = !!message && [name, state.options.paths[name]].some((p) => message.startsWith(p + ":"));
    control(name).classList.toggle("bad", bad);
  }
}

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  };
  const response = await fetch(path, init);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function onControlChange(event) {
  const name = event && event.target && event.target.name;
  if (name === "sigma_w2" && !state.options.slider_inits.includes(control("init").value)) {
    control("init").value = "normal";  // the slider sets the variance itself
  }
  showSliderValues();
  state.config = readControls();
  const query = new URLSearchParams(state.config).toString();
  history.replaceState(null, "", "?" + query);
  updateTheory();
}

// ---------------------------------------------------------------- theory

function fmt(value) {
  if (value === null || value === undefined) return "-";
  if (typeof value === "string") return value;
  if (value === 0) return "0";
  const a = Math.abs(value);
  return a >= 1e4 || a < 1e-3 ? value.toExponential(3) : value.toPrecision(4);
}

async function updateTheory() {
  const seq = ++state.theorySeq;
  let panel;
  try {
    panel = await api("/api/theory", state.config);
  } catch (err) {
    if (seq === state.theorySeq) {
      setError(err.message);
      $("theory").classList.add("stale");  // what it shows is for the last valid values
    }
    return;
  }
  if (seq !== state.theorySeq) return;  // a newer change already asked
  setError("");
  $("theory").classList.remove("stale");
  state.theory = panel;
  renderTheory(panel);
}

function renderTheory(p) {
  Object.assign($("theory").dataset, { depth: p.depth, activation: p.activation, ms: p.ms });
  $("theory-reason").hidden = p.applies;
  $("theory-reason").textContent = p.applies ? "" :
    "Mean-field theory does not apply here: " + p.reason;
  for (const key of ["chi1", "q_star", "xi_grad", "phase", "log10_grad_ratio"]) {
    const el = $("th-" + key);
    const value = p.applies ? p[key] : null;
    el.dataset.value = value === null || value === undefined ? "" : JSON.stringify(value);
    el.textContent = p.applies ? fmt(value) : "n/a";
  }
  $("theory-notes").textContent = (p.notes || []).join("; ");
  drawPhase(p);
  drawSignal(p);
  scheduleDraw();
}

function drawPhase(p) {
  const d = p.diagram;
  const traces = [
    { type: "heatmap", x: d.sigma_w2, y: d.sigma_b2, z: d.log10_chi1, zmid: 0,
      colorscale: "RdBu", reversescale: true, colorbar: { title: { text: "log10 chi1" } },
      hovertemplate: "sigma_w2 %{x:.2f}<br>sigma_b2 %{y:.2f}<br>log10 chi1 %{z:.3f}<extra></extra>" },
    { type: "scatter", mode: "lines", x: d.critical_sigma_w2, y: d.sigma_b2, name: "chi1 = 1",
      line: { color: "black", width: 2 } },
  ];
  if (p.point) {
    traces.push({ type: "scatter", mode: "markers", x: [p.point.sigma_w2], y: [p.point.sigma_b2],
                  name: "this net", marker: { size: 12, color: "gold", line: { width: 2 } } });
  }
  Plotly.react("phase-plot", traces, {
    title: { text: `Phase diagram: ${d.activation}`, font: { size: 14 } }, margin: MARGIN,
    xaxis: { title: { text: "sigma_w2" } }, yaxis: { title: { text: "sigma_b2" } }, showlegend: false,
  }, PLOT);
}

function drawSignal(p) {
  const traces = p.applies ? [{
    type: "scatter", mode: "lines+markers", name: "theory",
    x: p.log10_signal.map((_, i) => i + 1), y: p.log10_signal,
  }] : [];
  Plotly.react("signal-plot", traces, {
    title: { text: "Predicted backward signal, log10 |g_l| / |g_L|", font: { size: 14 } },
    margin: MARGIN, xaxis: { title: { text: "layer" } }, yaxis: { title: { text: "log10" } },
    annotations: p.applies ? [] : [{ text: "theory does not apply", showarrow: false,
                                      xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
  }, PLOT);
}

// ---------------------------------------------------------------- live runs

function newRun(start) {
  return {
    id: start.run_id, label: start.label, depth: start.depth, status: "running",
    loss: { x: [], y: [] }, testAcc: { x: [], y: [] },
    signal: new Map(), saturation: new Map(), dead: new Map(),  // step -> per-depth array
  };
}

function addRows(run, rows) {
  for (const [step, , depth, quantity, value] of rows) {
    if (quantity === "loss") { run.loss.x.push(step); run.loss.y.push(value); }
    else if (quantity === "test_accuracy") { run.testAcc.x.push(step); run.testAcc.y.push(value); }
    else {
      const table = { backward_signal_norm: run.signal, saturated_fraction: run.saturation,
                      dead_unit_fraction: run.dead }[quantity];
      if (!table || depth < 1) continue;
      if (!table.has(step)) table.set(step, new Array(run.depth).fill(null));
      table.get(step)[depth - 1] = value;
    }
  }
}

function scheduleDraw() {
  if (state.drawPending) return;
  state.drawPending = true;  // at most ~5 redraws a second: plotly redraws are not free
  setTimeout(() => requestAnimationFrame(() => { state.drawPending = false; drawLive(); }), 200);
}

function lastOf(table) {
  const steps = [...table.keys()];
  return steps.length ? table.get(steps[steps.length - 1]) : null;
}

function drawLive() {
  const run = state.run;
  const shown = state.runs.filter((r) => r.overlay && r !== run).slice(-3);
  const lossTraces = shown.map((r) => ({ type: "scatter", mode: "lines", x: r.loss.x.slice(),
                                         y: r.loss.y.slice(), name: `${r.label} (${r.id})`,
                                         opacity: 0.6 }));
  if (run) {
    lossTraces.push({ type: "scatter", mode: "lines", x: run.loss.x.slice(), y: run.loss.y.slice(),
                      name: "loss", line: { color: "#1f77b4" } });
    lossTraces.push({ type: "scatter", mode: "lines+markers", x: run.testAcc.x.slice(),
                      y: run.testAcc.y.slice(), name: "test accuracy", yaxis: "y2",
                      line: { color: "#2ca02c" } });
  }
  Plotly.react("loss-plot", lossTraces, {
    title: { text: "Loss and accuracy", font: { size: 14 } }, margin: { ...MARGIN, r: 45 },
    xaxis: { title: { text: "step" } }, yaxis: { title: { text: "loss" } },
    yaxis2: { overlaying: "y", side: "right", range: [0, 1], title: { text: "accuracy" } },
    legend: { orientation: "h", y: -0.25 },
  }, PLOT);
  if (!run) return;
  const steps = [...run.signal.keys()];
  const z = [];
  for (let l = 0; l < run.depth; l++) {
    z.push(steps.map((s) => { const v = run.signal.get(s)[l]; return v > 0 ? Math.log10(v) : null; }));
  }
  Plotly.react("heatmap", [{
    type: "heatmap", x: steps, y: z.map((_, i) => i + 1), z, colorscale: "Viridis",
    colorbar: { title: { text: "log10 |g|" } },
  }], {
    title: { text: "Backward signal per layer over steps", font: { size: 14 } }, margin: MARGIN,
    xaxis: { title: { text: "step" } }, yaxis: { title: { text: "layer" } },
  }, PLOT);
  drawProfile(run);
  const sat = lastOf(run.saturation) || [];
  const dead = lastOf(run.dead) || [];
  const layers = sat.map((_, i) => i + 1);
  Plotly.react("saturation-plot", [
    { type: "bar", x: layers, y: sat, name: "saturated" },
    { type: "bar", x: layers, y: dead, name: "dead units" },
  ], {
    title: { text: "Saturation and dead units (latest record)", font: { size: 14 } },
    margin: MARGIN, barmode: "group", xaxis: { title: { text: "layer" } },
    yaxis: { title: { text: "fraction" }, range: [0, 1] }, legend: { orientation: "h", y: -0.25 },
  }, PLOT);
}

function drawProfile(run) {
  const latest = lastOf(run.signal);
  const traces = [];
  if (latest) {
    traces.push({ type: "scatter", mode: "lines+markers", name: "measured (latest)",
                  x: latest.map((_, i) => i + 1),
                  y: latest.map((v) => (v > 0 ? Math.log10(v) : null)) });
    const p = state.theory;
    const top = latest[latest.length - 1];
    if (p && p.applies && p.log10_signal.length === latest.length && top > 0) {
      traces.push({ type: "scatter", mode: "lines", name: "theory",
                    line: { dash: "dash", color: "black" },
                    x: p.log10_signal.map((_, i) => i + 1),
                    y: p.log10_signal.map((v) => v + Math.log10(top)) });
    }
  }
  Plotly.react("profile-plot", traces, {
    title: { text: "Backward signal per layer: measured vs theory", font: { size: 14 } },
    margin: MARGIN, xaxis: { title: { text: "layer" } }, yaxis: { title: { text: "log10 |g_l|" } },
    legend: { orientation: "h", y: -0.25 },
  }, PLOT);
}

function drawOverlays() {
  const box = $("overlays");
  box.textContent = "";
  for (const run of state.runs.slice(-8)) {
    const label = document.createElement("label");
    const check = document.createElement("input");
    check.type = "checkbox"; check.checked = run.overlay;
    check.addEventListener("change", () => {
      run.overlay = check.checked;
      if (state.runs.filter((r) => r.overlay).length > 4) { run.overlay = false; check.checked = false; }
      scheduleDraw();
    });
    label.append(check, ` ${run.id} ${run.label}: ${run.status} `);
    box.append(label);
  }
}

// ---------------------------------------------------------------- jobs

function setBusy(busy) {
  $("train").disabled = $("diagnose").disabled = $("repair").disabled = busy;
  $("stop").disabled = !busy;
}

function setStatus(text, status) {
  const el = $("job-status");
  el.textContent = text;
  el.dataset.status = status || "";
}

async function startJob(kind) {
  let started;
  try {
    started = await api("/api/jobs", { kind, config: readControls() });
  } catch (err) {
    setError(err.message);
    return;
  }
  setError("");
  state.job = started.job;
  setBusy(true);
  setStatus(`${kind}: starting`, "running");
  if (kind === "diagnose") $("findings").textContent = "";
  if (kind === "repair") $("repairs").tBodies[0].textContent = "";
  const source = new EventSource(`/api/jobs/${started.job}/events`);
  state.source = source;
  const on = (type, fn) => source.addEventListener(type, (e) => {
    if (e.data !== undefined) fn(JSON.parse(e.data));  // "error" is also the browser's own event
  });
  on("start", (e) => {
    state.run = newRun(e);
    $("run-label").textContent = `${e.label}, run ${e.run_id}`;
    setStatus(`training run ${e.run_id}`, "running");
    $("job-status").dataset.runId = e.run_id;
    scheduleDraw();
  });
  on("rows", (e) => { addRows(state.run, e.rows); scheduleDraw(); });
  on("result", (e) => {
    state.run.status = e.status;
    state.run.overlay = true;
    state.runs.push(state.run);
    while (state.runs.filter((r) => r.overlay).length > 4) state.runs.find((r) => r.overlay).overlay = false;
    drawOverlays();
    setStatus(`run ${e.run_id}: ${e.status}`, e.status);
  });
  on("status", (e) => setStatus(e.message, "running"));
  on("finding", addFinding);
  on("diagnosis", (e) => {
    if (!$("findings").children.length) addFinding({ severity: "info", headline: e.headline });
    setStatus(`diagnosis: ${e.healthy ? "healthy" : "findings below"}`, "complete");
  });
  on("repair", (e) => addRepair(e.row));
  on("skipped", (e) => addFinding({ severity: "info", headline: `not tried: ${e.candidate}: ${e.reason}` }));
  on("repaired", (e) => setStatus(e.best ? `repair: best fix ${e.best}` : "repair: no candidate beat the baseline", "complete"));
  on("error", (e) => setError(e.message));
  on("end", (e) => {
    source.close();
    state.job = null;
    setBusy(false);
    if (e.cancelled && kind !== "train") setStatus(`${kind} stopped`, "interrupted");
    scheduleDraw();
  });
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) setBusy(false); };
}

function addFinding(f) {
  const li = document.createElement("li");
  li.className = f.severity;
  li.textContent = f.headline + (f.recommendation ? ` (fix: ${f.recommendation})` : "");
  $("findings").append(li);
}

function addRepair(row) {
  const tr = document.createElement("tr");
  tr.className = row.verdict;
  for (const v of [row.candidate, row.change, fmt(row.final_loss),
                   row.train_accuracy === null ? "-" : (100 * row.train_accuracy).toFixed(0) + "%",
                   row.verdict]) {
    const td = document.createElement("td");
    td.textContent = v;
    tr.append(td);
  }
  tr.dataset.loss = row.final_loss === null ? Infinity : row.final_loss;
  const body = $("repairs").tBodies[0];
  const after = [...body.rows].find((r) => Number(r.dataset.loss) > Number(tr.dataset.loss));
  body.insertBefore(tr, after || null);  // ranked by final loss, as gp.repair ranks
}

async function stopJob() {
  if (!state.job) return;
  try { await api(`/api/jobs/${state.job}/stop`, {}); } catch (err) { setError(err.message); }
}

// ---------------------------------------------------------------- start

async function main() {
  state.options = await api("/api/options");
  const o = state.options;
  fillSelect(control("activation"), o.activations);
  fillSelect(control("init"), o.inits);
  fillSelect(control("norm"), o.norms);
  fillSelect(control("optimizer"), o.optimizers);
  fillSelect(control("dataset"), o.datasets);
  fillSelect($("preset"), Object.keys(o.presets));
  $("autopilot-control").hidden = !o.controls.includes("autopilot");
  $("preset").addEventListener("change", (e) => {
    if (!e.target.value) return;
    writeControls(o.presets[e.target.value]);
    onControlChange();
  });
  for (const name of o.controls) {
    const el = control(name);
    el.addEventListener(el.type === "range" ? "input" : "change", onControlChange);
  }
  $("train").addEventListener("click", () => startJob("train"));
  $("diagnose").addEventListener("click", () => startJob("diagnose"));
  $("repair").addEventListener("click", () => startJob("repair"));
  $("stop").addEventListener("click", stopJob);
  state.config = configFromURL();
  writeControls(state.config);
  state.config = { ...state.config, ...readControls() };
  document.body.dataset.ready = "1";
  drawLive();
  await updateTheory();
}

main().catch((err) => setError(String(err.message || err)));
