// The pacs-engine viewer: QIDO studies -> series -> images, low resolution first, window/level on raw values.
// State for tests and debugging: window.viewer.draws records every draw in order; lastFrame holds the raw
// values of the last full-resolution (level 0) frame drawn.
// Credentials, when the archive asks for them (401): a bearer token from the URL fragment (#token=...), or
// typed into the sign-in form (token, or user name and password for Basic). Every request then carries
// them in an Authorization header; they stay in this tab's sessionStorage and leave the address bar at once.
"use strict";

const PREVIEW_LEVEL = 2;
const DICOM_JSON = "application/dicom+json";
const AUTH_KEY = "pacs-engine.authorization";

const viewer = {
  draws: [],          // {sop, level, width, height, checksum} of every draw, in order
  lastFrame: null,    // raw values of the last level-0 frame drawn (Int16Array / Uint16Array / ...)
  instances: [],      // instances of the open series, in InstanceNumber order
  index: 0,           // position of the shown instance
  center: null,       // window center and width, in rescaled (modality) units
  width: null,
  errors: [],         // messages of failed requests, newest last
  signInShown: false, // the archive answered 401 and the sign-in form was shown
  study: null,
  series: null,
};
window.viewer = viewer;

const canvas = document.getElementById("image");
const context = canvas.getContext("2d");
const scratch = document.createElement("canvas");  // the frame at its own size, scaled onto `canvas`
const scratchContext = scratch.getContext("2d");
const fullFrames = new Map();  // sop -> raw level-0 values, so scrolling back needs no request
let shown = null;              // {instance, level, raw, width, height} of what is on the canvas
let showToken = 0;             // a newer show() makes the responses of older ones stale

function value(item, tag, fallback = null) {
  const element = item[tag];
  return element && element.Value && element.Value.length ? element.Value[0] : fallback;
}

function text(item, tag) {
  const v = value(item, tag, "");
  return typeof v === "object" && v !== null ? (v.Alphabetic || "") : String(v);
}

function setStatus(message) {
  document.getElementById("status").textContent = message;
}

function fail(error) {
  if (error instanceof SignInNeeded) return;  // the sign-in form says it; not an error of the archive
  const message = String(error);
  viewer.errors.push(message);
  setStatus(message);
}

function takeTokenFromFragment() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const token = fragment.get("token");
  if (!token) return;
  sessionStorage.setItem(AUTH_KEY, `Bearer ${token}`);
  // The fragment never reaches a server, but it would stay in the history and in shared links.
  history.replaceState(null, "", window.location.pathname + window.location.search);
}

class SignInNeeded extends Error {}

// fetch with the stored credentials. credentials "omit": a Basic challenge would make the browser open
// its own login dialog in front of the page (or, headless, wait on it); the page's form is the one place
// that asks, and its credentials travel in the Authorization header only.
async function request(url, accept) {
  const headers = {Accept: accept};
  const authorization = sessionStorage.getItem(AUTH_KEY);
  if (authorization) headers.Authorization = authorization;
  const response = await fetch(url, {headers, credentials: "omit"});
  if (response.status === 401) {
    showSignIn(authorization ? "Those credentials were not accepted." : "This archive needs credentials.");
    throw new SignInNeeded(`${url}: HTTP 401`);
  }
  return response;
}

function showSignIn(message) {
  viewer.signInShown = true;
  document.getElementById("signin-message").textContent = message;
  document.getElementById("signin").hidden = false;
}

function utf8Base64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

document.getElementById("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = document.getElementById("signin-token").value.trim();
  const user = document.getElementById("signin-user").value;
  const password = document.getElementById("signin-password").value;
  if (token) sessionStorage.setItem(AUTH_KEY, `Bearer ${token}`);
  else if (user) sessionStorage.setItem(AUTH_KEY, `Basic ${utf8Base64(`${user}:${password}`)}`);
  else return;
  document.getElementById("signin-password").value = "";
  document.getElementById("signin").hidden = true;
  start();
});

async function getJson(url) {
  const response = await request(url, DICOM_JSON);
  if (response.status === 204) return [];
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function listItem(list, label, uid, onClick) {
  const li = document.createElement("li");
  li.textContent = label;
  li.dataset.uid = uid;
  li.addEventListener("click", () => {
    for (const other of list.children) other.classList.remove("selected");
    li.classList.add("selected");
    onClick().catch((error) => fail(error));
  });
  list.appendChild(li);
}

async function loadStudies() {
  const list = document.getElementById("studies");
  list.replaceChildren();
  for (const study of await getJson("studies")) {
    const uid = value(study, "0020000D");
    const label = [text(study, "00100010"), text(study, "00081030"), text(study, "00080020"),
                   text(study, "00080061")].filter(Boolean).join(" · ") || uid;
    listItem(list, label, uid, () => openStudy(uid));
  }
}

async function openStudy(studyUid) {
  viewer.study = studyUid;
  const list = document.getElementById("series");
  list.replaceChildren();
  for (const series of await getJson(`studies/${studyUid}/series`)) {
    const uid = value(series, "0020000E");
    const label = [text(series, "00080060"), text(series, "0008103E"),
                   `${text(series, "00201209")} images`].filter(Boolean).join(" · ");
    listItem(list, label, uid, () => openSeries(studyUid, uid));
  }
}

function describe(item) {
  const number = (tag, fallback) => Number(value(item, tag, fallback));
  return {
    sop: value(item, "00080018"),
    number: number("00200013", 0),
    rows: number("00280010", 0),
    columns: number("00280011", 0),
    samples: number("00280002", 1),
    bitsAllocated: number("00280100", 16),
    signed: number("00280103", 0) === 1,
    invert: text(item, "00280004") === "MONOCHROME1",
    center: value(item, "00281050"),
    width: value(item, "00281051"),
    slope: number("00281053", 1),
    intercept: number("00281052", 0),
  };
}

async function openSeries(studyUid, seriesUid) {
  viewer.series = seriesUid;
  const metadata = await getJson(`studies/${studyUid}/series/${seriesUid}/metadata`);
  viewer.instances = metadata.map(describe).sort((a, b) => a.number - b.number);
  viewer.index = 0;
  viewer.center = null;
  viewer.width = null;
  fullFrames.clear();
  if (viewer.instances.length) await show(0);
}

function frameUrl(instance, level) {
  const query = level > 0 ? `?level=${level}` : "";
  return `studies/${viewer.study}/series/${viewer.series}/instances/${instance.sop}/frames/1${query}`;
}

function sideAt(size, level) {
  return Math.ceil(size / 2 ** level);
}

// Native little-endian samples of one frame as a typed array of the stored signedness and width.
function parseFrame(instance, level, buffer) {
  const width = sideAt(instance.columns, level);
  const height = sideAt(instance.rows, level);
  const bytes = instance.bitsAllocated <= 8 ? 1 : 2;
  if (buffer.byteLength !== width * height * bytes) {
    throw new Error(`frame of ${instance.sop} level ${level}: ${buffer.byteLength} bytes, ` +
                    `expected ${width}x${height}x${bytes}`);
  }
  const view = new DataView(buffer);
  const raw = bytes === 1 ? (instance.signed ? new Int8Array(width * height) : new Uint8Array(width * height))
                          : (instance.signed ? new Int16Array(width * height) : new Uint16Array(width * height));
  for (let i = 0; i < raw.length; i++) {
    raw[i] = bytes === 1 ? (instance.signed ? view.getInt8(i) : view.getUint8(i))
                         : (instance.signed ? view.getInt16(2 * i, true) : view.getUint16(2 * i, true));
  }
  return {raw, width, height};
}

async function fetchFrame(instance, level) {
  const response = await request(frameUrl(instance, level), "application/octet-stream");
  if (!response.ok) throw new Error(`frame of ${instance.sop} level ${level}: HTTP ${response.status}`);
  return parseFrame(instance, level, await response.arrayBuffer());
}

// FNV-1a (32 bit) over the little-endian bytes of the raw values: the test computes the same in Python.
function checksum(raw) {
  const bytes = raw.BYTES_PER_ELEMENT;
  let hash = 0x811c9dc5;
  for (let i = 0; i < raw.length; i++) {
    const v = raw[i] & 0xffff;
    for (let b = 0; b < bytes; b++) {
      hash ^= (v >> (8 * b)) & 0xff;
      hash = Math.imul(hash, 0x01000193) >>> 0;
    }
  }
  return hash >>> 0;
}

function defaultWindow(instance, raw) {
  if (instance.center !== null && instance.width !== null && Number(instance.width) > 0) {
    return [Number(instance.center), Number(instance.width)];
  }
  let low = Infinity;
  let high = -Infinity;
  for (const v of raw) {
    if (v < low) low = v;
    if (v > high) high = v;
  }
  low = low * instance.slope + instance.intercept;
  high = high * instance.slope + instance.intercept;
  return [(low + high) / 2, Math.max(1, high - low)];
}

function paint() {
  const {instance, raw, width, height} = shown;
  const image = scratchContext.createImageData(width, height);
  const pixels = image.data;
  const low = viewer.center - viewer.width / 2;
  const scale = 255 / viewer.width;
  for (let i = 0; i < raw.length; i++) {
    const modality = raw[i] * instance.slope + instance.intercept;
    let grey = Math.round((modality - low) * scale);
    grey = grey < 0 ? 0 : grey > 255 ? 255 : grey;
    if (instance.invert) grey = 255 - grey;
    const p = 4 * i;
    pixels[p] = pixels[p + 1] = pixels[p + 2] = grey;
    pixels[p + 3] = 255;
  }
  scratch.width = width;
  scratch.height = height;
  scratchContext.putImageData(image, 0, 0);
  canvas.width = instance.columns;
  canvas.height = instance.rows;
  context.imageSmoothingEnabled = shown.level > 0;
  context.drawImage(scratch, 0, 0, instance.columns, instance.rows);
}

function draw(instance, level, frame) {
  shown = {instance, level, ...frame};
  if (viewer.center === null) [viewer.center, viewer.width] = defaultWindow(instance, frame.raw);
  document.getElementById("wc").value = Math.round(viewer.center);
  document.getElementById("ww").value = Math.round(viewer.width);
  paint();
  if (level === 0) viewer.lastFrame = frame.raw;
  viewer.draws.push({sop: instance.sop, level, width: frame.width, height: frame.height,
                     checksum: checksum(frame.raw)});
  document.getElementById("position").textContent =
    `image ${viewer.index + 1} / ${viewer.instances.length}` + (level > 0 ? ` (level ${level})` : "");
}

async function show(index) {
  const token = ++showToken;
  viewer.index = index;
  const instance = viewer.instances[index];
  if (instance.samples !== 1) {
    fail(`instance ${instance.sop}: ${instance.samples} samples per pixel; this viewer shows greyscale only`);
    return;
  }
  const cached = fullFrames.get(instance.sop);
  if (cached) {
    draw(instance, 0, cached);
    return;
  }
  setStatus("loading");
  const full = fetchFrame(instance, 0);  // requested at once, drawn after the preview
  full.catch(() => {});                  // its error is reported below, not as an unhandled rejection
  const previewLevel = Math.min(PREVIEW_LEVEL, Math.floor(Math.log2(Math.max(1, Math.min(instance.rows, instance.columns)))));
  if (previewLevel > 0) {
    try {
      const preview = await fetchFrame(instance, previewLevel);
      if (token === showToken) draw(instance, previewLevel, preview);
    } catch (error) {
      fail(error);  // no preview: the full frame still follows
    }
  }
  const frame = await full;
  fullFrames.set(instance.sop, frame);
  if (token === showToken) {
    draw(instance, 0, frame);
    setStatus("");
  }
}

function step(delta) {
  if (!viewer.instances.length) return;
  const next = Math.min(viewer.instances.length - 1, Math.max(0, viewer.index + delta));
  if (next !== viewer.index) show(next).catch((error) => fail(error));
}

function setWindow(center, width) {
  if (!Number.isFinite(center) || !Number.isFinite(width) || width < 1) return;
  viewer.center = center;
  viewer.width = width;
  if (shown) draw(shown.instance, shown.level, shown);
}

canvas.addEventListener("wheel", (event) => {
  event.preventDefault();
  step(event.deltaY > 0 ? 1 : -1);
}, {passive: false});

document.addEventListener("keydown", (event) => {
  if (event.target instanceof HTMLInputElement) return;
  const deltas = {ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1};
  if (event.key in deltas) {
    event.preventDefault();
    step(deltas[event.key]);
  }
});

let dragFrom = null;
canvas.addEventListener("mousedown", (event) => {
  dragFrom = {x: event.clientX, y: event.clientY, center: viewer.center, width: viewer.width};
});
window.addEventListener("mouseup", () => { dragFrom = null; });
window.addEventListener("mousemove", (event) => {
  if (!dragFrom || viewer.center === null) return;
  // Horizontal drag widens the window, vertical drag moves its center (the usual radiology convention).
  setWindow(dragFrom.center + (event.clientY - dragFrom.y), Math.max(1, dragFrom.width + (event.clientX - dragFrom.x)));
});

for (const id of ["wc", "ww"]) {
  document.getElementById(id).addEventListener("change", () => {
    setWindow(Number(document.getElementById("wc").value), Number(document.getElementById("ww").value));
  });
}

function start() {
  loadStudies().catch(fail);
}

takeTokenFromFragment();
start();
