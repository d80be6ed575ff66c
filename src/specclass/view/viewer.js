// The one controller of the specclass viewer page (see specclass/view/page.py).
// Every widget of the page calls this CustomJS; `cb_obj.name` says which one fired.
// Bokeh passes the page's models as the CustomJS args: rows, store, filt, tview, spec, masked,
// lines, probs, fig, and the widgets (pred, pipe, agree, unsure, prob, source, search,
// count, info, smoothing, z, mark, exportb, status), plus cfg (plain data).
"use strict";

const D = rows.data;
const N = D.name.length;

function wavelengths(n) {
  const x = new Float64Array(n);
  for (let i = 0; i < n; i++) x[i] = Math.pow(10, cfg.loglam0 + i * cfg.dloglam);
  return x;
}

// int16 codes -> flux and sigma (NaN where masked); inverse of data.encode_spectra.
function decode(i) {
  const S = store.data;
  const qf = S.flux[i], qs = S.sigma[i];
  const fa = S.fa[i], fk = S.fk[i], smin = S.smin[i], sk = S.sk[i];
  const n = qf.length;
  const flux = new Float64Array(n), sigma = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    flux[j] = fa * Math.sinh(qf[j] * fk);
    sigma[j] = qs[j] > 0 ? smin * Math.exp((qs[j] - 1) * sk) : NaN;
  }
  return [flux, sigma];
}

// Inverse-variance-weighted boxcar over `width` pixels; sigma of the weighted mean.
function smooth(flux, sigma, width) {
  const n = flux.length, h = Math.floor(width / 2);
  if (h < 1) return [flux, sigma];
  const cw = new Float64Array(n + 1), cwf = new Float64Array(n + 1);
  for (let j = 0; j < n; j++) {
    const w = sigma[j] > 0 ? 1 / (sigma[j] * sigma[j]) : 0;
    cw[j + 1] = cw[j] + w;
    cwf[j + 1] = cwf[j] + w * flux[j];
  }
  const f = new Float64Array(n), s = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    const a = Math.max(0, j - h), b = Math.min(n, j + h + 1);
    const w = cw[b] - cw[a];
    f[j] = w > 0 ? (cwf[b] - cwf[a]) / w : flux[j];
    s[j] = sigma[j] > 0 && w > 0 ? 1 / Math.sqrt(w) : NaN;
  }
  return [f, s];
}

function current() {
  const s = rows.selected.indices;
  return s.length ? s[0] : -1;
}

function chosen(group) {
  return new Set(group.active.map((k) => group.labels[k]));
}

function passes(i, f) {
  if (!f.pred.has(D.predicted[i])) return false;
  if (!f.pipe.has(D.pipeline[i] || cfg.no_label)) return false;
  if (f.agree !== "all" && D.agreement[i] !== f.agree) return false;
  if (f.unsure === "uncertain only" && D.uncertain[i] !== "yes") return false;
  if (f.unsure === "confident only" && D.uncertain[i] === "yes") return false;
  const p = D.probability[i];
  if (p < f.lo - 1e-9 || p > f.hi + 1e-9) return false;
  if (f.source !== "all" && D.source[i] !== f.source) return false;
  if (f.text && !(D.name[i].toLowerCase().includes(f.text) || D.file[i].toLowerCase().includes(f.text))) return false;
  return true;
}

function applyFilters() {
  const f = {
    pred: chosen(pred), pipe: chosen(pipe), agree: agree.value, unsure: unsure.value,
    lo: prob.value[0], hi: prob.value[1], source: source.value, text: search.value.trim().toLowerCase(),
  };
  const idx = [];
  for (let i = 0; i < N; i++) if (passes(i, f)) idx.push(i);
  filt.indices = idx;
  count.text = `<b>${idx.length}</b> of ${N} spectra shown (most confident first)`;
  const i = current();
  if (idx.length === 0) {
    rows.selected.indices = [];
    show(-1);
  } else if (!idx.includes(i)) {
    rows.selected.indices = [idx[0]];
  }
}

function step(delta) {
  const idx = filt.indices;
  if (!idx.length) return;
  const k = idx.indexOf(current());
  const j = k < 0 ? 0 : Math.min(idx.length - 1, Math.max(0, k + delta));
  rows.selected.indices = [idx[j]];
}

function fmt(x, d) {
  return Number.isFinite(x) ? x.toFixed(d) : "–";
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function percentile(sorted, q) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))))];
}

function drawSpectrum(i) {
  if (i < 0) {
    spec.data = {x: [], flux: [], lo: [], hi: []};
    masked.data = {x0: [], x1: []};
    return;
  }
  let [flux, sigma] = decode(i);
  [flux, sigma] = smooth(flux, sigma, smoothing.value);
  const n = flux.length, x = wavelengths(n);
  const lo = new Float64Array(n), hi = new Float64Array(n), good = [];
  const x0 = [], x1 = [];
  const half = (k) => Math.pow(10, cfg.loglam0 + (k + 0.5) * cfg.dloglam);
  let start = -1;
  for (let j = 0; j < n; j++) {
    const ok = sigma[j] > 0;
    lo[j] = ok ? flux[j] - sigma[j] : NaN;
    hi[j] = ok ? flux[j] + sigma[j] : NaN;
    if (ok) good.push(flux[j]);
    if (!ok && start < 0) start = j;
    if ((ok || j === n - 1) && start >= 0) {
      x0.push(half(start - 1));
      x1.push(half(ok ? j - 1 : j));
      start = -1;
    }
  }
  const shown = flux.map((v, j) => (sigma[j] > 0 ? v : NaN));  // the line breaks at masked pixels
  spec.data = {x: x, flux: shown, lo: lo, hi: hi};
  masked.data = {x0: x0, x1: x1};
  good.sort((a, b) => a - b);
  let y0 = percentile(good, 0.005), y1 = percentile(good, 0.995);
  if (!Number.isFinite(y0) || !(y1 > y0)) { y0 = -1; y1 = 1; }
  const pad = 0.12 * (y1 - y0);
  fig.y_range.setv({start: y0 - pad, end: y1 + pad, reset_start: y0 - pad, reset_end: y1 + pad});
}

function drawLines() {
  const zt = String(z.value).trim();
  const zz = Number(zt);
  if (zt === "" || !Number.isFinite(zz) || zz <= -1) {
    lines.data = {x: [], name: [], color: []};
    status.text = zt === "" ? "no redshift: lines not marked" : `redshift '${esc(zt)}' is not a number > -1`;
    return;
  }
  const x = [], name = [], color = [];
  for (let k = 0; k < cfg.line_rest.length; k++) {
    x.push(cfg.line_rest[k] * (1 + zz));
    name.push(cfg.line_name[k]);
    color.push(cfg.line_kind[k] === "emission" ? cfg.emission_color : cfg.absorption_color);
  }
  lines.data = {x: x, name: name, color: color};
  const i = current();
  const pz = i >= 0 ? D.z[i] : NaN;
  const which = i >= 0 && Number.isFinite(pz) && Math.abs(pz - zz) < 1e-5 ? "pipeline" : "typed";
  status.text = `lines at z = ${zz.toFixed(4)} (${which}): <span style="color:${cfg.emission_color}">emission</span>, ` +
    `<span style="color:${cfg.absorption_color}">absorption</span>`;
}

function show(i) {
  drawSpectrum(i);
  if (i < 0) {
    probs.data = {cls: cfg.classes, p: cfg.classes.map(() => 0), text: cfg.classes.map(() => ""), color: cfg.classes.map(() => "#bbbbbb")};
    info.text = "<i>no spectrum matches the filters</i>";
    lines.data = {x: [], name: [], color: []};
    return;
  }
  const p = cfg.classes.map((c) => D["p_" + c][i]);
  probs.data = {
    cls: cfg.classes, p: p, text: p.map((v) => v.toFixed(3)),
    color: cfg.classes.map((c) => (c === D.predicted[i] ? cfg.predicted_color : "#bbbbbb")),
  };
  const idx = filt.indices, k = idx.indexOf(i);
  info.text =
    `<b>${esc(D.name[i])}</b> &nbsp; (${k + 1} of ${idx.length})<br>` +
    `predicted <b>${esc(D.predicted[i])}</b> p = ${fmt(D.probability[i], 3)}${D.uncertain[i] === "yes" ? " <b style='color:#b35c00'>uncertain</b>" : ""}` +
    ` &nbsp; pipeline <b>${esc(D.pipeline[i] || "–")}</b> ${esc(D.subclass[i])} (${esc(D.agreement[i])})<br>` +
    `z = ${fmt(D.z[i], 4)} &nbsp; ZWARNING ${D.zwarning[i] < 0 ? "–" : D.zwarning[i]} &nbsp; source ${esc(D.source[i] || "–")}` +
    ` &nbsp; marked <b>${esc(D.mark[i] || "–")}</b><br><span style="color:#666">${esc(D.file[i])}</span>`;
  fig.x_range.setv({start: cfg.wmin, end: cfg.wmax, reset_start: cfg.wmin, reset_end: cfg.wmax});
  const m = cfg.mark_labels.indexOf(D.mark[i]);
  window.specclassViewerBusy = true;  // the widget changes below are not the user's
  try {
    z.value = Number.isFinite(D.z[i]) ? D.z[i].toFixed(5) : "";
    mark.active = m >= 0 ? m : null;
  } finally {
    window.specclassViewerBusy = false;
  }
  drawLines();
}

function storageKey() {
  return "specclass-viewer-marks:" + cfg.page_id;
}

function saveMarks() {
  const marks = {};
  for (let i = 0; i < N; i++) if (D.mark[i]) marks[D.key[i]] = D.mark[i];
  try { window.localStorage.setItem(storageKey(), JSON.stringify(marks)); } catch (e) { /* storage off */ }
  const n = Object.keys(marks).length;
  exportb.label = `Export ${n} mark${n === 1 ? "" : "s"} (CSV)`;
}

function restoreMarks() {
  let marks = {};
  try { marks = JSON.parse(window.localStorage.getItem(storageKey()) || "{}"); } catch (e) { marks = {}; }
  for (let i = 0; i < N; i++) if (marks[D.key[i]]) D.mark[i] = marks[D.key[i]];
}

// A DataTable redraws when its CDSView changes (not when a column is edited in place).
function redrawTable() {
  tview.change.emit();
}

function setMark() {
  const i = current();
  if (i < 0) return;
  const v = mark.active == null ? "" : cfg.mark_labels[mark.active];
  D.mark[i] = v;
  redrawTable();
  saveMarks();
  show(i);
}

function csvCell(v) {
  const s = String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

function exportMarks() {
  const head = ["name", "file", "predicted_class", "probability", "pipeline_class", "z", "visual_class"];
  const out = [head.join(",")];
  for (let i = 0; i < N; i++) {
    if (!D.mark[i]) continue;
    out.push([D.name[i], D.file[i], D.predicted[i], fmt(D.probability[i], 6), D.pipeline[i],
      Number.isFinite(D.z[i]) ? D.z[i] : "", D.mark[i]].map(csvCell).join(","));
  }
  const blob = new Blob([out.join("\n") + "\n"], {type: "text/csv"});
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = cfg.export_name;
  document.body.appendChild(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  status.text = `exported ${out.length - 1} mark(s) to ${esc(cfg.export_name)}`;
}

// property changes pass the widget itself; button clicks an event whose origin is the button
const action = cb_obj.event_name === "document_ready" ? "init" : (cb_obj.origin ? cb_obj.origin.name : cb_obj.name);
switch (window.specclassViewerBusy && (action === "z" || action === "mark") ? "" : action) {
  case "": break;
  case "init": restoreMarks(); saveMarks(); applyFilters(); show(current()); break;
  case "selection": show(current()); break;
  case "prev": step(-1); break;
  case "next": step(1); break;
  case "smooth": drawSpectrum(current()); break;
  case "z": drawLines(); break;
  case "zreset": { const i = current(); if (i >= 0) z.value = Number.isFinite(D.z[i]) ? D.z[i].toFixed(5) : ""; break; }
  case "mark": setMark(); break;
  case "export": exportMarks(); break;
  default: applyFilters();  // every filter widget
}
