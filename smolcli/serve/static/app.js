// smolcli's page: chat with the served model through its OpenAI route (streamed, cancelled by Stop), and a
// camera mode that asks a fixed question about a frame every few seconds. No dependencies, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  key: sessionStorage.getItem("smolcli-key") || "",
  model: "",
  video: false, // the model takes clips (a SmolVLM2 release)
  history: [], // the finished turns, sent again with each message: the server continues their KV cache
  attached: [], // {kind: "image" | "video", url: data: URI, name}
  controller: null, // the answer being streamed
  camera: { stream: null, timer: null, busy: false, skipped: 0, asked: 0 },
};

// --- talking to the server ------------------------------------------------------------------

function headers() {
  const sent = { "Content-Type": "application/json" };
  if (state.key) sent.Authorization = "Bearer " + state.key;
  return sent;
}

async function failure(response) {
  // OpenAI's {"error": {"message"}} or ollama's {"error": "..."}
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    message = (body.error && (body.error.message || body.error)) || message;
  } catch (_) { /* not JSON: the status says it */ }
  if (response.status === 401) askForKey();
  return new Error(message);
}

async function call(path, body) {
  const response = await fetch(path, { method: body ? "POST" : "GET", headers: headers(), body: body && JSON.stringify(body) });
  if (!response.ok) throw await failure(response);
  return response.json();
}

async function* events(response) {
  // server-sent events: "data: {...}" blocks separated by a blank line
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const block = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

function settings() {
  return {
    max_tokens: Math.max(1, parseInt($("max-tokens").value, 10) || 256),
    temperature: Math.max(0, parseFloat($("temperature").value) || 0),
  };
}

// --- errors and the key ---------------------------------------------------------------------

function showError(error) {
  $("error").textContent = error ? String(error.message || error) : "";
  $("error").hidden = !error;
}

function askForKey() {
  $("key-form").hidden = false;
  $("api-key").focus();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = $("api-key").value.trim();
  sessionStorage.setItem("smolcli-key", state.key);
  $("key-form").hidden = true;
  showError(null);
  loadModel();
});

async function loadModel() {
  try {
    const tags = await call("/api/tags");
    state.model = tags.models.length ? tags.models[0].name : "";
    $("model-name").textContent = state.model;
    const shown = await call("/api/show", { model: state.model });
    state.video = (shown.capabilities || []).includes("video");
    $("file").accept = state.video ? "image/*,video/*" : "image/*";
    $("file-kinds").textContent = state.video ? "images or a clip" : "images";
  } catch (error) {
    showError(error);
  }
}

// --- chat -------------------------------------------------------------------------------------

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function attach(files) {
  for (const file of files) {
    const kind = file.type.startsWith("video/") ? "video" : file.type.startsWith("image/") ? "image" : null;
    if (!kind || (kind === "video" && !state.video)) {
      showError(`${file.name}: ${state.video ? "an image or a video clip" : "an image"} is needed`);
      continue;
    }
    if (kind === "video" && state.attached.some((a) => a.kind === "video")) {
      showError("one clip per message: send the next clip in a message of its own");
      continue;
    }
    state.attached.push({ kind, name: file.name, url: await readAsDataURL(file) });
  }
  drawAttachments();
}

function drawAttachments() {
  const box = $("attachments");
  box.replaceChildren();
  state.attached.forEach((item, index) => {
    const figure = document.createElement("figure");
    const preview = document.createElement(item.kind === "video" ? "video" : "img");
    preview.src = item.url;
    preview.alt = item.name;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", "Remove " + item.name);
    remove.addEventListener("click", () => { state.attached.splice(index, 1); drawAttachments(); });
    figure.append(preview, remove);
    box.append(figure);
  });
}

function addEntry(list, role, text) {
  const item = document.createElement("li");
  item.className = role;
  const words = document.createElement("span");
  words.className = "text";
  words.textContent = text;
  item.append(words);
  list.append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function setStats(item, text) {
  const stats = item.querySelector(".stats") || item.appendChild(document.createElement("span"));
  stats.className = "stats";
  stats.textContent = text;
}

function userMessage(text, attached) {
  const parts = attached.map((a) => a.kind === "video"
    ? { type: "video_url", video_url: { url: a.url } }
    : { type: "image_url", image_url: { url: a.url } });
  if (text) parts.push({ type: "text", text });
  return { role: "user", content: parts };
}

async function send() {
  const text = $("prompt").value.trim();
  if (state.controller || (!text && !state.attached.length)) return;
  showError(null);
  const attached = state.attached;
  const message = userMessage(text, attached);
  const asked = addEntry($("log"), "user", text);
  for (const a of attached) {
    const preview = document.createElement(a.kind === "video" ? "video" : "img");
    preview.src = a.url;
    preview.alt = a.name;
    asked.prepend(preview);
  }
  $("prompt").value = "";
  state.attached = [];
  drawAttachments();
  const answer = addEntry($("log"), "assistant", "");
  const words = answer.querySelector(".text");
  state.controller = new AbortController();
  $("stop").disabled = false;
  $("send").disabled = true;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: state.controller.signal,
      body: JSON.stringify({
        model: state.model, messages: [...state.history, message], stream: true,
        stream_options: { include_usage: true }, ...settings(),
      }),
    });
    if (!response.ok) throw await failure(response);
    let finish = null;
    for await (const event of events(response)) {
      if (event.error) throw new Error(event.error.message || event.error);
      const choice = event.choices && event.choices[0];
      if (choice && choice.delta && choice.delta.content) words.textContent += choice.delta.content;
      if (choice && choice.finish_reason) finish = choice.finish_reason;
      if (event.usage) {
        const ours = event.smolcli || {};
        setStats(answer, `${event.usage.completion_tokens} tokens · ${finish} · conversation ${ours.conversation}`);
      }
    }
    answer.dataset.done = "true";
    state.history.push(message, { role: "assistant", content: words.textContent });
  } catch (error) {
    // a stopped or failed turn is not part of the conversation: the server keeps it as it was
    if (error.name === "AbortError") {
      setStats(answer, "stopped");
      answer.dataset.done = "stopped";
    } else {
      answer.remove();
      asked.remove();
      showError(error);
    }
  } finally {
    state.controller = null;
    $("stop").disabled = true;
    $("send").disabled = false;
    $("prompt").focus();
  }
}

$("chat-form").addEventListener("submit", (event) => { event.preventDefault(); send(); });
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
$("prompt").addEventListener("paste", (event) => {
  const files = [...(event.clipboardData ? event.clipboardData.files : [])];
  if (files.length) { event.preventDefault(); attach(files); }
});
$("file").addEventListener("change", () => { attach([...$("file").files]); $("file").value = ""; });
$("stop").addEventListener("click", () => state.controller && state.controller.abort());
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape" && state.controller) state.controller.abort(); // Esc stops, as Stop does
});
$("new-chat").addEventListener("click", () => {
  if (state.controller) state.controller.abort();
  state.history = [];
  $("log").replaceChildren();
  showError(null);
});
const panel = $("chat-panel");
panel.addEventListener("dragover", (event) => { event.preventDefault(); panel.classList.add("dropping"); });
panel.addEventListener("dragleave", () => panel.classList.remove("dropping"));
panel.addEventListener("drop", (event) => {
  event.preventDefault();
  panel.classList.remove("dropping");
  attach([...event.dataTransfer.files]);
});

// --- tabs ---------------------------------------------------------------------------------------

function choose(tab) {
  for (const other of document.querySelectorAll("[role=tab]")) {
    const chosen = other === tab;
    other.setAttribute("aria-selected", String(chosen));
    other.tabIndex = chosen ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !chosen;
  }
}
for (const tab of document.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => choose(tab));
  tab.addEventListener("keydown", (event) => {
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
    const next = tab === $("tab-chat") ? $("tab-camera") : $("tab-chat");
    choose(next);
    next.focus();
  });
}

// --- camera -------------------------------------------------------------------------------------

function frame() {
  const video = $("camera");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  return canvas.toDataURL("image/jpeg", 0.85);
}

async function askAboutFrame() {
  const camera = state.camera;
  if (camera.busy) { camera.skipped += 1; return cameraStatus(); } // never queue frames behind an answer
  const video = $("camera");
  if (!video.videoWidth) return;
  camera.busy = true;
  const url = frame();
  const question = $("camera-question").value.trim() || "What is happening in this picture?";
  try {
    const reply = await call("/v1/chat/completions", {
      model: state.model, messages: [userMessage(question, [{ kind: "image", url }])], ...settings(),
    });
    if (!camera.stream) return;
    camera.asked += 1;
    const item = document.createElement("li");
    const shot = document.createElement("img");
    shot.src = url;
    shot.alt = "The frame asked about";
    const words = document.createElement("span");
    words.className = "text";
    words.textContent = reply.choices[0].message.content;
    const stats = document.createElement("span");
    stats.className = "stats";
    stats.textContent = new Date().toLocaleTimeString();
    item.append(shot, words, stats);
    $("camera-answers").prepend(item);
  } catch (error) {
    showError(error);
  } finally {
    camera.busy = false;
    cameraStatus();
  }
}

function cameraStatus() {
  const camera = state.camera;
  $("camera-status").textContent = camera.stream
    ? `${camera.asked} frames answered, ${camera.skipped} skipped while an answer ran`
    : "Camera off";
}

$("camera-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (state.camera.stream) return;
  showError(null);
  try {
    state.camera.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    showError(`the camera could not be opened: ${error.message || error.name}`);
    return;
  }
  $("camera").srcObject = state.camera.stream;
  const seconds = Math.max(1, parseFloat($("camera-every").value) || 5);
  state.camera.timer = setInterval(askAboutFrame, seconds * 1000);
  $("camera").addEventListener("playing", askAboutFrame, { once: true });
  $("camera-start").disabled = true;
  $("camera-stop").disabled = false;
  cameraStatus();
});

$("camera-stop").addEventListener("click", () => {
  const camera = state.camera;
  clearInterval(camera.timer);
  if (camera.stream) camera.stream.getTracks().forEach((track) => track.stop());
  camera.stream = null;
  $("camera").srcObject = null;
  $("camera-start").disabled = false;
  $("camera-stop").disabled = true;
  cameraStatus();
});

loadModel();
