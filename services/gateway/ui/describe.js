// Describe page: a photo -> alt text (with a copy button) and a detailed description
// (POST /v1/images/describe).
import { $, api, dropZone, el, percent, say } from "/ui/assets/app.js";

const form = $("describe-form");
const input = $("photo");
const status = $("describe-status");
const result = $("result");
const preview = $("preview");
const altText = $("alt-text");
const copyStatus = $("copy-status");
let current = null;
let previewUrl = null;

async function describe(file) {
  current = file;
  say(status, `Describing ${file.name}…`);
  say(copyStatus, "");
  const data = new FormData();
  data.append("file", file, file.name);
  data.append("modes", "alt_text,detailed");
  try {
    const r = await api("/v1/images/describe", { method: "POST", body: data });
    const alt = r.captions.find((c) => c.mode === "alt_text");
    const detailed = r.captions.find((c) => c.mode === "detailed");
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.alt = alt ? alt.text : "";
    altText.value = alt ? alt.text : "";
    $("detailed").textContent = detailed ? detailed.text : "";
    $("labels").replaceChildren(
      ...r.labels.map((l) => el("li", {}, `${l.name}: ${percent(l.probability)}`)));
    const how = alt && alt.from_template ? "written from the labels by a template" : "written by the language model from the labels";
    $("confidence").textContent = alt ? `Confidence ${percent(alt.confidence)}; ${how}.` : "";
    result.hidden = false;
    say(status, `Described ${file.name}.`);
  } catch (e) {
    say(status, `Could not describe ${file.name}: ${e.message}`, true);
  }
}

async function copy() {
  try {
    await navigator.clipboard.writeText(altText.value);
  } catch (_) {
    // Without clipboard permission: select the text so Ctrl+C copies it.
    altText.select();
    if (!document.execCommand("copy")) {
      say(copyStatus, "Copying was refused: the text is selected, press Ctrl+C.", true);
      return;
    }
  }
  say(copyStatus, "Copied to the clipboard.");
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  if (current) describe(current);
  else { say(status, "Choose a photo first.", true); input.focus(); }
});
$("copy").addEventListener("click", copy);
dropZone($("drop"), input, (files) => describe(files[0]));
