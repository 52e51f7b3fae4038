// Meetings page: a recording -> live progress and transcript -> summary, decisions and
// action items (POST /v1/meetings, server-sent events); a stored meeting by id (GET
// /v1/meetings/{id}); questions answered with cited times (POST /v1/meetings/{id}/ask);
// a person's review of each item in place (PATCH /v1/meetings/{id}/{list}/{index}, POST
// /v1/meetings/{id}/review) and the exports (GET /v1/meetings/{id}/export); the stored
// meetings, newest first (GET /v1/meetings), each deleted for good on request (DELETE
// /v1/meetings/{id}, asked twice: the first press only arms the button).
import { $, api, apiError, apiFetch, clock, dropZone, el, percent, say, serverSentEvents, spokenTime } from "/ui/assets/app.js";

const uploadForm = $("upload-form"), recording = $("recording"), progress = $("progress");
const progressStatus = $("progress-status"), stages = $("stages"), errorBox = $("meeting-error");
const article = $("meeting"), player = $("player"), transcript = $("transcript"), answer = $("answer");
let meetingId = null;
let meetingVersion = 0;
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

/** "approved by ana", "rejected by bo", "machine draft": an item's review state in words. */
function reviewState(r) {
  if (!r || r.status === "pending") return el("span", { class: "meta" }, "machine draft");
  const what = r.status === "approved" && r.source === "human" ? "edited" : r.status;
  return el("span", { class: `status-${r.status}` }, `${what} by ${r.reviewed_by}`);
}

/** Sends one item's change (PATCH) with the version shown, then shows the stored meeting. */
async function changeItem(list, index, item, change, focusId) {
  const reviewer = $("reviewer").value.trim();
  if (!reviewer) { say($("review-status"), "Enter your name first: it is saved with each change.", true); $("reviewer").focus(); return; }
  localStorage.setItem("mmc-reviewer", reviewer);
  try {
    const m = await api(`/v1/meetings/${encodeURIComponent(meetingId)}/${list}/${index}`, {
      method: "PATCH", headers: { "content-type": "application/json" },
      body: JSON.stringify({ ...change, reviewer, version: item.review.version }),
    });
    showReviewed(m);
    say($("review-status"), "Saved.");
    const again = $(focusId);
    if (again) again.focus();
  } catch (e) {
    say($("review-status"), `Not saved: ${e.message}`, true);
  }
}

/** Save, approve and reject buttons for one item; `edits()` reads its fields. */
function reviewButtons(list, index, item, edits, label) {
  const id = (what) => `${list}-${index}-${what}`;
  return el("div", { class: "review-actions" },
    el("button", { type: "button", id: id("save"), class: "quiet", "aria-label": `Save ${label}`, onclick: () => changeItem(list, index, item, edits(), id("save")) }, "Save"),
    el("button", { type: "button", id: id("approve"), class: "quiet", "aria-label": `Approve ${label}`, onclick: () => changeItem(list, index, item, { status: "approved" }, id("approve")) }, "Approve"),
    el("button", { type: "button", id: id("reject"), class: "quiet", "aria-label": `Reject ${label}`, onclick: () => changeItem(list, index, item, { status: "rejected" }, id("reject")) }, "Reject"));
}

function ownerPicker(a, index, participants) {
  const names = [...new Set([...participants, ...(a.owner ? [a.owner] : [])])];
  const select = el("select", { id: `action_items-${index}-owner`, "aria-label": `Owner of action ${index + 1}` },
    el("option", { value: "" }, "unassigned"), ...names.map((n) => el("option", { value: n }, n)));
  select.value = a.owner || "";
  return select;
}

function showSummary(s, m) {
  const summary = $("summary");
  summary.textContent = s.summary || "No summary was produced.";
  summary.classList.remove("pending");
  listItems($("key-points"), s.key_points, "No key points.");
  if (!m) {
    listItems($("decisions"), s.decisions, "No decisions were recorded.");
    const rows = s.action_items.map((a) => el("tr", {},
      el("td", {}, a.text), el("td", {}, a.owner || "unassigned"), el("td", {}, a.due || "not stated"), el("td", {}, citations(a)), el("td", {})));
    $("actions").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 5, class: "pending" }, "No action items."))]));
    return;
  }
  // A stored meeting: every decision and action item can be reviewed in place.
  const decisions = s.decisions.map((d, i) => {
    const input = el("input", { type: "text", id: `decisions-${i}-text`, value: d.text, maxlength: 500, "aria-label": `Decision ${i + 1}`,
      class: d.review && d.review.status === "rejected" ? "rejected-text" : undefined });
    return el("li", { dataset: { status: d.review ? d.review.status : "pending" } }, input, " ", citations(d), " ", reviewState(d.review),
      reviewButtons("decisions", i, d, () => ({ text: input.value.trim() }), `decision ${i + 1}`));
  });
  $("decisions").replaceChildren(...(decisions.length ? decisions : [el("li", { class: "pending" }, "No decisions were recorded.")]));
  const rows = s.action_items.map((a, i) => {
    const text = el("input", { type: "text", id: `action_items-${i}-text`, value: a.text, maxlength: 500, "aria-label": `Action ${i + 1}`,
      class: a.review.status === "rejected" ? "rejected-text" : undefined });
    const owner = ownerPicker(a, i, m.participants);
    const due = el("input", { type: "text", id: `action_items-${i}-due`, value: a.due, maxlength: 64, placeholder: "not stated", "aria-label": `Due date of action ${i + 1}` });
    return el("tr", { dataset: { status: a.review.status } },
      el("td", {}, text), el("td", {}, owner), el("td", {}, due), el("td", {}, citations(a)),
      el("td", {}, reviewState(a.review),
        reviewButtons("action_items", i, a, () => ({ text: text.value.trim(), owner: owner.value, due: due.value.trim() }), `action ${i + 1}`)));
  });
  $("actions").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 5, class: "pending" }, "No action items."))]));
}

/** The stored meeting's notes with their review controls, state and export links. */
function showReviewed(m) {
  meetingVersion = m.version;
  if (m.summary) showSummary(m.summary, m);
  $("review-bar").hidden = false;
  $("notes-actions").hidden = false;
  $("notes-state").textContent = m.notes_reviewed ? `Notes reviewed by ${m.notes_reviewed_by}.` : "Draft: nobody has reviewed these notes yet.";
  for (const [format, id] of [["md", "export-md"], ["json", "export-json"], ["ics", "export-ics"]]) {
    $(id).href = `/v1/meetings/${encodeURIComponent(m.meeting_id)}/export?format=${format}`;
  }
}

async function markReviewed() {
  const reviewer = $("reviewer").value.trim();
  if (!reviewer) { say($("review-status"), "Enter your name first: it is saved with each change.", true); $("reviewer").focus(); return; }
  try {
    const m = await api(`/v1/meetings/${encodeURIComponent(meetingId)}/review`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ reviewer, version: meetingVersion }),
    });
    showReviewed(m);
    say($("review-status"), "The notes are marked reviewed.");
  } catch (e) {
    say($("review-status"), `Not marked: ${e.message}`, true);
  }
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
  $("review-bar").hidden = true;
  $("notes-actions").hidden = true;
  say(errorBox, "");
  article.hidden = false;
}

function showMeeting(m) {
  meetingId = m.meeting_id;
  startMeeting(m.title || "Untitled meeting");
  m.segments.forEach(addSegment);
  $("meeting-meta").textContent = `Meeting id ${m.meeting_id} · ${clock(m.audio_duration_ms)} long · language ${m.language || "unknown"}`;
  if (m.summary) showReviewed(m);
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
    const response = await apiFetch("/v1/meetings", { method: "POST", body: data });
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
        listMeetings(false);
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
$("reviewer").value = localStorage.getItem("mmc-reviewer") || "";
$("mark-reviewed").addEventListener("click", markReviewed);
// Export links download with the API key when the server asks for one (a plain link
// cannot send it).
for (const id of ["export-md", "export-json", "export-ics"]) {
  $(id).addEventListener("click", async (e) => {
    if (!sessionStorage.getItem("mmc-api-key")) return;
    e.preventDefault();
    const link = e.currentTarget;
    try {
      const response = await apiFetch(link.href);
      if (!response.ok) throw await apiError(response);
      const name = (response.headers.get("content-disposition") || "").match(/filename="([^"]+)"/);
      const url = URL.createObjectURL(await response.blob());
      const a = el("a", { href: url, download: name ? name[1] : "" });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (err) {
      say($("review-status"), `Export failed: ${err.message}`, true);
    }
  });
}

/** A delete button that deletes on its second press: the first arms it and says what will
 *  go (a dialog would take the user out of the page; this stays keyboard-first). Any other
 *  focus disarms it. */
function twoStepDelete(button, label, status, run) {
  const idle = button.textContent;
  const disarm = () => { button.classList.remove("armed"); button.textContent = idle; button.setAttribute("aria-label", label); };
  button.setAttribute("aria-label", label);
  button.addEventListener("blur", disarm);
  button.addEventListener("click", async () => {
    if (!button.classList.contains("armed")) {
      button.classList.add("armed");
      button.textContent = "Press again to delete for good";
      button.setAttribute("aria-label", `${label}: press again to delete for good`);
      say(status, "Press the button again to delete it for good; nothing of it can be restored.");
      return;
    }
    disarm();
    button.disabled = true;
    try {
      await run();
    } catch (e) {
      say(status, `Delete failed: ${e.message}`, true);
    } finally {
      button.disabled = false;
    }
  });
}

async function deleteMeeting(id) {
  await api(`/v1/meetings/${encodeURIComponent(id)}`, { method: "DELETE" });
  if (id === meetingId) {
    meetingId = null;
    article.hidden = true;
    player.pause();
    player.removeAttribute("src");
    history.replaceState(null, "", location.pathname);
  }
  await listMeetings(false);
}

let nextPage = "";
/** Lists the stored meetings (a page at a time), each with Open and Delete. */
async function listMeetings(more) {
  const list = $("meeting-list"), status = $("list-status");
  try {
    const query = new URLSearchParams({ page_size: "20", page_token: more ? nextPage : "" });
    const page = await api(`/v1/meetings?${query}`);
    if (!more) list.replaceChildren();
    for (const m of page.meetings) {
      const title = m.title || "Untitled meeting";
      const when = new Date(m.created_at_unix_ms).toLocaleString();
      const notes = `${m.decisions} decisions, ${m.action_items} action items${m.notes_reviewed ? ", reviewed" : ""}`;
      const remove = el("button", { type: "button", class: "danger" }, "Delete");
      const li = el("li", { dataset: { meetingId: m.meeting_id } },
        el("button", { type: "button", class: "quiet", "aria-label": `Open ${title}, ${when}`, onclick: () => openMeeting(m.meeting_id) }, title),
        el("span", { class: "meta" }, `${when} · ${clock(m.audio_duration_ms)} · ${notes}`),
        remove);
      twoStepDelete(remove, `Delete ${title}, ${when}`, status, async () => {
        await deleteMeeting(m.meeting_id);
        say(status, `Deleted ${title}.`);
        $("open-heading").focus();
      });
      list.append(li);
    }
    nextPage = page.next_page_token;
    $("more-meetings").hidden = !nextPage;
    if (!more && page.meetings.length === 0) say(status, "No meetings are stored.");
    else if (!more) say(status, "");
  } catch (e) {
    say(status, `Could not list the meetings: ${e.message}`, true);
  }
}

$("more-meetings").addEventListener("click", () => listMeetings(true));
twoStepDelete($("delete-meeting"), "Delete this meeting", $("delete-status"), async () => {
  const title = $("meeting-title").textContent;
  await deleteMeeting(meetingId);
  say($("list-status"), `Deleted ${title}.`);
  $("open-heading").focus();
});
listMeetings(false);
const fromUrl = new URLSearchParams(location.search).get("id");
if (fromUrl) openMeeting(fromUrl);
