// Meetings page: a recording -> live progress and transcript -> summary, decisions and
// action items (POST /v1/meetings, server-sent events); a stored meeting by id (GET
// /v1/meetings/{id}); questions answered with cited times (POST /v1/meetings/{id}/ask).
import { $, api, apiError, clock, dropZone, el, percent, say, serverSentEvents, spokenTime } from "/ui/assets/app.js";

const uploadForm = $("upload-form"), recording = $("recording"), progress = $("progress");
const progressStatus = $("progress-status"), stages = $("stages"), errorBox = $("meeting-error");
const article = $("meeting"), player = $("player"), transcript = $("transcript"), answer = $("answer");
let meetingId = null;
let segments = new Map(); // segment id -> {start_ms, end_ms, text}
let audioUrl = null;

/** Plays the recording from a segment (when this page has it) and marks the segment in
 *  the transcript; `moveFocus` takes keyboard focus there (from a citation). */
function seek(segmentId, moveFocus) {
  const segment = segments.get(segmentId);
  if (!segment) return;
  if (player.src) {
    player.currentTime = segment.start_ms / 1000;
    player.play().catch(() => { /* no audio output: the position is still set */ });
  }
  transcript.querySelectorAll("li.current").forEach((li) => li.classList.remove("current"));
  const li = $(`segment-${segmentId}`);
  if (li) {
    li.classList.add("current");
    li.scrollIntoView({ block: "nearest" });
    if (moveFocus) li.focus();
  }
}

function timeButton(segmentId, moveFocus) {
  const segment = segments.get(segmentId);
  if (!segment) return el("span", { class: "flag" }, `segment ${segmentId} (missing)`);
  return el("button", {
    type: "button", class: "quiet ts", dataset: { segmentId, startMs: segment.start_ms },
    "aria-label": `Play from ${clock(segment.start_ms)}`, title: spokenTime(segment.start_ms),
    onclick: () => seek(segmentId, moveFocus),
  }, clock(segment.start_ms));
}

function addSegment(s) {
  segments.set(s.id, s);
  transcript.append(el("li", { id: `segment-${s.id}`, tabindex: "-1" }, timeButton(s.id, false), s.text));
}

/** The segments an item cites, as time buttons; unverified items are flagged. */
function citations(item) {
  const out = el("span", {});
  item.segment_ids.forEach((id, i) => out.append(...(i ? [" ", timeButton(id, true)] : [timeButton(id, true)])));
  if (!item.citation_verified) out.append(" ", el("span", { class: "flag" }, "(citation not verified)"));
  return out;
}

function listItems(list, items, empty) {
  list.replaceChildren(...(items.length
    ? items.map((item) => el("li", {}, item.text, " ", citations(item)))
    : [el("li", { class: "pending" }, empty)]));
}

function showSummary(s) {
  const summary = $("summary");
  summary.textContent = s.summary || "No summary was produced.";
  summary.classList.remove("pending");
  listItems($("decisions"), s.decisions, "No decisions were recorded.");
  listItems($("key-points"), s.key_points, "No key points.");
  const rows = s.action_items.map((a) => el("tr", {},
    el("td", {}, a.text), el("td", {}, a.owner || "unassigned"), el("td", {}, a.due || "not stated"), el("td", {}, citations(a))));
  $("actions").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 4, class: "pending" }, "No action items."))]));
}

function startMeeting(title) {
  segments = new Map();
  transcript.replaceChildren();
  answer.replaceChildren();
  $("meeting-title").textContent = title;
  $("meeting-meta").textContent = "";
  $("summary").textContent = "Appears when the transcript is done.";
  $("summary").classList.add("pending");
  for (const id of ["decisions", "key-points"]) $(id).replaceChildren();
  $("actions").tBodies[0].replaceChildren();
  say(errorBox, "");
  article.hidden = false;
}

function showMeeting(m) {
  meetingId = m.meeting_id;
  startMeeting(m.title || "Untitled meeting");
  m.segments.forEach(addSegment);
  $("meeting-meta").textContent = `Meeting id ${m.meeting_id} · ${clock(m.audio_duration_ms)} long · language ${m.language || "unknown"}`;
  if (m.summary) showSummary(m.summary);
  history.replaceState(null, "", `?id=${encodeURIComponent(m.meeting_id)}`);
}

async function openMeeting(id) {
  try {
    showMeeting(await api(`/v1/meetings/${encodeURIComponent(id)}`));
  } catch (e) {
    say(errorBox, `Could not open meeting ${id}: ${e.message}`, true);
  }
}

function onProgress(p) {
  progress.value = p.fraction_done;
  const text = `${p.stage}: ${p.message || percent(p.fraction_done)}`;
  say(progressStatus, text);
  const last = stages.lastElementChild;
  if (!last || last.dataset.stage !== p.stage) stages.append(el("li", { dataset: { stage: p.stage } }, p.stage));
}

async function summarize(file, title, participants) {
  const button = uploadForm.querySelector("button[type=submit]");
  button.disabled = true;
  $("progress-area").hidden = false;
  stages.replaceChildren();
  progress.value = 0;
  say(progressStatus, `Uploading ${file.name}…`);
  player.pause();
  player.hidden = true;
  player.removeAttribute("src");
  player.load();
  startMeeting(title || file.name);
  if (audioUrl) URL.revokeObjectURL(audioUrl);
  audioUrl = URL.createObjectURL(file);
  const data = new FormData();
  data.append("file", file, file.name);
  if (title) data.append("title", title);
  if (participants) data.append("participants", participants);
  try {
    const response = await fetch("/v1/meetings", { method: "POST", body: data });
    if (!response.ok) throw await apiError(response);
    let finished = false;
    for await (const { event, data: d } of serverSentEvents(response)) {
      if (event === "progress") onProgress(d);
      else if (event === "segment") addSegment(d);
      else if (event === "error") throw new Error(d.error ? d.error.message : "the summary failed");
      else if (event === "summary") {
        finished = true;
        await openMeeting(d.meeting_id);
        player.src = audioUrl;
        player.hidden = false;
        progress.value = 1;
        say(progressStatus, `Done: ${segments.size} transcript segments, ${d.action_items.length} action items.`);
      }
    }
    if (!finished) throw new Error("the connection closed before the summary came");
  } catch (e) {
    say(progressStatus, "Stopped.");
    say(errorBox, `The summary failed: ${e.message}`, true);
  } finally {
    button.disabled = false;
  }
}

async function ask(question) {
  say(answer, `Looking for “${question}” in the meeting…`);
  try {
    const r = await api(`/v1/meetings/${encodeURIComponent(meetingId)}/ask`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ question }),
    });
    const sources = r.citations.map((c) => el("li", {}, timeButton(c.segment_id, true), `“${c.text.trim()}”`));
    // A quoted line is said to be one, so nobody takes it for the model's own words.
    const how = r.source === "extractive" ? [el("p", { class: "hint" }, "Quoted from the transcript: the model's answer did not pass the checks.")] : [];
    answer.replaceChildren(
      el("p", {}, el("strong", {}, "Answer: "), r.answer),
      ...how,
      ...(sources.length ? [el("p", {}, "From:"), el("ul", { class: "citations" }, ...sources)] : []));
  } catch (e) {
    say(answer, `The question failed: ${e.message}`, true);
  }
}

let chosen = null;
dropZone($("drop"), recording, (files) => { chosen = files[0]; say(progressStatus, `${chosen.name} is ready: press Summarize.`); $("progress-area").hidden = false; });
uploadForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const file = chosen || recording.files[0];
  if (file) summarize(file, $("title").value.trim(), $("participants").value.trim());
  else { $("progress-area").hidden = false; say(progressStatus, "Choose a recording first.", true); recording.focus(); }
});
$("open-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const id = $("meeting-id").value.trim();
  if (!id) return;
  player.pause();
  player.removeAttribute("src");
  player.hidden = true;
  openMeeting(id);
});
$("ask-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = $("question").value.trim();
  if (q && meetingId) ask(q);
});
const fromUrl = new URLSearchParams(location.search).get("id");
if (fromUrl) openMeeting(fromUrl);
