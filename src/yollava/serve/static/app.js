// yollava's web page: plain JavaScript, no build step, nothing loaded from elsewhere.
// Everything that comes from the server or from a file name is put on the page with textContent (or as
// Text nodes), never as HTML. Errors are shown next to the control that caused them, in plain words;
// the API's own message is kept under "Details".
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
  const CHAT_MAX_TOKENS = 256;  // the most an answer may take (less where the server allows less)
  const PHOTO_SIDE = 1536;      // the server shrinks photos to this anyway: larger ones are shrunk here first
  const POLL_MS = 1000;

  const state = {
    key: localStorage.getItem("yollava-key") || "",
    me: null,
    concepts: [],                 // GET /v1/concepts
    jobs: new Map(),              // job id -> job view (with .receivedAt), for the jobs this page follows
    failed: [],                   // recently failed / cancelled jobs of names that have no concept
    thumbs: new Map(),            // "name|created|job" -> Promise<string[]>
    newPhotos: [],                // {file, url}
    attachment: null,             // {file, url, name}
    chat: [],                     // entries {role, text, image, found, finish, limit}
    follow: true,                 // the chat log follows new content (the reader is at the bottom)
    pollTimer: null,
    nameCheck: { name: "", result: null, timer: null },
  };

  // ---- small helpers ----------------------------------------------------------------------
  function el(tag, opts, ...kids) {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(opts || {})) {
      if (v == null || v === false) continue;
      if (k === "text") n.textContent = v;
      else if (k === "class") n.className = v;
      else if (k === "dataset") Object.assign(n.dataset, v);
      else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
      else n.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of kids) if (c != null && c !== false) n.append(c);  // strings become Text nodes
    return n;
  }
  const ident = (name) => "<" + name + ">";
  const enc = encodeURIComponent;
  const plural = (n, one, many) => `${n} ${n === 1 ? one : (many || one + "s")}`;

  function clock(s) {
    s = Math.max(0, Math.round(s));
    const m = Math.floor(s / 60), r = String(s % 60).padStart(2, "0");
    return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${r}` : `${m}:${r}`;
  }
  function about(s) {
    if (s < 10) return "a few seconds";
    if (s < 60) return `about ${Math.max(10, Math.round(s / 5) * 5)} s`;
    if (s < 5400) return `about ${Math.round(s / 60)} min`;
    return `about ${(s / 3600).toFixed(1)} h`;
  }
  function kb(bytes) { return bytes < 1024 * 1024 ? `${Math.max(1, Math.round(bytes / 1024))} KB` : `${(bytes / 1048576).toFixed(1)} MB`; }

  function busy(button, on, label) {
    if (!button) return;
    if (on) {
      button.dataset.label = button.dataset.label || button.textContent;
      if (label) button.textContent = label;
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
    } else {
      if (button.dataset.label) button.textContent = button.dataset.label;
      delete button.dataset.label;
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
  }
  // a drop zone's picker (a <label> for a hidden file input) has no disabled state: the zone says it is busy
  function zoneBusy(zone, on, text) {
    zone.classList.toggle("busy", on);
    zone.setAttribute("aria-busy", on ? "true" : "false");
    const input = zone.querySelector("input[type=file]");
    if (input) input.disabled = on;
    let note = zone.querySelector(".zone-note");
    if (on) {
      if (!note) { note = el("span", { class: "zone-note" }, el("span", { class: "spinner", "aria-hidden": "true" }), el("span")); zone.append(note); }
      note.lastChild.textContent = " " + text;
    } else if (note) note.remove();
  }

  // ---- the API, and its errors in plain words ---------------------------------------------------
  class ApiError extends Error {
    constructor(status, body, fallback) {
      const e = (body && body.error) || {};
      super(e.message || fallback || `HTTP ${status}`);
      this.status = status;
      this.code = e.code || null;
      this.param = e.param || null;
    }
  }

  async function api(path, opts) {
    opts = opts || {};
    let res;
    try {
      res = await fetch(path, Object.assign({}, opts, { headers: Object.assign({ Authorization: "Bearer " + state.key }, opts.headers || {}) }));
    } catch (e) {
      throw Object.assign(new ApiError(0, null, "the request did not reach the server"), { code: "network" });
    }
    const json = (res.headers.get("content-type") || "").includes("application/json");
    if (!res.ok) {
      let body = null;
      if (json) { try { body = await res.json(); } catch (e) { body = null; } }
      const err = new ApiError(res.status, body);
      if (res.status === 401 && state.me) signedOut(err);
      throw err;
    }
    return json ? res.json() : res.blob();
  }

  const named = (err) => { const m = /<([A-Za-z0-9][A-Za-z0-9_-]*)>/.exec(err.message || ""); return m ? ident(m[1]) : "this concept"; };
  const photoOf = (err) => { const m = /^photo (\d+) \(([^)]*)\)/.exec(err.message || ""); return m ? `Photo ${m[1]} (${m[2]})` : "A photo"; };
  const PLAIN = {
    network: () => "The server did not answer. Check that it is still running, then try again.",
    missing_api_key: () => "Paste your API key first.",
    invalid_api_key: () => "This key was not accepted. Check that you pasted all of it, or ask the server's admin for a new one.",
    user_removed: () => "Your account was removed from this server. Ask its admin for a new key.",
    name_required: () => "Give the concept a name first.",
    invalid_name: (e) => /windows/i.test(e.message || "")
      ? "That name is reserved on Windows (CON, NUL, AUX, COM1…), so concepts cannot use it. Pick another name."
      : "Names use only letters, digits, - and _, start with a letter or digit, and do not end in _ and a number.",
    reserved_name: (e) => `${named(e)} is a word the model already uses. Pick another name.`,
    invalid_category: () => "Choose whether it is a pet or object, or a person.",
    too_few_photos: () => `Add at least ${minPhotos()} photos of the subject (3–10 work best).`,
    too_many_photos: () => `Use at most ${maxPhotos()} photos.`,
    concept_exists: (e, ctx) => ctx === "import"
      ? `You already have ${named(e)}. Tick “Replace a concept of that name”, or type another name.`
      : `You already have ${named(e)}. Tick “Replace my existing concept” to train it again, or pick another name.`,
    job_exists: (e) => `${named(e)} is being trained right now. Wait until it is ready, or pick another name.`,
    too_many_jobs: () => "You already have the most trainings this server runs for one person. Wait until one is ready.",
    concept_quota_exceeded: () => "You have as many concepts as this server allows. Delete one first.",
    storage_quota_exceeded: () => "Your space on this server is full. Delete a concept first.",
    file_too_large: (e, ctx) => ctx === "import" ? "That file is too large to be a concept zip." : `${photoOf(e)} is too large a file.`,
    image_too_large: (e, ctx) => (ctx === "create" ? photoOf(e) : "This photo") + " has too many pixels for this server. Use a smaller copy.",
    invalid_image: (e, ctx) => (ctx === "create" ? photoOf(e) : "This file") + " is not a photo the server can read. Use JPEG, PNG, WebP, BMP, GIF or TIFF.",
    request_too_large: () => "That is more than this server accepts in one go. Send fewer or smaller photos.",
    invalid_concept_zip: () => "That file is not a concept made by Export. Choose the .zip Export downloaded.",
    concept_model_mismatch: () => "That concept was trained for another model than the one this server runs, so it cannot be used here.",
    concept_not_found: (e) => `You have no concept ${named(e)}. Check the spelling, or make it first.`,
    concept_not_ready: (e) => `${named(e)} is still training. It can chat once it is ready.`,
    server_busy: () => "The server is busy. Try again in a moment.",
    job_not_found: () => "That training is no longer on the server.",
  };
  function plain(err, ctx) {
    if (err.code && PLAIN[err.code]) return PLAIN[err.code](err, ctx);
    const s = err.status;
    if (s === 401) return PLAIN.invalid_api_key();
    if (s === 413) return "That is too large for this server.";
    if (s === 429) return "You have reached one of this server's limits. Delete something, or wait, then try again.";
    if (s === 503) return PLAIN.server_busy();
    if (s >= 500) return "Something went wrong on the server. Try again; if it happens again, tell the server's admin.";
    if (s === 422 && err.param === "name") return PLAIN.invalid_name(err);
    if (s === 422 && (err.param || "").startsWith("messages")) {
      if (/prompt|context|tokens/i.test(err.message)) return "This conversation is too long for the model. Start a new chat.";
      if (/photo/i.test(err.message)) return "The model cannot take this photo here (it takes at most one photo per message, and a few per chat).";
      return "The model cannot answer this message as it is. Start a new chat, or rephrase it.";
    }
    if (s === 404) return "Not found on the server (it may have been deleted).";
    if (s === 409) return "That clashes with something that is already there.";
    return "The server refused this request.";
  }
  function showError(node, err, ctx) {
    node.replaceChildren();
    if (!err) return;
    if (typeof err === "string") { node.textContent = err; return; }
    node.append(el("span", { text: plain(err, ctx) + " " }));
    if (err.message && err.code !== "network") node.append(el("details", {}, el("summary", { text: "Details" }), el("span", { text: err.message })));
  }

  // ---- photos -------------------------------------------------------------------------------------
  const isImage = (f) => f && (f.type ? f.type.startsWith("image/") : /\.(jpe?g|png|webp|gif|bmp|tiff?)$/i.test(f.name));
  function readAsDataURL(file) {
    return new Promise((resolve, reject) => { const r = new FileReader(); r.onload = () => resolve(r.result); r.onerror = () => reject(r.error); r.readAsDataURL(file); });
  }
  function loadImage(url) {
    return new Promise((resolve, reject) => { const i = new Image(); i.onload = () => resolve(i); i.onerror = reject; i.src = url; });
  }
  // a data URL for the API: photos larger than the server keeps are shrunk here (less to send and store)
  async function photoDataUrl(file) {
    const url = URL.createObjectURL(file);
    try {
      const img = await loadImage(url);
      const scale = PHOTO_SIDE / Math.max(img.naturalWidth, img.naturalHeight);
      if (scale >= 1) return await readAsDataURL(file);
      const c = document.createElement("canvas");
      c.width = Math.round(img.naturalWidth * scale); c.height = Math.round(img.naturalHeight * scale);
      c.getContext("2d").drawImage(img, 0, 0, c.width, c.height);
      return c.toDataURL("image/jpeg", 0.92);
    } catch (e) {
      return readAsDataURL(file);  // the browser cannot show it: let the server say why
    } finally {
      URL.revokeObjectURL(url);
    }
  }
  function dropZone(zone, onFiles) {
    let depth = 0;
    zone.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; zone.classList.add("dragover"); });
    zone.addEventListener("dragover", (e) => { e.preventDefault(); if (e.dataTransfer) e.dataTransfer.dropEffect = "copy"; });
    zone.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) zone.classList.remove("dragover"); });
    zone.addEventListener("drop", (e) => {
      e.preventDefault(); e.stopPropagation(); depth = 0; zone.classList.remove("dragover");
      if (zone.getAttribute("aria-busy") === "true") return;
      const files = Array.from((e.dataTransfer && e.dataTransfer.files) || []);
      if (files.length) onFiles(files);
    });
  }
  // a photo dropped next to a zone must not make the browser leave the page
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  // ---- connecting ---------------------------------------------------------------------------------
  async function connect(key) {
    state.key = key;
    const btn = $("connect");
    showError($("key-error"), null);
    if (!key) { showError($("key-error"), "Paste your API key first."); $("api-key").focus(); return; }
    busy(btn, true, "Connecting…");
    try {
      state.me = await api("/v1/me");
    } catch (err) {
      state.me = null;
      showError($("key-error"), err, "connect");
      busy(btn, false);
      return;
    }
    busy(btn, false);
    localStorage.setItem("yollava-key", key);
    document.body.classList.add("connected");
    $("key-form").hidden = true;
    $("whoami").hidden = false;
    $("workspace").hidden = false;
    $("status").textContent = `Signed in as ${state.me.name} · model ${state.me.model}`;
    $("status").dataset.state = "connected";
    photoHint();
    loadChat();
    await refreshConcepts();
    pollJobs();
  }

  function signedOut(err) {
    clearTimeout(state.pollTimer);
    state.me = null;
    document.body.classList.remove("connected");
    $("key-form").hidden = false;
    $("whoami").hidden = true;
    $("workspace").hidden = true;
    $("status").dataset.state = "";
    if (err) showError($("key-error"), err, "connect");
  }

  $("key-form").addEventListener("submit", (e) => { e.preventDefault(); connect($("api-key").value.trim()); });
  $("sign-out").addEventListener("click", () => {
    localStorage.removeItem("yollava-key");
    state.key = ""; $("api-key").value = "";
    state.jobs.clear(); state.failed = []; state.chat = []; state.concepts = []; cardNodes.clear();
    $("chat-log").replaceChildren(); $("gallery").replaceChildren(); $("recognition").replaceChildren();
    signedOut(null);
    $("api-key").focus();
  });

  // ---- the gallery --------------------------------------------------------------------------------
  async function refreshConcepts() {
    let data, failed = [];
    try {
      data = (await api("/v1/concepts")).data;
      const ended = (await api("/v1/jobs?status=failed,cancelled")).data;
      const dismissed = new Set(JSON.parse(localStorage.getItem(dismissKey()) || "[]"));
      const names = new Set(data.map((c) => c.name));
      const dayAgo = Date.now() / 1000 - 86400;
      const latest = new Map();
      for (const j of ended) if ((j.finished || 0) > dayAgo && !names.has(j.concept) && !dismissed.has(j.id)) latest.set(j.concept, j);
      failed = Array.from(latest.values());
    } catch (err) {
      if (err.status !== 401) showError($("gallery-error"), err, "list");
      return;
    }
    showError($("gallery-error"), null);
    state.concepts = data;
    state.failed = failed;
    for (const c of data) if (c.status === "training" && c.job && !state.jobs.has(c.job)) {
      state.jobs.set(c.job, Object.assign({ id: c.job, concept: c.name, status: "running", phase: c.phase, progress: c.progress,
        recognition_ready: c.recognition_ready, receivedAt: performance.now() }));
    }
    renderGallery();
    updateCards();
    renderChips();
  }
  const dismissKey = () => "yollava-dismissed:" + (state.me ? state.me.name : "");

  // a card is drawn again only when what it shows changed (an open "Delete?" or a running check stays)
  const cardNodes = new Map();  // key -> {sig, node}
  function reuse(key, sig, make) {
    const had = cardNodes.get(key);
    if (had && had.sig === sig) return had.node;
    const node = make();
    cardNodes.set(key, { sig, node });
    return node;
  }
  function renderGallery() {
    const gallery = $("gallery");
    const cards = state.concepts.map((c) => {
      const job = jobFor(c);
      const sig = JSON.stringify([c.status, c.job, c.created, c.k, c.photos, c.recognition_threshold, c.recipe && c.recipe.name, c.error,
        job ? job.status : null]);
      return reuse("c:" + c.name, sig, () => conceptCard(c));
    }).concat(state.failed.map((j) => reuse("j:" + j.id, j.status, () => failedCard(j))));
    const keep = new Set(cards);
    for (const [key, v] of cardNodes) if (!keep.has(v.node)) cardNodes.delete(key);
    gallery.replaceChildren(...cards);
    $("gallery-empty").hidden = cards.length > 0;
    const ready = state.concepts.filter((c) => c.status === "ready").length;
    const training = state.concepts.filter((c) => c.status === "training").length;
    $("concept-count").textContent = state.concepts.length ? `${ready} ready` + (training ? `, ${training} training` : "") : "";
  }

  function jobFor(c) {
    if (c.status !== "training") return null;
    return state.jobs.get(c.job) || null;
  }

  function conceptCard(c) {
    const job = jobFor(c);
    const status = c.status === "training" && job && job.status === "queued" ? "queued" : c.status;
    const card = el("article", { class: "card", dataset: { name: c.name, status: c.status }, "aria-label": ident(c.name) });
    const head = el("div", { class: "card-head" },
      el("h3", {}, el("code", { text: ident(c.name) })),
      el("span", { class: "badge stage " + status, text: { ready: "ready", training: "training", queued: "queued", unreadable: "unreadable" }[status] || status }));
    const recog = el("span", { class: "badge ready recog", text: "recognises already", title: "Its concept head is fitted: it can be found in photos while the model learns to talk about it." });
    recog.hidden = !(c.status === "training" && (job ? job.recognition_ready : c.recognition_ready));
    head.append(recog);
    card.append(head);

    if (c.status === "unreadable") {
      card.append(el("p", { class: "error", text: "This concept's files fail their checks, so it cannot be used. Delete it, then import or train it again." }),
        el("details", { class: "muted" }, el("summary", { text: "Details" }), el("span", { text: c.error || "" })));
    } else {
      const thumbs = el("div", { class: "thumbs", "aria-label": "Training photos" });
      fillThumbs(thumbs, c);
      card.append(thumbs);
      const facts = el("p", { class: "facts" });
      if (c.status === "ready") {
        if (c.k != null) facts.append(el("span", { text: `k = ${c.k}` }));
        const recipe = c.recipe && (c.recipe.name || (typeof c.recipe === "string" ? c.recipe : null));
        if (recipe) facts.append(el("span", { text: `recipe ${recipe}` }));
        facts.append(el("span", { text: c.photos ? plural(c.photos, "photo") : "imported" }));
        // the language model's threshold (calibrated on held-back photos); the concept head that answers most checks
        // has its own, shown with each check's bars
        if (c.recognition_threshold != null) facts.append(el("span", { text: `LM threshold ${Number(c.recognition_threshold).toFixed(2)}`,
          title: "When the language model answers, P(yes) above this counts as present. The concept head has its own threshold, shown with each check." }));
        if (c.created) facts.append(el("span", { text: "made " + new Date(c.created * 1000).toLocaleString([], { dateStyle: "medium", timeStyle: "short" }) }));
      }
      if (facts.childNodes.length) card.append(facts);
      if (c.status === "training") {
        const box = el("div", { class: "job", dataset: { job: c.job } });
        card.append(box);
        renderJob(box, job || { id: c.job, status: "running", phase: c.phase, progress: c.progress || {} });
      }
      if (c.status === "ready" || (c.status === "training" && c.recognition_ready)) {
        const zone = cardDrop(c);
        card.append(zone);
        dropZone(card, (files) => recognise(files, c.name, zone));
      }
    }
    card.append(cardActions(c));
    const err = el("p", { class: "error card-error", role: "alert" });
    card.append(err);
    return card;
  }

  function fillThumbs(box, c) {
    const key = `${c.name}|${c.created || ""}|${c.job || ""}`;
    if (!state.thumbs.has(key)) {
      state.thumbs.set(key, api(`/v1/concepts/${enc(c.name)}/thumbnails`).then((r) => r.data, () => null));
    }
    state.thumbs.get(key).then((urls) => {
      if (urls === null) { state.thumbs.delete(key); return; }
      box.replaceChildren(...urls.map((u, i) => el("img", { src: u, alt: `training photo ${i + 1} of ${ident(c.name)}`, loading: "lazy" })));
      if (!urls.length) box.append(el("span", { class: "none", text: "no photos on this server (imported)" }));
    });
  }

  function cardDrop(c) {
    const id = "check-" + c.name;
    const zone = el("div", { class: "card-drop" },
      el("input", { id, class: "sr-only", type: "file", accept: "image/*", multiple: true,
        onchange: (e) => { const files = Array.from(e.target.files); e.target.value = ""; if (files.length) recognise(files, c.name, zone); } }),
      el("label", { for: id, class: "button", text: "Check photos" }),
      el("span", { text: `or drop photos here: is ${ident(c.name)} in them?` }));
    return zone;
  }

  function cardActions(c) {
    const row = el("div", { class: "card-actions" });
    const status = el("span", { class: "ok export-status", role: "status" });
    if (c.status === "ready") {
      const exp = el("button", { type: "button", class: "export", text: "Export" });
      exp.addEventListener("click", () => exportConcept(c.name, exp, status));
      row.append(exp);
    }
    row.append(el("span", { class: "spacer" }));
    const del = el("button", { type: "button", class: "danger delete", text: c.status === "training" ? "Cancel…" : "Delete…" });
    del.addEventListener("click", () => confirmDelete(c, row, del));
    row.append(del);
    const wrap = el("div", {}, row, status);
    return wrap;
  }

  function confirmDelete(c, row, del) {
    const card = row.closest(".card");
    if (card.querySelector(".confirm")) return;
    const question = c.status === "training"
      ? `Stop training ${ident(c.name)} and delete its photos?`
      : `Delete ${ident(c.name)} and everything made from its photos? This cannot be undone.`;
    const yes = el("button", { type: "button", class: "danger solid confirm-delete", text: c.status === "training" ? "Stop and delete" : "Delete" });
    const no = el("button", { type: "button", class: "quiet", text: "Keep it" });
    const box = el("div", { class: "confirm", role: "alertdialog", "aria-label": question }, el("span", { text: question }), yes, no);
    const close = () => { box.remove(); del.hidden = false; del.focus(); };
    no.addEventListener("click", close);
    box.addEventListener("keydown", (e) => { if (e.key === "Escape") close(); });
    yes.addEventListener("click", async () => {
      busy(yes, true, "Deleting…"); no.disabled = true;
      try {
        await api(`/v1/concepts/${enc(c.name)}`, { method: "DELETE" });
        if (c.job) state.jobs.delete(c.job);
        await refreshConcepts();
      } catch (err) {
        busy(yes, false); no.disabled = false;
        showError(card.querySelector(".card-error"), err, "delete");
      }
    });
    del.hidden = true;
    row.parentElement.append(box);
    yes.focus();
  }

  async function exportConcept(name, btn, status) {
    const card = btn.closest(".card");
    showError(card.querySelector(".card-error"), null);
    status.textContent = "";
    busy(btn, true, "Exporting…");
    try {
      const blob = await api(`/v1/concepts/${enc(name)}/export`);
      const a = el("a", { href: URL.createObjectURL(blob), download: name + ".zip" });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
      status.textContent = `Downloaded ${name}.zip (${kb(blob.size)}). Import it on any server that runs the same model.`;
    } catch (err) {
      showError(card.querySelector(".card-error"), err, "export");
    } finally {
      busy(btn, false);
    }
  }

  function failedCard(job) {
    const card = el("article", { class: "card", dataset: { name: job.concept, status: job.status, job: job.id } },
      el("div", { class: "card-head" }, el("h3", {}, el("code", { text: ident(job.concept) })),
        el("span", { class: "badge " + job.status, text: job.status === "cancelled" ? "cancelled" : "training failed" })));
    const box = el("div", { class: "job", dataset: { job: job.id } });
    renderJob(box, job);
    card.append(box);
    if (job.status === "failed") card.append(el("p", { class: "error", text: job.error || "Training stopped with an error." }));
    const dismiss = el("button", { type: "button", class: "quiet", text: "Dismiss" });
    dismiss.addEventListener("click", () => {
      const list = JSON.parse(localStorage.getItem(dismissKey()) || "[]");
      list.push(job.id);
      localStorage.setItem(dismissKey(), JSON.stringify(list.slice(-200)));
      state.failed = state.failed.filter((j) => j.id !== job.id);
      renderGallery();
    });
    card.append(el("div", { class: "card-actions" }, el("span", { class: "spacer" }), dismiss));
    return card;
  }

  // ---- progress: every stage of a job on one bar, with the time spent and left -------------------------
  // a stage counted in units (answers 3/20, step 12/33); calibration has a size but no count while it runs
  const counted = (s) => !!s.total && typeof s.done === "number" && s.key !== "calibrate";
  // a running stage that has taken longer than its estimate: the server says 0 s left, which is not known
  const overrun = (s) => s.status === "running" && s.remaining === 0 && s.seconds > 3;
  function stageFill(s) {
    if (s.status === "done" || s.status === "skipped") return 1;
    if (s.status === "pending") return 0;
    if (counted(s)) return Math.min(0.99, s.done / s.total);
    if (overrun(s)) return null;  // past its estimate (pocket's calibration: 6 s estimated, 2-4 min taken): moving, not full
    if (s.remaining != null && s.seconds + s.remaining > 0) return Math.min(0.99, s.seconds / (s.seconds + s.remaining));
    if (s.status === "running") return null;  // no count, no estimate: shown moving
    return 0.5;                                  // failed / cancelled part-way
  }

  function stageText(job, s) {
    if (!s) return job.status === "succeeded" ? "ready" : (job.phase || job.status);
    const n = (x) => (x == null ? "?" : x);
    switch (s.key) {
      case "queue": return "waiting for the trainer (another concept is training)";
      case "head": return "fitting the concept head";
      case "answers": return `synthesising answers ${n(s.done)}/${n(s.total)}`;
      case "encode": return `preparing samples ${n(s.done)}/${n(s.total)}`;
      case "train": {
        const p = job.progress || {};
        const epochs = p.epochs > 1 ? ` (epoch ${Math.min((p.epoch || 0) + 1, p.epochs)}/${p.epochs})` : "";
        return `training: step ${n(s.done)}/${n(s.total)}${epochs}`;
      }
      case "calibrate": return "calibrating: scoring held-back photos";
      case "save": return "saving the concept";
      default: return s.label;
    }
  }

  const shownFraction = new Map();  // job id -> the overall fraction last shown
  function renderJob(box, job) {
    const stages = (job.progress && job.progress.stages) || [];
    const running = stages.find((s) => s.status === "running");
    // between two stages (one done, the next not started yet) the next one is shown moving, not a still bar
    const next = !running && job.status === "running" ? stages.find((s) => s.status === "pending") : null;
    box.dataset.state = job.status;
    box.dataset.stage = running ? running.key : (job.status === "succeeded" ? "done" : "");
    const weights = stages.map((s) => (s.remaining == null ? null : (s.seconds || 0) + s.remaining));
    const known = weights.filter((w) => w != null && w > 0);
    const spread = known.length ? known.reduce((a, b) => a + b, 0) / known.length : 1;
    let sum = 0, filled = 0;
    const bar = el("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100",
      "aria-label": job.concept ? `Training ${ident(job.concept)}` : "Training" });
    if (!stages.length) {  // a job from before stages were reported: its training fraction
      const f = job.status === "succeeded" ? 1 : ((job.progress || {}).fraction || 0);
      const seg = el("div", { class: "seg", dataset: { status: job.status } }, el("div", { class: "fill" }));
      seg.style.flexGrow = "1"; seg.firstChild.style.width = `${f * 100}%`;
      bar.append(seg); sum = 1; filled = f;
    }
    stages.forEach((s, i) => {
      const w = Math.max(weights[i] == null ? spread : weights[i], 0.02 * spread);
      const f = s === next ? null : stageFill(s);
      const seg = el("div", { class: "seg" + (f === null ? " indeterminate" : ""), dataset: { stage: s.key, status: s.status },
        title: `${s.label}: ${s.status}` + (s.seconds ? ` (${clock(s.seconds)})` : "") }, el("div", { class: "fill" }));
      if (counted(s)) { seg.dataset.done = String(s.done); seg.dataset.total = String(s.total); }
      seg.style.flexGrow = String(w);
      seg.firstChild.style.width = `${(f === null ? 0.5 : f) * 100}%`;
      bar.append(seg);
      sum += w; filled += w * (s === next ? 0 : f === null ? 0.5 : f);
    });
    // The estimates behind the segments' widths change a little at every poll: the whole does not go back for
    // that. But a stage's width is only a guess until its own rate is measured (on a server's first job on
    // pocket, training was guessed at 2 min from the samples' rate and took 27 min): when the estimate moves the
    // bar back by more than 5 points, it goes back, to what a reload would show, rather than sit still for long.
    const before = shownFraction.get(job.id);
    const honest = sum ? filled / sum : 0;
    const fraction = job.status === "succeeded" ? 1 : (before != null && honest < before && before - honest < 0.05 ? before : honest);
    if (job.id) shownFraction.set(job.id, fraction);
    box.dataset.fraction = fraction.toFixed(4);
    bar.setAttribute("aria-valuenow", String(Math.round(fraction * 100)));

    const phase = el("span", { class: "phase", text: job.status === "failed" ? "failed" : job.status === "cancelled" ? "cancelled" : stageText(job, running) });
    const times = el("span", { class: "times" });
    const line = el("div", { class: "job-line" }, phase, times);
    bar.setAttribute("aria-valuetext", phase.textContent);
    const list = el("ol", { class: "stages", "aria-label": "Stages" });
    for (const s of stages) {
      let t = s.label;
      if (counted(s) && s.status !== "pending") t += ` ${s.done}/${s.total}`;
      if ((s.status === "done" || s.status === "running") && s.seconds >= 1) t += ` · ${clock(s.seconds)}`;
      list.append(el("li", { dataset: { stage: s.key, status: s.status }, text: t }));
    }
    box.replaceChildren(bar, line, list);
    box._job = job;
    tickTimes(box);
  }

  // the times between two polls: counted here from what the server said
  function tickTimes(box) {
    const job = box._job, times = box.querySelector(".times");
    if (!job || !times) return;
    const active = job.status === "queued" || job.status === "running";
    const dt = active && job.receivedAt ? (performance.now() - job.receivedAt) / 1000 : 0;
    if (job.elapsed_seconds == null) { times.textContent = ""; return; }
    const elapsed = job.elapsed_seconds + dt;
    let t = `${clock(elapsed)} elapsed`;
    if (active) {
      const stages = (job.progress && job.progress.stages) || [];
      const late = stages.find((s) => s.status === "running" && !counted(s) && overrun(s));
      if (job.remaining_seconds == null) t += " · estimating the time left";
      else if (late) t += ` · ${late.label} is taking longer than estimated`;
      else {
        const left = job.remaining_seconds - dt;
        t += left > 3 ? ` · ${about(left)} left` : " · almost done";
      }
    } else if (job.status === "succeeded") t = `took ${clock(job.elapsed_seconds)}`;
    times.textContent = t;
  }
  setInterval(() => document.querySelectorAll(".job").forEach(tickTimes), 1000);

  async function pollJobs() {
    clearTimeout(state.pollTimer);
    if (!state.me) return;
    let active;
    try {
      active = (await api("/v1/jobs?status=active")).data;
    } catch (err) {
      if (err.status !== 401) state.pollTimer = setTimeout(pollJobs, POLL_MS * 3);
      return;
    }
    const now = performance.now();
    const seen = new Set();
    let changed = false;
    for (const j of active) {
      j.receivedAt = now;
      seen.add(j.id);
      if (!state.jobs.has(j.id) || !state.concepts.some((c) => c.job === j.id)) changed = true;
      state.jobs.set(j.id, j);
    }
    for (const [id, j] of Array.from(state.jobs)) {
      if (seen.has(id) || !(j.status === "queued" || j.status === "running")) continue;
      try { const done = await api(`/v1/jobs/${enc(id)}`); done.receivedAt = now; state.jobs.set(id, done); }
      catch (err) { state.jobs.delete(id); }
      changed = true;
    }
    if (changed) await refreshConcepts();
    else updateCards();
    if (active.length) state.pollTimer = setTimeout(pollJobs, POLL_MS);
  }

  function updateCards() {
    for (const box of document.querySelectorAll("#gallery .card[data-status=training] .job")) {
      const job = state.jobs.get(box.dataset.job);
      if (!job) continue;
      renderJob(box, job);
      const card = box.closest(".card");
      const recog = card.querySelector(".recog");
      if (recog) recog.hidden = !job.recognition_ready;
      const badge = card.querySelector(".badge.stage");
      badge.textContent = job.status === "queued" ? "queued" : "training";
      badge.className = "badge stage " + (job.status === "queued" ? "queued" : "training");
      if (job.recognition_ready && !card.querySelector(".card-drop")) {
        const c = state.concepts.find((x) => x.job === job.id);
        if (c) {
          const zone = cardDrop(c);
          card.insertBefore(zone, card.querySelector(".card-actions").parentElement);
          dropZone(card, (files) => recognise(files, c.name, zone));
        }
      }
    }
  }

  // ---- a new concept ------------------------------------------------------------------------------
  const minPhotos = () => (state.me && state.me.limits && state.me.limits.min_photos) || 3;
  const maxPhotos = () => (state.me && state.me.limits && state.me.limits.max_photos) || 20;

  function addPhotos(files) {
    showError($("create-error"), null);
    const skipped = [];
    for (const f of files) {
      if (!isImage(f)) { skipped.push(f.name); continue; }
      if (state.newPhotos.some((p) => p.file.name === f.name && p.file.size === f.size && p.file.lastModified === f.lastModified)) continue;
      state.newPhotos.push({ file: f, url: URL.createObjectURL(f), bad: false });
    }
    renderPreviews();
    if (skipped.length) photoHint(`${skipped.join(", ")}: not ${skipped.length === 1 ? "a photo" : "photos"}, left out.`, "bad");
  }
  function removePhoto(i) {
    const [p] = state.newPhotos.splice(i, 1);
    if (p) URL.revokeObjectURL(p.url);
    renderPreviews();
    const buttons = $("previews").querySelectorAll("button");
    (buttons[Math.min(i, buttons.length - 1)] || $("concept-photos")).focus();
  }
  function renderPreviews() {
    const list = $("previews");
    list.replaceChildren(...state.newPhotos.map((p, i) => {
      const rm = el("button", { type: "button", "aria-label": `Remove photo ${i + 1} (${p.file.name})`, title: "Remove", text: "✕" });
      rm.addEventListener("click", () => removePhoto(i));
      return el("li", { class: p.bad ? "bad" : "", dataset: { index: String(i) } },
        el("img", { src: p.url, alt: p.file.name }), el("div", { class: "name", text: p.file.name, title: p.file.name }), rm);
    }));
    photoHint();
  }
  function photoProblem() {
    const n = state.newPhotos.length, lo = minPhotos(), hi = maxPhotos();
    if (n < lo) return n === 0 ? `Add ${lo}–10 photos of the subject.` : `${plural(n, "photo")}: add at least ${lo - n} more (${lo}–10 work best).`;
    if (n > hi) return `${n} photos: this server takes at most ${hi}. Remove ${n - hi}.`;
    return null;
  }
  function photoHint(text, kind) {
    const hint = $("photo-hint");
    const n = state.newPhotos.length;
    if (!text) {
      if (n === 0) { text = `${minPhotos()}–10 photos of the subject, from different sides and places.`; kind = ""; }
      else if (photoProblem()) { text = photoProblem(); kind = n < minPhotos() ? "" : "bad"; }
      else if (n > 10) { text = `${n} photos: more than 10 rarely helps and makes training slower.`; kind = "good"; }
      else { text = `${n} photos: good.`; kind = "good"; }
    }
    hint.textContent = text;
    hint.className = "hint" + (kind ? " " + kind : "");
  }

  function localNameProblem(name) {
    if (!name) return "Give it a name.";
    if (/\s/.test(name)) return "No spaces: use - or _ instead (e.g. my-dog).";
    if (/^[<]|[>]$/.test(name)) return "Type the name without < >.";
    if (!NAME_RE.test(name)) return "Use only letters, digits, - and _, starting with a letter or digit.";
    if (/_\d+$/.test(name)) return "A name may not end in _ and a number (the model uses those); try e.g. bo-2.";
    return null;
  }
  function nameHint(text, kind) {
    const hint = $("name-hint");
    hint.textContent = text;
    hint.className = "hint" + (kind ? " " + kind : "");
  }
  function checkName() {
    const name = $("concept-name").value.trim();
    const nc = state.nameCheck;
    clearTimeout(nc.timer);
    nc.name = name; nc.result = null;
    $("overwrite-row").hidden = true;
    if (!name) { nameHint("Letters, digits, - and _; you will write it as <name> in chat.", ""); return; }
    const problem = localNameProblem(name);
    if (problem) { nameHint(problem, "bad"); return; }
    nameHint(`Checking ${ident(name)}…`, "");
    nc.timer = setTimeout(async () => {
      let r;
      try { r = await api(`/v1/concepts/${enc(name)}/available`); } catch (err) { nameHint("", ""); return; }
      if (nc.name !== name) return;  // typed on meanwhile
      nc.result = r;
      if (r.available) nameHint(`${ident(name)} is free.`, "good");
      else if (r.code === "concept_exists") {
        $("overwrite-row").hidden = false;
        nameHint(`You already have ${ident(name)}. Tick below to train it again with these photos, or pick another name.`, "bad");
      } else nameHint(plain({ code: r.code, message: r.message, status: 422 }, "create"), "bad");
    }, 300);
  }
  $("concept-name").addEventListener("input", checkName);
  $("concept-overwrite").addEventListener("change", () => { if ($("concept-overwrite").checked) showError($("create-error"), null); });

  $("concept-photos").addEventListener("change", (e) => { addPhotos(Array.from(e.target.files)); e.target.value = ""; });
  dropZone($("new-drop"), addPhotos);

  $("new-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("concept-name").value.trim();
    const err = $("create-error");
    showError(err, null);
    const problem = localNameProblem(name);
    if (problem) { showError(err, problem); $("concept-name").focus(); return; }
    const nc = state.nameCheck.name === name ? state.nameCheck.result : null;
    if (nc && !nc.available && !(nc.code === "concept_exists" && $("concept-overwrite").checked)) {
      showError(err, plain({ code: nc.code, message: nc.message, status: 409 }, "create"));
      (nc.code === "concept_exists" ? $("concept-overwrite") : $("concept-name")).focus();
      return;
    }
    const photos = photoProblem();
    if (photos) { showError(err, photos); photoHint(photos, "bad"); $("concept-photos").focus(); return; }
    const form = new FormData();
    form.append("name", name);
    form.append("category", $("concept-category").value);
    if ($("concept-overwrite").checked) form.append("overwrite", "true");
    for (const p of state.newPhotos) form.append("photos", p.file, p.file.name);
    const btn = $("create-concept");
    busy(btn, true, `Uploading ${plural(state.newPhotos.length, "photo")}…`);
    try {
      const job = await api("/v1/concepts", { method: "POST", body: form });
      job.receivedAt = performance.now();
      state.jobs.set(job.id, job);
      for (const p of state.newPhotos) URL.revokeObjectURL(p.url);
      state.newPhotos = [];
      $("new-form").reset();
      renderPreviews(); checkName();
      await refreshConcepts();
      pollJobs();
      const card = document.querySelector(`#gallery .card[data-name="${CSS.escape(name)}"]`);
      if (card) { card.scrollIntoView({ block: "nearest", behavior: "smooth" }); }
    } catch (er) {
      const m = /^photos\[(\d+)\]$/.exec(er.param || "");
      if (m && state.newPhotos[+m[1]]) { state.newPhotos[+m[1]].bad = true; renderPreviews(); }
      showError(err, er, "create");
      if (er.code === "concept_exists") { $("overwrite-row").hidden = false; }
    } finally {
      busy(btn, false);
    }
  });

  // ---- import ---------------------------------------------------------------------------------------
  $("import-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const err = $("import-error"), ok = $("import-status");
    showError(err, null); ok.textContent = "";
    const f = $("import-file").files[0];
    if (!f) { showError(err, "Choose the .zip that Export made first."); $("import-file").focus(); return; }
    const rename = $("import-name").value.trim();
    if (rename) {
      const problem = localNameProblem(rename);
      if (problem) { showError(err, problem); $("import-name").focus(); return; }
    }
    const form = new FormData();
    form.append("file", f, f.name);
    if (rename) form.append("name", rename);
    if ($("import-overwrite").checked) form.append("overwrite", "true");
    const btn = $("import-concept");
    busy(btn, true, "Importing…");
    try {
      const c = await api("/v1/concepts/import", { method: "POST", body: form });
      $("import-form").reset();
      await refreshConcepts();
      ok.textContent = `Imported ${ident(c.name)}.`;
    } catch (er) {
      showError(err, er, "import");
      if (er.code === "concept_exists") $("import-name").focus();
    } finally {
      busy(btn, false);
    }
  });

  // ---- recognition: a grid of photos with P(yes) against each concept's threshold -------------------------
  const MODES = { head: "the concept head", yollava: "the language model", fused: "the concept head and the language model" };

  function scoreRow(f) {
    const p = Math.max(0, Math.min(1, f.p_yes)), t = Math.max(0, Math.min(1, f.threshold));
    const level = el("div", { class: "level" }); level.style.width = `${p * 100}%`;
    const mark = el("div", { class: "threshold" }); mark.style.left = `calc(${t * 100}% - 1px)`;
    return el("div", { class: "score", dataset: { concept: f.concept, present: String(!!f.present), pYes: String(f.p_yes) } },
      el("span", { class: "who", text: f.identifier || ident(f.concept), title: f.identifier || ident(f.concept) }),
      el("div", { class: "meter", title: `P(yes) ${f.p_yes.toFixed(3)}; threshold ${f.threshold.toFixed(2)}` }, level, mark),
      el("span", { class: "value", text: `${f.p_yes.toFixed(2)} ${f.present ? "yes" : "no"}` }),
      el("span", { class: "mode", text: `threshold ${f.threshold.toFixed(2)} · answered by ${MODES[f.mode] || f.mode}` }));
  }

  async function recognise(files, concept, zone) {
    if (zone.getAttribute("aria-busy") === "true") return;  // one check at a time per place
    const images = files.filter(isImage);
    const errNode = concept ? zone.closest(".card").querySelector(".card-error") : $("who-error");
    showError(errNode, null);
    if (!images.length) { showError(errNode, "Those files are not photos."); return; }
    const box = $("recognition");
    const grid = el("div", { class: "results" });
    const run = el("div", { class: "run", dataset: { concept: concept || "" } },
      el("h3", { text: concept ? `Is ${ident(concept)} in these photos?` : "Who is in these photos?" }), grid);
    box.prepend(run);
    const figures = images.map((f) => {
      const url = URL.createObjectURL(f);
      const fig = el("figure", { class: "result", dataset: { file: f.name, state: "waiting" } },
        el("img", { src: url, alt: f.name }), el("figcaption", { text: f.name, title: f.name }),
        el("div", { class: "verdict muted", text: "waiting…" }));
      grid.append(fig);
      return fig;
    });
    box.scrollIntoView({ block: "nearest", behavior: "smooth" });
    const hint = concept ? `Checking for ${ident(concept)}` : "Checking";
    for (let i = 0; i < images.length; i++) {
      const fig = figures[i], verdict = fig.querySelector(".verdict");
      zoneBusy(zone, true, `${hint}: photo ${i + 1} of ${images.length}…`);
      fig.dataset.state = "checking";
      verdict.replaceChildren(el("span", { class: "spinner", "aria-hidden": "true" }), " checking…");
      try {
        const body = { image: await photoDataUrl(images[i]) };
        if (concept) body.concepts = [concept];
        const r = await api("/v1/recognize", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
        const rows = concept ? r.results : (r.checked || r.results);
        const present = rows.filter((x) => x.present);
        verdict.className = "verdict";
        if (!rows.length) verdict.textContent = "You have no concept that can recognise yet.";
        else verdict.textContent = present.length ? present.map((x) => x.identifier).join(", ") + (present.length === 1 ? " is here" : " are here")
          : (concept ? `${ident(concept)} is not here` : "none of your concepts");
        fig.append(...rows.map(scoreRow));
        if (!concept && r.concepts_total > rows.length) fig.append(el("span", { class: "muted", text: `${r.concepts_checked} of ${r.concepts_total} concepts checked closely` }));
        fig.dataset.state = "done";
      } catch (err) {
        fig.dataset.state = "error";
        verdict.className = "verdict error";
        verdict.textContent = plain(err, "recognize");
        if (err.status === 401) break;
      }
    }
    zoneBusy(zone, false);
  }
  $("who-photos").addEventListener("change", (e) => { const files = Array.from(e.target.files); e.target.value = ""; recognise(files, null, $("who-drop")); });
  dropZone($("who-drop"), (files) => recognise(files, null, $("who-drop")));

  // ---- chat ---------------------------------------------------------------------------------------------
  const chatKey = () => "yollava-chat:" + (state.me ? state.me.name : "");
  function saveChat() {
    try { localStorage.setItem(chatKey(), JSON.stringify(state.chat)); }
    catch (e) {  // full: keep the words of older turns, drop their photos
      try {
        const light = state.chat.map((x, i) => (i < state.chat.length - 2 && x.image ? Object.assign({}, x, { image: null, imageDropped: true }) : x));
        localStorage.setItem(chatKey(), JSON.stringify(light));
      } catch (e2) { /* the conversation stays on the page until it is reloaded */ }
    }
  }
  function loadChat() {
    try { state.chat = JSON.parse(localStorage.getItem(chatKey()) || "[]"); } catch (e) { state.chat = []; }
    if (!Array.isArray(state.chat)) state.chat = [];
    renderChat();
  }
  function renderChat() {
    const log = $("chat-log");
    log.replaceChildren();
    if (!state.chat.length) {
      log.append(el("p", { class: "muted empty" }, "Ask about your concepts by name, e.g. ", el("code", { text: "What breed is <bo>?" }),
        ", or attach a photo and ask ", el("code", { text: "Who is in this photo?" }), "."));
    }
    for (const e of state.chat) appendEntry(e);
    state.follow = true;
    log.scrollTop = log.scrollHeight;
  }
  function atBottom() { const log = $("chat-log"); return log.scrollHeight - log.scrollTop - log.clientHeight < 40; }
  function follow() { if (state.follow) { const log = $("chat-log"); log.scrollTop = log.scrollHeight; } }
  $("chat-log").addEventListener("scroll", () => { state.follow = atBottom(); });

  function tags(found, checked) {
    const div = el("div", { class: "tags", dataset: { role: "found" } });
    for (const f of found) {
      div.append(el("span", { class: "tag", dataset: { concept: f.concept }, text: `${f.identifier} ${f.p_yes.toFixed(2)}`,
        title: `P(yes) ${f.p_yes.toFixed(3)} (threshold ${f.threshold.toFixed(2)}), answered by ${MODES[f.mode] || f.mode}` }));
    }
    if (!found.length) div.append(el("span", { class: "tag none", text: "none of your concepts in this photo" }));
    return div;
  }

  function appendEntry(e) {
    const log = $("chat-log");
    const empty = log.querySelector(".empty");
    if (empty) empty.remove();
    const bubble = el("div", { class: "bubble " + e.role, dataset: { state: e.state || "done" } });
    const text = el("span", { class: "text", text: e.text });
    bubble.append(text);
    if (e.image) {
      const img = el("img", { src: e.image, alt: "the photo sent" });
      img.addEventListener("load", follow);  // the photo's height arrives later: follow it
      bubble.append(img);
    } else if (e.imageDropped) bubble.append(el("span", { class: "notice", text: "(photo not kept: this browser's storage was full)" }));
    let tagsNode = null;
    if (e.found) { tagsNode = tags(e.found); log.append(tagsNode); }
    log.append(bubble);
    if (e.finish === "length") bubble.append(lengthNotice(e.limit));
    follow();
    return { bubble, text, tagsNode };
  }
  function lengthNotice(limit) {
    return el("span", { class: "notice", text: `The answer stopped at the length limit (${limit || maxTokens()} tokens). Ask “go on” for more.` });
  }

  const maxTokens = () => Math.min(CHAT_MAX_TOKENS, (state.me && state.me.limits && state.me.limits.max_tokens) || CHAT_MAX_TOKENS);

  function messagesOf(entries) {
    return entries.filter((e) => !e.failed).map((e) => {
      if (e.role === "user" && e.image) return { role: "user", content: [{ type: "text", text: e.text }, { type: "image_url", image_url: { url: e.image } }] };
      return { role: e.role, content: e.text };
    });
  }

  function setAttachment(file) {
    clearAttachment();
    if (!file) return;
    if (!isImage(file)) { showError($("chat-error"), `${file.name} is not a photo.`); return; }
    const url = URL.createObjectURL(file);
    state.attachment = { file, url };
    $("attachment-img").src = url;
    $("attachment-name").textContent = file.name;
    $("attachment").hidden = false;
  }
  function clearAttachment() {
    if (state.attachment) URL.revokeObjectURL(state.attachment.url);
    state.attachment = null;
    $("attachment").hidden = true;
    $("attachment-img").removeAttribute("src");
    $("attachment-name").textContent = "";
    $("chat-photo").value = "";
  }
  $("chat-photo").addEventListener("change", (e) => { showError($("chat-error"), null); setAttachment(e.target.files[0]); });
  $("attachment-remove").addEventListener("click", () => { clearAttachment(); $("chat-input").focus(); });
  dropZone($("chat-section"), (files) => setAttachment(files.find(isImage) || files[0]));

  function renderChips() {
    const box = $("chips");
    box.replaceChildren();
    const ready = state.concepts.filter((c) => c.status === "ready");
    if (!ready.length) return;
    box.append(el("span", { class: "muted", text: "Insert:" }));
    for (const c of ready) {
      const b = el("button", { type: "button", class: "chip", text: ident(c.name), title: `Insert ${ident(c.name)} into your message` });
      b.addEventListener("click", () => insertName(c.name));
      box.append(b);
    }
  }
  function insertName(name) {
    const input = $("chat-input");
    const token = ident(name);
    const start = input.selectionStart != null ? input.selectionStart : input.value.length;
    const end = input.selectionEnd != null ? input.selectionEnd : start;
    const before = input.value.slice(0, start), after = input.value.slice(end);
    const pad = before && !/\s$/.test(before) ? " " : "";
    input.value = before + pad + token + after;
    const pos = (before + pad + token).length;
    input.focus();
    input.setSelectionRange(pos, pos);
  }

  async function send() {
    const input = $("chat-input"), btn = $("chat-send"), errNode = $("chat-error");
    if (btn.disabled) return;  // one question at a time
    const text = input.value.trim();
    showError(errNode, null);
    if (!text) { showError(errNode, state.attachment ? "Ask something about the photo first." : "Type a question first."); input.focus(); return; }
    const attached = state.attachment;
    busy(btn, true, "Answering…");
    let image = null;
    if (attached) {
      try { image = await photoDataUrl(attached.file); } catch (e) { image = null; }
    }
    const question = { role: "user", text, image };
    const messages = messagesOf(state.chat.concat([question]));
    input.value = "";
    clearAttachment();  // sent with this question only
    state.chat.push(question);
    const q = appendEntry(question);
    const answer = { role: "assistant", text: "", state: "streaming" };
    const a = appendEntry(answer);
    const limit = maxTokens();
    let finish = null, tagNode = null;
    try {
      const res = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { Authorization: "Bearer " + state.key, "Content-Type": "application/json" },
        body: JSON.stringify({ model: state.me.model, messages, stream: true, temperature: 0, max_tokens: limit }),
      }).catch(() => { throw Object.assign(new ApiError(0, null, "the request did not reach the server"), { code: "network" }); });
      if (!res.ok) {
        let body = null;
        try { body = await res.json(); } catch (e) { body = null; }
        const err = new ApiError(res.status, body);
        if (res.status === 401) signedOut(err);
        throw err;
      }
      const reader = res.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 2);
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const obj = JSON.parse(data);
          if (obj.error) throw new ApiError(obj.error.code === "server_busy" ? 503 : 422, obj);
          if (obj.concepts_found) {
            answer.found = obj.concepts_found;
            tagNode = tags(obj.concepts_found);
            a.bubble.before(tagNode);
          }
          const choice = obj.choices && obj.choices[0];
          if (choice && choice.delta && choice.delta.content) {
            answer.text += choice.delta.content;
            a.text.textContent = answer.text;
            follow();
          }
          if (choice && choice.finish_reason) finish = choice.finish_reason;
        }
      }
      answer.state = "done";
      answer.finish = finish;
      answer.limit = limit;
      if (finish === "length") { a.bubble.append(lengthNotice(limit)); follow(); }
      delete answer.state;
      state.chat.push(answer);
      saveChat();
    } catch (err) {
      // nothing was answered: the question goes back into the box (with its photo) to be fixed and sent again
      state.chat.pop();
      q.bubble.remove(); a.bubble.remove();
      if (tagNode) tagNode.remove();
      if (!$("chat-log").children.length) renderChat();
      input.value = text;
      if (attached) setAttachment(attached.file);
      showError(errNode, err, "chat");
    } finally {
      a.bubble.dataset.state = "done";
      busy(btn, false);
    }
  }
  $("chat-form").addEventListener("submit", (e) => { e.preventDefault(); send(); });
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  $("chat-clear").addEventListener("click", () => {
    state.chat = [];
    saveChat();
    renderChat();
    showError($("chat-error"), null);
    $("chat-input").focus();
  });

  // ---- start --------------------------------------------------------------------------------------------
  if (state.key) { $("api-key").value = state.key; connect(state.key); }
})();
