// Helpers shared by the three pages. Plain ES modules, no build step: the gateway serves
// these files as they are.

/** The element with this id. */
export const $ = (id) => document.getElementById(id);

/** Headers for an API call: the caller's, plus the API key when the user gave one (a
 *  gateway started with --api-keys-file asks for it; the key stays in this tab). */
export function withKey(headers = {}) {
  const key = sessionStorage.getItem("mmc-api-key");
  return key ? { ...headers, authorization: `Bearer ${key}` } : headers;
}

/** `fetch` with the API key; a 401 shows the key form. */
export async function apiFetch(path, options = {}) {
  const response = await fetch(path, { ...options, headers: withKey(options.headers) });
  if (response.status === 401) askForKey();
  return response;
}

function askForKey() {
  const form = document.getElementById("api-key-form");
  if (!form || !form.hidden) return;
  form.hidden = false;
  document.getElementById("api-key").focus();
}

/** Calls the gateway's HTTP API; resolves to the parsed JSON body, or throws an Error
 *  carrying the server's own message (errors come in OpenAI's shape). */
export async function api(path, options = {}) {
  let response;
  try {
    response = await apiFetch(path, options);
  } catch (e) {
    throw new Error(`The gateway could not be reached (${e.message}).`);
  }
  if (!response.ok) throw await apiError(response);
  return response.json();
}

const keyForm = document.getElementById("api-key-form");
if (keyForm) {
  keyForm.addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("mmc-api-key", document.getElementById("api-key").value.trim());
    keyForm.hidden = true;
  });
}

/** The Error for a failed response, with the message from its `{error: {message}}` body. */
export async function apiError(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON: keep the status line */ }
  return new Error(message);
}

/** Creates an element: `el("a", {href: "/x"}, "text", child)`. Text is always set as
 *  text, never parsed as HTML, so captions and transcripts cannot inject markup. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== undefined && c !== null));
  return node;
}

/** Sets a live region's text (screen readers announce it) and marks errors. */
export function say(region, text, isError = false) {
  region.textContent = text;
  region.classList.toggle("error", isError);
}

/** "m:ss", or "h:mm:ss" from an hour on. */
export function clock(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const two = (n) => String(n).padStart(2, "0");
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}:${two(m)}:${two(s % 60)}` : `${m}:${two(s % 60)}`;
}

/** "1 minute 5 seconds": the spoken form of a time, for labels. */
export function spokenTime(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const parts = [];
  const unit = (n, word) => n > 0 && parts.push(`${n} ${word}${n === 1 ? "" : "s"}`);
  unit(Math.floor(s / 3600), "hour");
  unit(Math.floor((s % 3600) / 60), "minute");
  unit(s % 60, "second");
  return parts.length ? parts.join(" ") : "0 seconds";
}

/** Files dropped on `zone` or chosen in `input` go to `onFiles(File[])`. The input stays
 *  a real, visible file input: the keyboard path is the browser's own. */
export function dropZone(zone, input, onFiles) {
  input.addEventListener("change", () => input.files.length && onFiles([...input.files]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = [...(e.dataTransfer ? e.dataTransfer.files : [])];
    if (files.length) onFiles(files);
  });
}

/** Reads a `text/event-stream` response body: yields `{event, data}` with `data` parsed
 *  as JSON. (EventSource cannot POST an upload, so the stream is read by hand.) */
export async function* serverSentEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      if (data) yield { event, data: JSON.parse(data) };
    }
  }
}

/** "87%" */
export function percent(p) {
  return `${Math.round(p * 100)}%`;
}
