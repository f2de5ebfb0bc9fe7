// The search page of `ee serve`. Everything that comes from the index or the manifest is inserted as
// text (textContent), never as HTML; media come from /media/SIDE/ROW.jpg|wav only.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: null, page: 0, info: null, file: null };

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function say(message, isError) {
  $("status").textContent = message;
  $("status").classList.toggle("error", Boolean(isError));
}

async function call(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  return body;
}

// Media load at most two at a time (the server decodes two at a time and answers 503 beyond); one
// that fails is tried again a few times before it is marked.
const media = { queue: [], running: 0, generation: 0 };

function loadMedia(node, src) {
  media.queue.push({ node, src, tries: 0, generation: media.generation });
  pump();
}

function pump() {
  document.body.dataset.state = media.queue.length || media.running ? "loading-media" : "done";
  while (media.running < 2 && media.queue.length) {
    const job = media.queue.shift();
    if (job.generation !== media.generation) continue;
    media.running += 1;
    const isAudio = job.node.tagName === "AUDIO";
    const finish = (ok) => {
      job.node.onload = job.node.onerror = job.node.onloadedmetadata = null;
      media.running -= 1;
      if (!ok && job.tries < 4 && job.generation === media.generation) {
        job.tries += 1;
        setTimeout(() => { media.queue.push(job); pump(); }, 400 * job.tries);
      } else if (!ok) {
        job.node.replaceWith(el("span", "missing", "could not be shown"));
      }
      pump();
    };
    if (isAudio) job.node.onloadedmetadata = () => finish(true);
    else job.node.onload = () => finish(true);
    job.node.onerror = () => finish(false);
    job.node.removeAttribute("src");
    job.node.src = job.src;
    if (isAudio) job.node.load();
  }
  document.body.dataset.state = media.queue.length || media.running ? "loading-media" : "done";
}

function seconds(x) { return `${Number(x).toFixed(2)} s`; }

function medium(side, m, matched) {
  const box = el("div", "medium" + (matched ? " matched" : ""));
  if (m.src && m.src.endsWith(".jpg") && !m.missing) {
    const img = el("img");
    img.alt = m.file ? `frame of ${m.file}` : "image";
    box.append(img);
    loadMedia(img, m.src);
  } else if (m.src && m.src.endsWith(".wav") && !m.missing) {
    const audio = el("audio");
    audio.controls = true;
    audio.preload = "metadata";
    if (m.duration !== undefined) audio.dataset.window = String(m.duration);
    box.append(audio);
    loadMedia(audio, m.src);
  } else if (m.kind === "text" && m.text !== undefined && m.text !== null) {
    box.append(el("div", "text", m.text));
  }
  const where = [];
  if (m.file) where.push(m.file);
  if (m.t !== undefined) where.push(`at ${seconds(m.t)}`);
  if (m.start !== undefined && m.end !== undefined) where.push(`${seconds(m.start)}–${seconds(m.end)}`);
  box.append(el("div", "meta", `side ${side}: ${where.join(" · ") || m.kind}`));
  if (m.missing) box.append(el("div", "missing", "missing file"));
  return box;
}

function renderHit(side, hit) {
  const li = el("li", "hit");
  const head = el("div", "hit-head");
  head.append(el("span", "rank", `#${hit.rank}`), el("span", "score", hit.score.toFixed(4)));
  if (hit.label) head.append(el("span", "label", hit.label));
  head.append(el("span", "meta", hit.id));
  if (hit.split) head.append(el("span", "meta", hit.split));
  const pair = el("div", "pair");
  for (const s of ["a", "b"]) pair.append(medium(s, hit.pair[s], s === side));
  li.append(head, pair);
  return li;
}

function render(data) {
  media.generation += 1;
  media.queue = [];
  state.token = data.token;
  state.page = data.page;
  const results = $("results");
  results.replaceChildren();
  let total = 0;
  let more = false;
  for (const list of data.lists) {
    const section = el("section", "side-list");
    section.dataset.side = list.side;
    section.append(el("h2", null, `Side ${list.side}: ${list.encoder} (${list.modality}), ${list.rows} rows indexed`));
    section.append(el("p", "note", `Outlined: the side ${list.side} item that matched; beside it, the rest of its pair.`));
    const ol = el("ol");
    for (const hit of list.hits) ol.append(renderHit(list.side, hit));
    if (!list.hits.length) section.append(el("p", "note", "no more hits on this side"));
    section.append(ol);
    results.append(section);
    total += list.hits.length;
    more = more || list.more;
  }
  say(`“${data.query}” through ${data.through}: page ${data.page + 1}, ${total} hits`);
  $("pager").hidden = !(more || data.page > 0);
  $("prev").disabled = data.page === 0;
  $("next").disabled = !more;
  $("page-no").textContent = `page ${data.page + 1}`;
  pump();
}

async function searchText(words) {
  say("searching…");
  try {
    render(await call(`/api/search?q=${encodeURIComponent(words)}`));
    history.replaceState(null, "", `?q=${encodeURIComponent(words)}`);
  } catch (e) { say(e.message, true); document.body.dataset.state = "error"; }
}

async function goToPage(page) {
  if (!state.token) return;
  try { render(await call(`/api/search?token=${encodeURIComponent(state.token)}&page=${page}`)); }
  catch (e) { say(e.message, true); }
}

function isVideo(name) {
  const ext = name.slice(name.lastIndexOf(".")).toLowerCase();
  return Boolean(state.info && state.info.uploads.video && state.info.uploads.video.includes(ext));
}

async function upload(file, pick) {
  $("pick").hidden = true;
  const limit = state.info && state.info.max_upload_bytes;
  if (limit && file.size > limit) {  // the server would refuse it (413) only after the browser sent it
    say(`${file.name} is larger than the server's limit of ${(limit / 1048576).toFixed(0)} MB`, true);
    return;
  }
  say(`searching by ${file.name}…`);
  const url = `/api/upload?name=${encodeURIComponent(file.name)}` + (pick ? `&pick=${pick}` : "");
  try { render(await call(url, { method: "POST", body: file })); }
  catch (e) { say(e.message, true); document.body.dataset.state = "error"; }
}

function chosen(file) {
  if (!file) return;
  state.file = file;
  if (isVideo(file.name)) {
    $("pick").hidden = false;
    say(`${file.name}: search by its frame or its audio?`);
  } else {
    upload(file, null);
  }
}

function describe(info) {
  const parts = Object.entries(info.sides).map(
    ([s, d]) => `side ${s}: ${d.encoder} (${d.modality}), ${d.indexed} of ${d.embedded} embedded rows indexed`);
  $("about").textContent = `${info.adapter} · ${parts.join(" · ") || "nothing indexed yet"}`;
}

async function start() {
  try { state.info = await call("/api/info"); }
  catch (e) { say(e.message, true); return; }
  describe(state.info);
  const text = state.info.text;
  $("q").disabled = $("go").disabled = !text.enabled;
  $("text-off").hidden = text.enabled;
  $("text-off").textContent = text.enabled ? "" : `Text search is off: ${text.reason}`;
  if (text.enabled) $("q").title = `words go through ${text.how}`;
  $("file").accept = Object.values(state.info.uploads).flat().join(",");
  $("text-form").addEventListener("submit", (ev) => { ev.preventDefault(); searchText($("q").value); });
  $("file").addEventListener("change", () => chosen($("file").files[0]));
  $("pick-frame").addEventListener("click", () => upload(state.file, "frame"));
  $("pick-audio").addEventListener("click", () => upload(state.file, "audio"));
  $("prev").addEventListener("click", () => goToPage(state.page - 1));
  $("next").addEventListener("click", () => goToPage(state.page + 1));
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    chosen(ev.dataTransfer.files[0]);
  });
  // rows indexed after the page opened are searched at once; the counts follow every 15 s
  setInterval(async () => { try { describe(await call("/api/info")); } catch (e) { /* server gone */ } }, 15000);
  const q = new URLSearchParams(location.search).get("q");
  if (q !== null && text.enabled) { $("q").value = q; await searchText(q); }
  else document.body.dataset.state = "ready";
}

start();
