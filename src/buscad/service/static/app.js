// buscad web page: upload one image to POST /v1/analyze and show the result.
// Plain browser JavaScript, no dependencies, no network access beyond this server.
"use strict";

const FLAG_TEXT = {
  inconsistent:
    "The classifier and the outlined lesion disagree (for example a lesion was outlined in an image " +
    "classified as normal). The result was corrected automatically; check the image yourself.",
  uncertain:
    "The model is not confident about this result (no class clearly ahead, or the outline changes when " +
    "the image is flipped). Treat it with extra caution.",
  colour:
    "The image has colour content, as colour Doppler or elastography images do. The model was trained on " +
    "gray B-mode images only; this result is unreliable.",
};

const LABEL_TEXT = {
  normal: "normal (no lesion found)",
  benign: "benign lesion",
  malignant: "malignant lesion",
  lesion: "lesion (no benign/malignant classifier in this model)",
};

const OUTLINE_RGB = [255, 212, 0];
const FILL_RGB = [0, 190, 255];
const MAX_ROWS = 10;

const DESCRIPTORS = [
  ["orientation", "Orientation"],
  ["shape", "Shape"],
  ["margin", "Margin"],
  ["posterior", "Posterior features"],
  ["echo_pattern", "Echo pattern"],
];

const DICOM_KINDS = { seg: "DICOM SEG (mask)", sr: "DICOM SR (measurement report)", sc: "DICOM image" };

const state = {
  result: null, image: null, overlayFill: null, outline: null, fileName: "image", dicomProblem: null, reportUrl: null,
};

const $ = (id) => document.getElementById(id);
const KEY_STORE = "buscad-api-key";

// The API key (when the server requires one) lives in sessionStorage: this tab only, never a cookie,
// so another site cannot make the browser send it.
function apiFetch(url, options = {}) {
  const key = sessionStorage.getItem(KEY_STORE);
  const headers = new Headers(options.headers || {});
  if (key) headers.set("Authorization", `Bearer ${key}`);
  return fetch(url, { ...options, headers });
}

// Show the key form; resolves once a key was entered (one prompt shared by every waiting request).
let keyPrompt = null;
function askForKey(message) {
  const form = $("key-form");
  form.hidden = false;
  setStatus(message, true);
  $("api-key").focus();
  if (keyPrompt) return keyPrompt;
  keyPrompt = new Promise((resolve) => {
    form.onsubmit = (event) => {
      event.preventDefault();
      const key = $("api-key").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORE, key);
      $("api-key").value = "";
      form.hidden = true;
      setStatus("");
      keyPrompt = null;
      resolve();
    };
  });
  return keyPrompt;
}

// fetch through apiFetch; on 401 ask for the key and try again.
async function authorizedFetch(url, options = {}) {
  for (;;) {
    const response = await apiFetch(url, options);
    if (response.status !== 401) return response;
    const hadKey = sessionStorage.getItem(KEY_STORE) !== null;
    sessionStorage.removeItem(KEY_STORE);
    await askForKey(hadKey ? "That API key was refused; enter a valid key." : "This server needs an API key.");
  }
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function formatNumber(value, digits = 1) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the returned image could not be displayed"));
    img.src = src;
  });
}

// Boolean lesion mask (Uint8Array, 1 = lesion) from the mask PNG.
function maskPixels(maskImage) {
  const canvas = document.createElement("canvas");
  canvas.width = maskImage.naturalWidth;
  canvas.height = maskImage.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(maskImage, 0, 0);
  const rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const mask = new Uint8Array(canvas.width * canvas.height);
  for (let i = 0; i < mask.length; i++) mask[i] = rgba[4 * i] > 127 ? 1 : 0;
  return { mask, width: canvas.width, height: canvas.height };
}

// Outline pixels: lesion pixels with a 4-neighbour outside the lesion (or at the image border).
function outlineOf({ mask, width, height }) {
  const edge = new Uint8Array(mask.length);
  let count = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      if (!mask[i]) continue;
      const border = x === 0 || y === 0 || x === width - 1 || y === height - 1;
      if (border || !mask[i - 1] || !mask[i + 1] || !mask[i - width] || !mask[i + width]) {
        edge[i] = 1;
        count++;
      }
    }
  }
  return { edge, count };
}

// Draw the edge 2-3 px thick for large images so it stays visible once the canvas is scaled down.
function thicken(edge, width, height, radius) {
  if (radius <= 0) return edge;
  const out = new Uint8Array(edge.length);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (!edge[y * width + x]) continue;
      for (let dy = -radius; dy <= radius; dy++) {
        for (let dx = -radius; dx <= radius; dx++) {
          const yy = y + dy;
          const xx = x + dx;
          if (yy >= 0 && xx >= 0 && yy < height && xx < width) out[yy * width + xx] = 1;
        }
      }
    }
  }
  return out;
}

function prepareOverlay(maskImage) {
  const pixels = maskPixels(maskImage);
  const { edge, count } = outlineOf(pixels);
  const radius = Math.floor(Math.max(pixels.width, pixels.height) / 500);
  state.overlayFill = pixels;
  state.outline = { edge: thicken(edge, pixels.width, pixels.height, radius), count };
}

function draw() {
  const canvas = $("view");
  const img = state.image;
  const { mask, width, height } = state.overlayFill;
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0, width, height);
  const opacity = Number($("opacity").value) / 100;
  const frame = ctx.getImageData(0, 0, width, height);
  const data = frame.data;
  const edge = state.outline.edge;
  for (let i = 0; i < mask.length; i++) {
    const p = 4 * i;
    if (edge[i]) {
      data[p] = OUTLINE_RGB[0];
      data[p + 1] = OUTLINE_RGB[1];
      data[p + 2] = OUTLINE_RGB[2];
    } else if (mask[i] && opacity > 0) {
      for (let c = 0; c < 3; c++) data[p + c] = Math.round(data[p + c] * (1 - opacity) + FILL_RGB[c] * opacity);
    }
  }
  ctx.putImageData(frame, 0, 0);
  canvas.dataset.outlinePixels = String(state.outline.count);
  canvas.dataset.state = "drawn";
}

function showProbabilities(result) {
  const list = $("probabilities");
  list.replaceChildren();
  const probabilities = result.probabilities || {};
  const entries = Object.entries(probabilities).filter(([, p]) => p !== null && p !== undefined);
  if (entries.length === 0) {
    const li = document.createElement("li");
    li.textContent = "This model has no classifier: only the lesion outline is predicted.";
    list.append(li);
    return;
  }
  const top = Math.max(...entries.map(([, p]) => p));
  for (const [label, p] of entries) {
    const li = document.createElement("li");
    li.className = p === top ? "top" : "";
    li.dataset.label = label;
    const name = document.createElement("span");
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "track";
    track.setAttribute("role", "img");
    track.setAttribute("aria-label", `${label}: ${(100 * p).toFixed(1)} percent`);
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * p).toFixed(1)}%`;
    li.append(name, track, value);
    list.append(li);
  }
}

function showLabel(result) {
  const refined = result.refined_label;
  $("refined-label").textContent = LABEL_TEXT[refined] || refined;
  const note = $("label-note");
  if (result.label && result.label !== refined) {
    note.textContent = `The classifier alone said "${result.label}"; see the warnings below.`;
  } else {
    note.textContent = "";
  }
}

function showFlags(result) {
  const list = $("flags");
  list.replaceChildren();
  const flags = result.flags || {};
  const raised = Object.keys(flags).filter((k) => flags[k]);
  for (const flag of raised) {
    const li = document.createElement("li");
    li.dataset.flag = flag;
    li.textContent = FLAG_TEXT[flag] || `Warning: ${flag}.`;
    list.append(li);
  }
  for (const reason of result.reasons || []) {
    const li = document.createElement("li");
    li.className = "reason";
    li.textContent = reason;
    list.append(li);
  }
  $("warnings").hidden = list.children.length === 0;
}

function cell(row, text, numeric = false) {
  const td = document.createElement("td");
  td.textContent = text;
  if (numeric) td.className = "num";
  row.append(td);
}

function showMeasurements(result) {
  const box = $("measurements");
  box.replaceChildren();
  const m = result.measurements || {};
  const lesions = m.lesions || [];
  const mm = Array.isArray(m.spacing_mm) && m.spacing_mm.length === 2;
  const p = document.createElement("p");
  if (lesions.length === 0) {
    p.textContent = "No lesion outlined, nothing to measure.";
    box.append(p);
    return;
  }
  p.textContent = mm
    ? `Pixel size ${formatNumber(m.spacing_mm[0], 3)} × ${formatNumber(m.spacing_mm[1], 3)} mm.`
    : "Pixel size unknown: sizes are in pixels. Enter the pixel size above to get millimetres.";
  box.append(p);
  const unit = mm ? "mm" : "px";
  const area = mm ? "area_mm2" : "area_px";
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  const columns = [
    ["#", "lesion number, largest first"],
    [`area ${mm ? "mm²" : "px"}`, "lesion area"],
    [`long axis ${unit}`, "longest diameter (maximum Feret diameter)"],
    [`short axis ${unit}`, "diameter perpendicular to the long axis"],
    [`width ${unit}`, "horizontal extent"],
    [`depth ${unit}`, "vertical extent"],
    ["D/W", "depth-to-width ratio (above 1: taller than wide)"],
  ];
  for (const [title, help] of columns) {
    const th = document.createElement("th");
    th.textContent = title;
    th.title = help;
    if (title !== "#") th.className = "num";
    head.append(th);
  }
  const body = table.createTBody();
  for (const lesion of lesions.slice(0, MAX_ROWS)) {
    const row = body.insertRow();
    cell(row, String(lesion.id));
    cell(row, formatNumber(lesion[area], mm ? 1 : 0), true);
    cell(row, formatNumber(lesion[`longest_diameter_${unit}`]), true);
    cell(row, formatNumber(lesion[`perpendicular_diameter_${unit}`]), true);
    cell(row, formatNumber(lesion[`width_${unit}`]), true);
    cell(row, formatNumber(lesion[`height_${unit}`]), true);
    cell(row, formatNumber(lesion.depth_to_width, 2), true);
  }
  const wrap = document.createElement("div");
  wrap.className = "table-wrap";
  wrap.append(table);
  box.append(wrap);
  if (lesions.length > MAX_ROWS) {
    const more = document.createElement("p");
    more.className = "note";
    more.textContent = `${lesions.length - MAX_ROWS} smaller lesions not listed (all are in the JSON).`;
    box.append(more);
  }
  if (m.total && lesions.length > 1) {
    const total = document.createElement("p");
    total.textContent = mm
      ? `${lesions.length} lesions, total area ${formatNumber(m.total.area_mm2)} mm².`
      : `${lesions.length} lesions, total area ${formatNumber(m.total.area_px, 0)} px.`;
    box.append(total);
  }
  if (lesions.some((lesion) => lesion.depth_to_width > 1)) {
    const note = document.createElement("p");
    note.className = "note";
    note.textContent = "D/W above 1 means taller than wide (depth is the vertical extent).";
    box.append(note);
  }
}

function descriptorValues(key, entry) {
  const n = (value, digits) => formatNumber(value, digits);
  switch (key) {
    case "orientation":
      return `depth/width ${n(entry.depth_to_width, 2)}, long axis at ${n(entry.angle_deg, 0)}°`;
    case "shape":
      return `axis ratio ${n(entry.axis_ratio, 2)}, solidity ${n(entry.solidity, 3)}, ellipse mismatch ${n(entry.ellipse_mismatch, 2)}`;
    case "margin":
      return `roughness ${n(entry.roughness, 3)}, ${n(entry.protrusions, 0)} protrusion(s)`;
    case "posterior":
      return `below / beside the lesion ${n(entry.ratio, 2)}`;
    case "echo_pattern":
      return `lesion / surrounding tissue ${n(entry.ratio, 2)}`;
    default:
      return "";
  }
}

// BI-RADS-style descriptors of the largest lesion: category and the numbers behind it.
function showDescriptors(result) {
  const box = $("descriptors");
  box.replaceChildren();
  const d = result.descriptors;
  if (!d) {
    const p = document.createElement("p");
    p.textContent = "No lesion outlined, nothing to describe.";
    box.append(p);
    return;
  }
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const title of ["descriptor", "category", `measured (${d.units === "mm" ? "mm" : "px"})`]) {
    const th = document.createElement("th");
    th.textContent = title;
    head.append(th);
  }
  const body = table.createTBody();
  for (const [key, title] of DESCRIPTORS) {
    const entry = d[key] || {};
    const row = body.insertRow();
    row.dataset.descriptor = key;
    cell(row, title);
    cell(row, entry.category || "not assessed");
    row.lastChild.className = "category";
    cell(row, descriptorValues(key, entry));
    row.lastChild.className = "value";
  }
  const wrap = document.createElement("div");
  wrap.className = "table-wrap";
  wrap.append(table);
  box.append(wrap);
  if (d.components > 1) {
    const note = document.createElement("p");
    note.className = "note";
    note.textContent = `The largest of ${d.components} outlined regions is described.`;
    box.append(note);
  }
}

// The case report: a self-contained page from the server, opened in a new tab (print it to PDF from there).
function reportBlob() {
  return new Blob([state.result.report_html], { type: "text/html" });
}

function openReport() {
  if (!state.result || !state.result.report_html) return;
  if (state.reportUrl) URL.revokeObjectURL(state.reportUrl);
  state.reportUrl = URL.createObjectURL(reportBlob());
  const a = document.createElement("a");
  a.href = state.reportUrl;
  a.target = "_blank";
  a.rel = "noopener";
  document.body.append(a);
  a.click();
  a.remove();
}

// DICOM SEG and SR of a DICOM upload (base64 in the answer), or why there are none.
function showDicom(result) {
  const box = $("dicom");
  const buttons = $("dicom-files");
  buttons.replaceChildren();
  const files = result.dicom_files || {};
  for (const [kind, file] of Object.entries(files)) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.dataset.kind = kind;
    button.textContent = `${DICOM_KINDS[kind] || kind}: ${file.filename}`;
    button.addEventListener("click", () => {
      download(file.filename, new Blob([base64Bytes(file.base64)], { type: file.media_type || "application/dicom" }));
    });
    buttons.append(button);
  }
  const text = $("dicom-text");
  if (state.dicomProblem) {
    text.textContent = `No DICOM files for this image: ${state.dicomProblem}`;
  } else {
    text.textContent =
      "A DICOM Segmentation and a measurement report (TID 1500) that reference the uploaded image, " +
      "for a PACS or DICOM viewer.";
  }
  box.hidden = buttons.children.length === 0 && !state.dicomProblem;
}

// DICOM files start with a 128-byte preamble and "DICM" (how the server recognises them too).
async function isDicom(file) {
  try {
    const magic = new Uint8Array(await file.slice(128, 132).arrayBuffer());
    return magic.length === 4 && String.fromCharCode(...magic) === "DICM";
  } catch (err) {
    return false;
  }
}

function download(name, blob) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

function base64Bytes(b64) {
  const raw = atob(b64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

function stem(name) {
  const dot = name.lastIndexOf(".");
  return (dot > 0 ? name.slice(0, dot) : name) || "image";
}

function analyzeForm(file, dicom) {
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("include_image", "true");
  form.append("report", "true");
  if (dicom) form.append("dicom", "true");
  form.append("tta", $("tta").checked ? "true" : "false");
  const spacing = $("spacing").value.trim();
  if (spacing) form.append("pixel_spacing_mm", spacing);
  return form;
}

async function post(form) {
  const response = await authorizedFetch("/v1/analyze", { method: "POST", body: form });
  let body;
  try {
    body = await response.json();
  } catch (err) {
    body = { detail: `unexpected answer (HTTP ${response.status})` };
  }
  return { response, body };
}

async function analyze(file) {
  state.fileName = file.name || "image";
  state.result = null; // never show the previous image's result next to a new one
  state.dicomProblem = null;
  $("result").hidden = true;
  $("view").dataset.state = "busy";
  setStatus(`Analysing ${state.fileName}…`);
  const dicom = await isDicom(file);
  let response;
  let body;
  try {
    ({ response, body } = await post(analyzeForm(file, dicom)));
    if (dicom && response.status === 422) {
      // the image may be fine while its DICOM files cannot be made (e.g. no study UIDs): analyse it without
      const retry = await post(analyzeForm(file, false));
      if (retry.response.ok) state.dicomProblem = body.detail || "the server could not make them";
      ({ response, body } = retry);
    }
  } catch (err) {
    setStatus("The server could not be reached.", true);
    return;
  }
  if (!response.ok) {
    setStatus(`Could not analyse ${state.fileName}: ${body.detail || response.statusText}`, true);
    return;
  }
  await show(body);
  const ms = body.timings && body.timings.service_ms;
  setStatus(`Analysed ${state.fileName}${ms ? ` in ${(ms / 1000).toFixed(2)} s` : ""}.`);
}

async function show(result) {
  state.result = result;
  const [image, mask] = await Promise.all([
    loadImage(`data:image/png;base64,${result.image_png_base64}`),
    loadImage(`data:image/png;base64,${result.mask_png_base64}`),
  ]);
  state.image = image;
  prepareOverlay(mask);
  $("result").hidden = false;
  draw();
  showLabel(result);
  showProbabilities(result);
  showFlags(result);
  showMeasurements(result);
  showDescriptors(result);
  showDicom(result);
  $("open-report").disabled = !result.report_html;
  $("download-report").disabled = !result.report_html;
}

async function showModel() {
  try {
    const response = await authorizedFetch("/v1/model");
    const card = await response.json();
    const parts = [`Model ${card.model_id || "unknown"}`];
    if (card.architecture) parts.push(`architecture ${card.architecture}`);
    if (card.training_data) parts.push(`trained on ${card.training_data}`);
    if (card.version) parts.push(`buscad ${card.version}`);
    if (card.release) parts.push(`built-in model ${card.release.name} ${card.release.version}`);
    $("model-info").textContent = `${parts.join(" · ")}.`;
    if (card.card_markdown) {
      $("model-card-text").textContent = card.card_markdown;
      $("model-card").hidden = false;
    }
  } catch (err) {
    $("model-info").textContent = "Model information unavailable.";
  }
}

function wire() {
  const zone = $("dropzone");
  const input = $("file");
  input.addEventListener("change", () => {
    if (input.files.length) analyze(input.files[0]);
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) analyze(file);
  });
  const opacity = $("opacity");
  opacity.addEventListener("input", () => {
    $("opacity-value").textContent = `${opacity.value}%`;
    if (state.result) draw();
  });
  $("download-mask").addEventListener("click", () => {
    if (!state.result) return;
    download(`${stem(state.fileName)}_mask.png`, new Blob([base64Bytes(state.result.mask_png_base64)], { type: "image/png" }));
  });
  $("download-json").addEventListener("click", () => {
    if (!state.result) return;
    const { image_png_base64: _image, report_html: _report, dicom_files: _dicom, ...record } = state.result;
    download(`${stem(state.fileName)}.json`, new Blob([JSON.stringify(record, null, 2)], { type: "application/json" }));
  });
  $("open-report").addEventListener("click", openReport);
  $("download-report").addEventListener("click", () => {
    if (!state.result || !state.result.report_html) return;
    download(`${stem(state.fileName)}_report.html`, reportBlob());
  });
  showModel();
}

document.addEventListener("DOMContentLoaded", wire);
