// nanoserve playground: plain JavaScript, no build step, no dependencies. It calls the same
// public API as any client (GET /v1/models, POST /tokenize, /v1/completions,
// /v1/chat/completions), with the key the user typed, so it can do nothing a client can't.
"use strict";

const KEY = "nanoserve.apiKey"; // sessionStorage: gone with the tab, never put in a URL
const CHECK_DELAY_MS = 600; // wait for typing to pause: each /tokenize counts against rpm
const $ = (id) => document.getElementById(id);
const state = { history: [], controller: null, checks: 0, checkTimer: null };

class ApiError extends Error {}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

// The API's own words: every error the server sends is {"error": {"message", ...}}.
async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) {
    // not JSON (a proxy's error page): the status line is all there is
  }
  return new ApiError(message);
}

async function call(method, path, body, signal) {
  let response;
  try {
    const json = body === undefined ? undefined : JSON.stringify(body);
    response = await fetch(path, { method, headers: headers(), body: json, signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(`Could not reach the server: ${e.message}`);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

// Server-sent events: an event ends with a blank line, its "data:" lines carry the JSON, lines
// starting with ":" are keep-alive comments, and "data: [DONE]" ends the stream.
async function* events(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new ApiError("The stream ended before [DONE]: the connection was lost.");
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const data = lines
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(line.startsWith("data: ") ? 6 : 5))
        .join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function chatMode() {
  return document.querySelector("input[name=mode]:checked").value === "chat";
}

function conversation() {
  const system = $("system").value;
  return [...(system ? [{ role: "system", content: system }] : []), ...state.history];
}

// ----- models and the key

async function loadModels() {
  const select = $("model");
  try {
    const list = await (await call("GET", "/v1/models")).json();
    select.replaceChildren(...list.data.map((m) => new Option(m.id, m.id)));
    const key = sessionStorage.getItem(KEY);
    $("server-status").textContent = key ? "Key accepted." : "This server needs no key.";
    showError("");
    checkSoon(0);
  } catch (e) {
    select.replaceChildren();
    $("server-status").textContent = "Not connected: enter an API key.";
    showError(e.message);
  }
}

function useKey(event) {
  event.preventDefault(); // the form never submits (its CSP says form-action 'none' too)
  const key = $("api-key").value.trim();
  if (key) sessionStorage.setItem(KEY, key);
  else sessionStorage.removeItem(KEY);
  $("api-key").value = "";
  $("api-key").placeholder = key ? "a key is set for this tab" : "sk-…";
  loadModels();
}

function forgetKey() {
  sessionStorage.removeItem(KEY);
  $("api-key").placeholder = "sk-…";
  loadModels();
}

// ----- the prompt check: token count, and the characters a character-level model lacks

function checkSoon(delay = CHECK_DELAY_MS) {
  clearTimeout(state.checkTimer);
  state.checkTimer = setTimeout(checkPrompt, delay);
}

async function checkPrompt() {
  const model = $("model").value;
  const text = chatMode() ? $("message").value : $("prompt").value;
  const out = $("prompt-check");
  if (!model || !text) {
    out.textContent = "";
    return;
  }
  // /tokenize answers 400 naming each character the vocabulary lacks, before anything is sent
  const body = chatMode()
    ? { model, messages: [...conversation(), { role: "user", content: text }] }
    : { model, prompt: text };
  const mine = ++state.checks; // answers can arrive out of order: only the latest counts
  try {
    const r = await (await call("POST", "/tokenize", body)).json();
    if (mine !== state.checks) return;
    out.textContent = `Prompt: ${r.count} tokens of a ${r.max_model_len}-token context.`;
    out.className = "ok";
  } catch (e) {
    if (mine !== state.checks) return;
    out.textContent = e.message;
    out.className = "warning";
  }
}

// ----- generation

function number(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v); // not a number -> null in JSON -> the API names the field
}

// One stop sequence a line; "\n", "\t" and "\\" are written as escapes (a line can't hold "\n").
function stops() {
  const unescape = (s) => s.replace(/\\([nt\\])/g, (_, c) => ({ n: "\n", t: "\t" })[c] || "\\");
  return $("stop").value.split("\n").filter((s) => s !== "").map(unescape);
}

function requestBody(chat) {
  const body = { model: $("model").value, stream: true, stream_options: { include_usage: true } };
  const fields = { temperature: "temperature", top_p: "top-p", top_k: "top-k" };
  for (const [field, id] of Object.entries(fields)) {
    const v = number(id);
    if (v !== null) body[field] = v; // left empty: the API's default
  }
  body.max_tokens = number("max-tokens"); // null: as many as fit in the context
  const stop = stops();
  if (stop.length) body.stop = stop;
  if (chat) body.messages = [...conversation(), { role: "user", content: $("message").value }];
  else body.prompt = $("prompt").value;
  return body;
}

// Live numbers: time to first token, and the decode rate (tokens after the first over the time
// they took: the first one's wait is queueing and prefill, which TTFT already shows).
function showStats(run) {
  const ms = (t) => `${Math.round(t)} ms`;
  $("ttft").textContent = run.first === null ? "–" : ms(run.first - run.start);
  const tokens = run.usage ? run.usage.completion_tokens : run.pieces;
  $("tokens").textContent = String(tokens);
  const seconds = (run.last - run.first) / 1000;
  $("rate").textContent = tokens > 1 && seconds > 0 ? ((tokens - 1) / seconds).toFixed(1) : "–";
  $("finish").textContent = run.finish || "–";
}

function busy(on) {
  $("send").disabled = on;
  $("stop-button").disabled = !on;
}

function resetOutput(prompt) {
  showError("");
  $("shown-prompt").textContent = prompt;
  $("generated").textContent = "";
  for (const id of ["ttft", "rate", "tokens", "finish"]) $(id).textContent = "–";
}

async function generate() {
  const chat = chatMode();
  const body = requestBody(chat);
  resetOutput(chat ? "" : body.prompt);
  const run = { start: performance.now(), first: null, last: null, pieces: 0, usage: null };
  let text = "";
  state.controller = new AbortController();
  busy(true);
  try {
    const path = chat ? "/v1/chat/completions" : "/v1/completions";
    const response = await call("POST", path, body, state.controller.signal);
    for await (const chunk of events(response)) {
      if (chunk.error) throw new ApiError(chunk.error.message); // the engine failed mid-stream
      if (chunk.usage) run.usage = chunk.usage;
      for (const choice of chunk.choices) {
        const piece = chat ? choice.delta.content || "" : choice.text;
        if (piece) {
          run.first ??= performance.now();
          run.last = performance.now();
          run.pieces += 1;
          text += piece;
          $("generated").append(piece);
        }
        if (choice.finish_reason) run.finish = choice.finish_reason;
      }
      showStats(run);
    }
    if (chat) {
      state.history.push(body.messages.at(-1), { role: "assistant", content: text });
      showTranscript();
      $("message").value = "";
    }
  } catch (e) {
    if (e.name === "AbortError") run.finish = "stopped here";
    else showError(e.message);
  } finally {
    state.controller = null;
    busy(false);
    showStats(run);
  }
}

function showTranscript() {
  $("transcript").replaceChildren(
    ...state.history.map((m) => {
      const item = document.createElement("li");
      item.className = m.role;
      item.textContent = `${m.role}: ${m.content}`;
      return item;
    }),
  );
}

function clearAll() {
  state.history = [];
  showTranscript();
  resetOutput("");
  checkSoon(0);
}

function switchMode() {
  $("completion-input").hidden = chatMode();
  $("chat-input").hidden = !chatMode();
  checkSoon(0);
}

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", useKey);
  $("forget-key").addEventListener("click", forgetKey);
  $("send").addEventListener("click", generate);
  $("stop-button").addEventListener("click", () => state.controller?.abort());
  $("clear").addEventListener("click", clearAll);
  $("model").addEventListener("change", () => checkSoon(0));
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", switchMode);
  }
  for (const id of ["prompt", "message", "system"]) {
    $(id).addEventListener("input", () => checkSoon());
    $(id).addEventListener("keydown", (e) => {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey) && !$("send").disabled) generate();
    });
  }
  if (sessionStorage.getItem(KEY)) $("api-key").placeholder = "a key is set for this tab";
  loadModels();
});
