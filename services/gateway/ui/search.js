// Search page: words -> photos (POST /v1/images/search), the index listed when no search
// has been made, photos added by drag and drop or the file input (POST /v1/images).
import { $, api, dropZone, el, say } from "/ui/assets/app.js";

const form = $("search-form");
const query = $("query");
const results = $("results");
const searchStatus = $("search-status");
const indexStatus = $("index-status");
const indexLog = $("index-log");
let lastQuery = "";

/** One photo in the grid; `score` is absent when listing the index. */
function card(image, score) {
  const name = image.source_name || image.image_id;
  const caption = image.caption || `Photo ${name} (no caption)`;
  const remove = el("button", {
    type: "button", class: "quiet", "aria-label": `Remove ${name} from the index`,
    onclick: () => removeImage(image, name),
  }, "Remove");
  const details = [score === undefined ? null : el("span", { class: "score" }, `Score ${score.toFixed(3)}`), el("span", {}, name)]
    .filter(Boolean);
  const meta = el("span", { class: "meta" });
  details.forEach((d, i) => meta.append(...(i ? [" · ", d] : [d])));
  return el("li", { dataset: { imageId: image.image_id, sourceName: name } },
    el("figure", {},
      el("img", { src: image.thumbnail_url, alt: caption, loading: "lazy", width: 384, height: 288 }),
      el("figcaption", {}, el("span", { class: "caption" }, caption), el("br"), meta)),
    remove);
}

function show(cards) {
  results.replaceChildren(...cards);
}

async function listIndex() {
  try {
    const page = await api("/v1/images?page_size=100");
    show(page.images.map((image) => card(image)));
    say(searchStatus, page.images.length ? `${page.images.length} photos in the index, oldest first.` : "The index is empty: add photos below.");
  } catch (e) {
    say(searchStatus, `Could not list the index: ${e.message}`, true);
  }
}

async function search(text) {
  lastQuery = text;
  say(searchStatus, `Searching for “${text}”…`);
  try {
    const body = JSON.stringify({ query: text, top_k: 24 });
    const r = await api("/v1/images/search", { method: "POST", headers: { "content-type": "application/json" }, body });
    show(r.hits.map((hit) => card(hit.image, hit.score)));
    say(searchStatus, r.hits.length ? `${r.hits.length} photos for “${text}”, best match first.` : `No photos match “${text}”.`);
  } catch (e) {
    say(searchStatus, `Search failed: ${e.message}`, true);
  }
}

async function removeImage(image, name) {
  try {
    await api(`/v1/images/${encodeURIComponent(image.image_id)}`, { method: "DELETE" });
    results.querySelector(`li[data-image-id="${CSS.escape(image.image_id)}"]`)?.remove();
    say(searchStatus, `Removed ${name} from the index.`);
    query.focus();
  } catch (e) {
    say(searchStatus, `Could not remove ${name}: ${e.message}`, true);
  }
}

/** Indexes the files one by one, so progress can be told per photo. */
async function indexFiles(files) {
  let done = 0, failed = 0;
  indexLog.replaceChildren();
  for (const file of files) {
    say(indexStatus, `Indexing ${file.name} (${done + failed + 1} of ${files.length})…`);
    const data = new FormData();
    data.append("file", file, file.name);
    let line;
    try {
      const r = (await api("/v1/images", { method: "POST", body: data })).results[0];
      if (r.error) throw new Error(r.error.message);
      done += 1;
      line = `${file.name}: ${r.already_indexed ? "already indexed" : "indexed"}, “${r.image.caption}”`;
    } catch (e) {
      failed += 1;
      line = `${file.name}: not indexed: ${e.message}`;
    }
    indexLog.append(el("li", { class: line.includes("not indexed") ? "error" : undefined }, line));
  }
  say(indexStatus, `Indexed ${done} of ${files.length} photos${failed ? `; ${failed} failed (see below)` : ""}.`, failed > 0);
  if (lastQuery) await search(lastQuery);
  else await listIndex();
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = query.value.trim();
  if (text) search(text);
});
dropZone($("drop"), $("photos"), indexFiles);
listIndex();
