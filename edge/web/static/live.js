// The live page: polls api/state, fetches pictures only when a new verdict arrived.
// The token comes from the URL (#token=...) and goes in an Authorization header, never a cookie.
"use strict";

const token = new URLSearchParams(location.hash.slice(1)).get("token") || sessionStorage.getItem("token");
if (token) sessionStorage.setItem("token", token);
let station = null;
let shownFrame = null;
const shownThumbs = new Map();

function headers() {
  return token ? { Authorization: "Bearer " + token } : {};
}

function api(path) {
  return "api/" + path + (station ? (path.includes("?") ? "&" : "?") + "station=" + encodeURIComponent(station) : "");
}

async function picture(path) {
  const response = await fetch(api(path), { headers: headers(), cache: "no-store" });
  if (!response.ok) return null;
  return URL.createObjectURL(await response.blob());
}

function text(id, value) {
  document.getElementById(id).textContent = value;
}

// The model's words, beside its picture; a random or demo model's under a label saying what they are worth.
function words(explanation, label) {
  const block = document.createElement("p");
  block.className = "words";
  const said = document.createElement("q");
  said.textContent = explanation;
  block.append(said);
  if (label) {
    const note = document.createElement("span");
    note.className = "toy";
    note.textContent = label;
    block.append(note);
  }
  return block;
}

async function loadStations() {
  const response = await fetch("api/stations", { headers: headers() });
  if (!response.ok) throw new Error((await response.json()).error);
  const names = (await response.json()).stations;
  const select = document.getElementById("station");
  station = names[0];
  select.replaceChildren(...names.map((name) => new Option(name, name)));
  select.hidden = names.length < 2;
  select.onchange = () => { station = select.value; shownFrame = null; };
}

function render(state) {
  text("station-name", state.station);
  const badge = document.getElementById("state");
  badge.textContent = state.paused ? "paused" : "inspecting";
  badge.className = "badge " + (state.paused ? "paused" : "online");
  const warning = document.getElementById("random");
  warning.hidden = !state.model_warning;
  warning.textContent = state.model_warning || "";
  for (const kind of ["OK", "NG", "UNCERTAIN"]) text("count-" + kind, state.counts[kind]);
  text("yield", state.yield === null ? "–" : (100 * state.yield).toFixed(1) + " %");
  const now = state.current;
  const verdict = document.getElementById("verdict");
  verdict.textContent = now ? now.verdict : "–";
  verdict.className = "verdict " + (now ? now.verdict : "");
  text("confidence", now ? now.confidence.toFixed(2) : "");
  text("part", now && now.part_id ? "part " + now.part_id : "");
  document.getElementById("defects").replaceChildren(...(now ? now.defects : []).map((d) => {
    const li = document.createElement("li");
    li.textContent = `${d.class} ${d.confidence.toFixed(2)} at [${d.bbox.join(", ")}]`;
    if (d.explanation) li.append(words(d.explanation, now.words_label));
    return li;
  }));
  if (now && now.error) {
    const li = document.createElement("li");
    li.textContent = now.error;
    document.getElementById("defects").append(li);
  }
}

async function renderPictures(state) {
  const now = state.current;
  if (now && now.id !== shownFrame) {
    const url = await picture("frame.jpg");
    if (url) {
      const img = document.getElementById("frame");
      if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
      img.src = url;
      img.dataset.verdict = now.id;
      shownFrame = now.id;
    }
  }
  const items = [];
  for (const part of state.recent_ng) {
    if (!shownThumbs.has(part.id)) shownThumbs.set(part.id, await picture("ng/" + part.id + ".jpg"));
    const li = document.createElement("li");
    li.dataset.id = part.id;
    const img = document.createElement("img");
    img.alt = "NG part";
    if (shownThumbs.get(part.id)) img.src = shownThumbs.get(part.id);
    const info = document.createElement("div");
    info.className = "info";
    const caption = document.createElement("div");
    caption.textContent = `${part.part_id ? "part " + part.part_id + " · " : ""}${part.classes.join(", ")} ` +
      `${part.confidence.toFixed(2)} · ${new Date(part.at).toLocaleTimeString()}`;
    info.append(caption);
    if (part.explanation) info.append(words(part.explanation, part.words_label));
    li.append(img, info);
    items.push(li);
  }
  document.getElementById("recent").replaceChildren(...items);
  for (const id of [...shownThumbs.keys()]) {
    if (!state.recent_ng.some((p) => p.id === id)) {
      if (shownThumbs.get(id)) URL.revokeObjectURL(shownThumbs.get(id));
      shownThumbs.delete(id);
    }
  }
}

async function poll() {
  try {
    if (station === null) await loadStations();
    const response = await fetch(api("state"), { headers: headers(), cache: "no-store" });
    const state = await response.json();
    if (!response.ok) throw new Error(state.error);
    render(state);
    await renderPictures(state);
  } catch (error) {
    text("message", String(error.message || error));
  } finally {
    setTimeout(poll, 500);
  }
}

async function press(action) {
  const response = await fetch(api(action), { method: "POST", headers: headers() });
  const body = await response.json();
  text("message", response.ok ? "" : body.error);
}

document.getElementById("pause").onclick = () => press("pause");
document.getElementById("resume").onclick = () => press("resume");
poll();
