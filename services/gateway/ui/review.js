// Review page: the photos whose alt text the machine was unsure of (GET
// /v1/images?needs_review=true, least sure first); a person corrects the text (PATCH
// /v1/images/{id}) or approves it (POST /v1/images/{id}/approve). Each change is sent with
// the version the page showed, so a colleague's edit in between is reported, not overwritten.
import { $, api, el, percent, say } from "/ui/assets/app.js";

const GUIDE = 125;
const status = $("review-status");
const queue = $("queue");
const reviewer = $("reviewer");
reviewer.value = localStorage.getItem("mmc-reviewer") || "";
reviewer.addEventListener("change", () => localStorage.setItem("mmc-reviewer", reviewer.value.trim()));
$("reviewer-form").addEventListener("submit", (e) => e.preventDefault());

/** The reviewer's name, or null (with the field focused and a message) when missing. */
function who() {
  const name = reviewer.value.trim();
  if (!name) {
    say(status, "Enter your name first: it is saved with each change.", true);
    reviewer.focus();
    return null;
  }
  localStorage.setItem("mmc-reviewer", name);
  return name;
}

function counter(input, hint) {
  const n = input.value.length;
  hint.textContent = n <= GUIDE ? `${n} of ${GUIDE} characters.` : `${n} characters: ${n - GUIDE} over the ${GUIDE} that read best.`;
  hint.classList.toggle("error", n > GUIDE);
}

async function send(image, path, method, body, li, done) {
  const name = who();
  if (!name) return;
  try {
    await api(path, { method, headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, reviewer: name, version: image.version }) });
    // Focus moves to the next photo's text (or the heading when none is left).
    const next = li.nextElementSibling || li.previousElementSibling;
    li.remove();
    say(status, `${done} ${queue.children.length ? `${queue.children.length} left.` : "Nothing left to review."}`);
    if (next) next.querySelector("input").focus();
    else $("queue-heading").focus();
  } catch (e) {
    say(status, `${image.source_name}: ${e.message}`, true);
  }
}

function item(image) {
  const id = image.image_id;
  const input = el("input", { id: `alt-${id}`, type: "text", maxlength: 1000, value: image.caption, autocomplete: "off",
    "aria-describedby": `count-${id} draft-${id}` });
  const hint = el("p", { id: `count-${id}`, class: "hint" });
  counter(input, hint);
  input.addEventListener("input", () => counter(input, hint));
  const li = el("li", { dataset: { imageId: id, sourceName: image.source_name } });
  const form = el("form", {},
    el("label", { for: `alt-${id}` }, `Alt text for ${image.source_name}`),
    input,
    hint,
    el("p", { id: `draft-${id}`, class: "meta" }, `Machine draft (${percent(image.caption_confidence)} sure): ${image.caption}`),
    el("div", { class: "row" },
      el("button", { type: "submit" }, "Save"),
      el("button", { type: "button", class: "quiet", onclick: () => send(image, `/v1/images/${encodeURIComponent(id)}/approve`, "POST", {}, li, `Approved ${image.source_name}.`) },
        `Approve as is`)));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) { say(status, "The alt text is empty.", true); input.focus(); return; }
    if (text === image.caption) { send(image, `/v1/images/${encodeURIComponent(id)}/approve`, "POST", {}, li, `Approved ${image.source_name}.`); return; }
    send(image, `/v1/images/${encodeURIComponent(id)}`, "PATCH", { alt_text: text }, li, `Saved ${image.source_name}.`);
  });
  li.append(el("img", { src: image.thumbnail_url, alt: image.caption, width: 192, height: 144 }), form);
  return li;
}

async function load() {
  say(status, "Loading the review queue…");
  try {
    const page = await api("/v1/images?needs_review=true&page_size=100");
    queue.replaceChildren(...page.images.map(item));
    say(status, page.images.length ? `${page.images.length} photos to review.` : "Nothing to review.");
  } catch (e) {
    say(status, `Could not load the queue: ${e.message}`, true);
  }
}

$("queue-heading").tabIndex = -1;
load();
