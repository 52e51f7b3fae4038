// Drives the gateway's web UI in headless Chromium (Debian's /usr/bin/chromium, through
// playwright-core) against a running cluster, as a user would:
//   search:   photos added by drag and drop and by the file input, then "a cat" typed and
//             submitted from the keyboard must show the cat photo first;
//   describe: a photo's alt text (<= 125 characters, naming the object), copied with the
//             copy button;
//   review:   the photos the machine was unsure of are queued; one alt text corrected and
//             saved with Enter, one approved, from the keyboard alone;
//   meetings: the test meeting uploaded, live progress, then action items with owners,
//             a clicked timestamp seeking the recording, a cited answer, an owner
//             reassigned from the participant picker, a decision rejected, the notes marked
//             reviewed and the Markdown export showing both, the meeting reopened by
//             its address, then listed and deleted with two key presses.
// On every page: every control reachable with Tab, every photo with alt text, no script
// errors or Content-Security-Policy violations, and axe-core reports no serious or
// critical accessibility violation. A full-page screenshot of each page is saved.
//
//   node web_ui_check.mjs BASE_URL PHOTOS_DIR MEETING_WAV ARTIFACTS_DIR
// (tests/e2e/web_ui.rs runs it; exit status 0 = every check passed.)
import { readFileSync, readdirSync, mkdirSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [base, photosDir, meetingWav, artifacts] = process.argv.slice(2);
// The gateway's API key, when it requires one (an environment variable: not in `ps`).
const apiKey = process.env.MMC_UI_API_KEY || "";
/** Headers for the checks' own API reads (outside the page): the key, if any. */
const withKey = () => ({ headers: apiKey ? { authorization: `Bearer ${apiKey}` } : {} });
if (!artifacts) {
  console.error("usage: node web_ui_check.mjs BASE_URL PHOTOS_DIR MEETING_WAV ARTIFACTS_DIR");
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });
const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");
const MINUTE = 60_000;
const report = { pages: {} };

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

/** Every visible control must take focus by Tab alone, in a cycle from the skip link. */
async function keyboardReachable(page) {
  const controls = await page.evaluate(() => {
    const visible = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length) && !e.closest("[hidden]");
    const all = [...document.querySelectorAll("a[href], button:not([disabled]), input, textarea, select, [tabindex='0']")].filter(visible);
    all.forEach((e, i) => { e.dataset.kb = String(i); });
    return all.map((e) => `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""} ${(e.getAttribute("aria-label") || e.textContent || "").trim().slice(0, 30)}`);
  });
  // Start where a fresh page starts: before the first element of the body.
  await page.evaluate(() => {
    const start = document.createElement("span");
    start.tabIndex = -1;
    start.id = "kb-start";
    document.body.prepend(start);
    start.focus();
    start.remove();
  });
  const reached = new Set();
  let first = null;
  for (let i = 0; i < controls.length + 10; i++) {
    await page.keyboard.press("Tab");
    const kb = await page.evaluate(() => document.activeElement ? document.activeElement.dataset.kb ?? null : null);
    if (i === 0) first = await page.evaluate(() => document.activeElement.textContent.trim());
    if (kb !== null) reached.add(kb);
  }
  const missed = controls.filter((_, i) => !reached.has(String(i)));
  check(first === "Skip to main content", `the first Tab stop is the skip link, not ${JSON.stringify(first)}`);
  check(missed.length === 0, `controls not reachable with Tab: ${missed.join("; ")}`);
  return controls.length;
}

async function photosHaveAltText(page) {
  const images = await page.$$eval("img", (imgs) => imgs.filter((i) => !i.closest("[hidden]"))
    .map((i) => ({ src: i.getAttribute("src"), alt: i.getAttribute("alt"), loaded: i.complete && i.naturalWidth > 0 })));
  for (const i of images) {
    check(i.alt && i.alt.trim().length > 0, `photo ${i.src} has no alt text`);
    check(i.loaded, `photo ${i.src} did not load`);
  }
  return images.length;
}

async function accessibility(page, name) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"] },
  }));
  const summary = result.violations.map((v) => `${v.impact} ${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`);
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  writeFileSync(join(artifacts, `${name}.axe.json`), JSON.stringify(result.violations, null, 2));
  check(bad.length === 0, `axe-core on ${name}: ${summary.join("\n  ")}`);
  return { passes: result.passes.length, minor_or_moderate: summary };
}

/** Opens a UI page; it must come with its security headers. */
async function open(page, path) {
  const response = await page.goto(`${base}${path}`);
  check(response.status() === 200, `${path}: status ${response.status()}`);
  const headers = response.headers();
  check(/script-src 'self'/.test(headers["content-security-policy"] || ""), `${path}: a Content-Security-Policy`);
  check(headers["x-content-type-options"] === "nosniff", `${path}: nosniff`);
}

async function finish(page, name, extra) {
  const controls = await keyboardReachable(page);
  const photos = await photosHaveAltText(page);
  const axe = await accessibility(page, name);
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  const screenshot = join(artifacts, `${name}.png`);
  await page.screenshot({ path: screenshot, fullPage: true });
  report.pages[name] = { controls_reachable_by_tab: controls, photos_with_alt_text: photos, axe_rules_passed: axe.passes,
    axe_minor_or_moderate: axe.minor_or_moderate, screenshot, ...extra };
  console.log(`${name}: ok ${JSON.stringify(report.pages[name])}`);
}

/** Drops `files` on the element as a user dragging them from a file manager would. */
async function drop(page, selector, files) {
  const transfer = await page.evaluateHandle((items) => {
    const dt = new DataTransfer();
    for (const { name, b64, type } of items) {
      dt.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], name, { type }));
    }
    return dt;
  }, files.map((f) => ({ name: f.split("/").pop(), b64: readFileSync(f).toString("base64"), type: f.endsWith(".png") ? "image/png" : "image/jpeg" })));
  await page.dispatchEvent(selector, "drop", { dataTransfer: transfer });
}

async function searchPage(page) {
  await open(page, "/ui/search");
  const photos = readdirSync(photosDir).filter((f) => /\.(jpe?g|png|webp|gif)$/i.test(f)).sort().map((f) => join(photosDir, f));
  check(photos.length >= 4, `test photos in ${photosDir}`);
  /** Waits for the indexing of `n` photos to end; every one must have been indexed. */
  async function indexed(n) {
    const status = page.locator("#index-status");
    await status.filter({ hasText: new RegExp(`^Indexed \\d+ of ${n} photos`) }).waitFor({ timeout: 5 * MINUTE });
    const text = await status.textContent();
    check(text === `Indexed ${n} of ${n} photos.`, `${text} ${await page.locator("#index-log").textContent()}`);
  }
  // Two photos dragged and dropped, the rest chosen in the file input.
  await drop(page, "#drop", photos.slice(0, 2));
  await indexed(2);
  await page.locator("#photos").setInputFiles(photos.slice(2));
  await indexed(photos.length - 2);
  await page.locator("#search-status").filter({ hasText: `${photos.length} photos in the index` }).waitFor();

  // The search, typed and submitted from the keyboard.
  await page.getByLabel("Describe the photo you are looking for").focus();
  await page.keyboard.type("a cat");
  await page.keyboard.press("Enter");
  await page.locator("#search-status").filter({ hasText: "best match first" }).waitFor({ timeout: 2 * MINUTE });
  const hits = await page.$$eval("#results li", (lis) => lis.map((li) => ({
    source: li.dataset.sourceName, alt: li.querySelector("img").alt, score: li.querySelector(".score").textContent })));
  console.log(`search "a cat": ${JSON.stringify(hits.slice(0, 3))}`);
  check(hits.length === photos.length, `every indexed photo ranked (${hits.length})`);
  check(/cat/i.test(hits[0].source), `the cat photo first, not ${hits[0].source}`);
  await page.waitForFunction(() => [...document.querySelectorAll("#results img")].every((i) => i.complete));
  await finish(page, "search", { first_hit: hits[0] });
}

async function describePage(page) {
  await open(page, "/ui/describe");
  const bike = join(photosDir, "bike.jpg");
  await page.getByLabel("Choose a photo, or drop it in this box").setInputFiles(bike);
  await page.locator("#describe-status").filter({ hasText: "Described bike.jpg." }).waitFor({ timeout: 5 * MINUTE });
  const alt = await page.locator("#alt-text").inputValue();
  const detailed = await page.locator("#detailed").textContent();
  console.log(`describe bike.jpg: alt ${JSON.stringify(alt)}; detailed ${JSON.stringify(detailed)}`);
  check(/\b(bike|bicycle)/i.test(alt), "the alt text names the bike");
  check(alt.length > 0 && alt.length <= 125, `alt text within 125 characters (${alt.length})`);
  check(!/^(an? )?(image|picture|photo) of/i.test(alt), "no 'image of' opener");
  check(detailed.length > alt.length, "a detailed description longer than the alt text");
  check(await page.locator("#preview").getAttribute("alt") === alt, "the preview's alt is the alt text");
  // Copy from the keyboard.
  await page.locator("#copy").focus();
  await page.keyboard.press("Enter");
  await page.locator("#copy-status").filter({ hasText: "Copied" }).waitFor();
  const copied = await page.evaluate(() => navigator.clipboard.readText());
  check(copied === alt, `the clipboard holds the alt text (${JSON.stringify(copied)})`);
  await finish(page, "describe", { alt_text: alt });
}

async function reviewPage(page) {
  await open(page, "/ui/review");
  await page.locator("#review-status").filter({ hasText: /photos to review|Nothing to review/ }).waitFor();
  const queued = await page.$$eval("#queue li", (lis) => lis.map((li) => ({ source: li.dataset.sourceName, alt: li.querySelector("img").alt })));
  console.log(`review queue: ${JSON.stringify(queued)}`);
  check(queued.length >= 2, `unsure photos wait for review (${queued.length})`);
  check(queued.every((q) => /\(uncertain\)\.$|not recognised/.test(q.alt)), "every queued alt text says it is unsure");
  check(!queued.some((q) => /cat\.png|coffee\.png/.test(q.source)), "sure ones are not queued");
  await page.getByLabel("Your name").fill("Ana");
  // Correct the first with the keyboard: type, Enter saves.
  const first = page.getByLabel(`Alt text for ${queued[0].source}`);
  await first.focus();
  await page.keyboard.press("Control+A");
  await page.keyboard.type("A person's corrected description.");
  check(/of 125 characters/.test(await page.locator("#queue li .hint").first().textContent()), "the 125-character guidance is shown");
  await page.keyboard.press("Enter");
  await page.locator("#review-status").filter({ hasText: `Saved ${queued[0].source}.` }).waitFor();
  // Focus moved to the next photo's text; Tab twice reaches its "Approve as is".
  const focused = await page.evaluate(() => document.activeElement.id);
  check(focused.startsWith("alt-"), `focus moves to the next photo (${focused})`);
  await page.keyboard.press("Tab");
  await page.keyboard.press("Tab");
  check((await page.evaluate(() => document.activeElement.textContent)) === "Approve as is", "Approve as is is two Tabs away");
  await page.keyboard.press("Enter");
  await page.locator("#review-status").filter({ hasText: `Approved ${queued[1].source}.` }).waitFor();
  check(await page.locator("#queue li").count() === queued.length - 2, "both left the queue");
  const stored = await (await page.request.get(`${base}/v1/images?needs_review=false&page_size=100`, withKey())).json();
  const corrected = stored.images.find((i) => i.source_name === queued[0].source);
  check(corrected.caption === "A person's corrected description." && corrected.caption_source === "human" && corrected.reviewed_by === "Ana",
    `the correction is stored (${JSON.stringify(corrected)})`);
  await finish(page, "review", { queued: queued.length });
}

async function meetingsPage(page) {
  await open(page, "/ui/meetings");
  await page.getByLabel("Choose a recording, or drop it in this box").setInputFiles(meetingWav);
  await page.getByLabel("Title (optional)").fill("Budget review");
  await page.getByLabel("Participants (optional)").fill("Laura, Kevin, Olivia");
  await page.getByRole("button", { name: "Summarize" }).focus();
  await page.keyboard.press("Enter");
  // Live: transcript segments appear before the summary does.
  await page.locator("#transcript li").first().waitFor({ timeout: 5 * MINUTE });
  const summaryPendingWhileTranscribing = await page.locator("#summary.pending").count();
  await page.locator("#progress-status").filter({ hasText: /^Done:/ }).waitFor({ timeout: 10 * MINUTE });
  const error = (await page.locator("#meeting-error").textContent()).trim();
  check(error === "", `no error (${error})`);
  const stages = await page.$$eval("#stages li", (lis) => lis.map((li) => li.textContent));
  const actions = await page.$$eval("#actions tbody tr", (rows) => rows.map((r) => [...r.cells].map((c) => {
    const field = c.querySelector("input, select");
    return field ? field.value : c.textContent.trim();
  })));
  const transcript = await page.$$eval("#transcript li", (lis) => lis.map((li) => li.textContent.trim()));
  console.log(`meeting: stages ${JSON.stringify(stages)}\n  actions ${JSON.stringify(actions)}\n  transcript ${transcript.length} segments`);
  check(summaryPendingWhileTranscribing === 1, "the summary was pending while the transcript streamed in");
  check(stages.length >= 3, `progress went through several stages (${stages})`);
  check(transcript.length >= 5, "a transcript");
  check(actions.length >= 1 && actions[0].length === 5, "an action-items table with rows");
  check(actions.some(([, owner]) => /Laura|Kevin|Olivia/.test(owner)), "an action item owned by someone the meeting named");
  const meetingUrl = page.url();
  check(/\?id=mtg-/.test(meetingUrl), `the page's address names the meeting (${meetingUrl})`);

  // A timestamp seeks the recording and marks its segment.
  const stamp = page.locator("#transcript li:nth-child(3) button.ts");
  const startMs = Number(await stamp.getAttribute("data-start-ms"));
  await stamp.click();
  const position = await page.evaluate(() => document.getElementById("player").currentTime);
  check(Math.abs(position * 1000 - startMs) < 250, `the player seeks to ${startMs} ms (at ${position} s)`);
  check(await page.locator("#transcript li:nth-child(3)").evaluate((li) => li.classList.contains("current")), "the segment is marked");

  // A question, answered with a citation.
  await page.getByLabel("Question").fill("Who will book the conference room?");
  await page.getByLabel("Question").press("Enter");
  await page.locator("#answer").filter({ hasText: "Answer:" }).waitFor({ timeout: 5 * MINUTE });
  const answer = (await page.locator("#answer").textContent()).trim();
  console.log(`ask: ${answer}`);
  check(/Kevin/.test(answer), "the answer names Kevin");
  check(await page.locator("#answer button.ts").count() >= 1, "the answer cites a time in the meeting");

  // Review from the keyboard: reassign the first action item to another participant,
  // reject the first decision, sign the notes off; the export says so.
  await page.getByLabel("Your name").fill("Ana");
  const owner = page.getByLabel("Owner of action 1");
  const before = await owner.inputValue();
  const other = ["Laura", "Kevin", "Olivia"].find((n) => n !== before);
  await owner.focus();
  await owner.selectOption(other);
  await page.getByRole("button", { name: "Save action 1", exact: true }).focus();
  await page.keyboard.press("Enter");
  await page.locator("#review-status").filter({ hasText: "Saved." }).waitFor();
  check(await page.getByLabel("Owner of action 1").inputValue() === other, "the new owner is shown");
  check(/edited by Ana/.test(await page.locator("#actions tbody tr").first().textContent()), "the row says who edited it");
  const rejected = await page.getByLabel("Decision 1", { exact: true }).inputValue();
  await page.getByRole("button", { name: "Reject decision 1", exact: true }).focus();
  await page.keyboard.press("Enter");
  await page.locator("#decisions li").first().filter({ hasText: "rejected by Ana" }).waitFor();
  await page.getByRole("button", { name: "Mark the notes reviewed" }).focus();
  await page.keyboard.press("Enter");
  await page.locator("#notes-state").filter({ hasText: "Notes reviewed by Ana." }).waitFor();
  const href = await page.locator("#export-md").getAttribute("href");
  const md = await (await page.request.get(`${base}${href}`, withKey())).text();
  console.log(`export:\n${md}`);
  check(md.includes(`**${other}**`), "the export has the new owner");
  check(!md.includes(rejected), "the export leaves the rejected decision out");
  check(md.includes("Notes reviewed by Ana"), "the export says who reviewed the notes");
  await finish(page, "meetings", { stages, action_items: actions, reassigned_to: other, rejected });

  // The meeting's address opens it again from the gateway's store.
  await page.goto(meetingUrl);
  await page.locator("#actions tbody tr").nth(actions.length - 1).waitFor();
  check(await page.locator("#transcript li").count() === transcript.length, "the reopened meeting has the whole transcript");

  // The stored meetings are listed; deleting one from the keyboard takes two presses (the
  // first only arms the button), after which the gateway no longer has it.
  const id = new URL(meetingUrl).searchParams.get("id");
  await page.locator(`#meeting-list li[data-meeting-id="${id}"]`, { hasText: "Budget review" }).waitFor();
  const stored = async () => (await page.request.get(`${base}/v1/meetings/${encodeURIComponent(id)}`, withKey())).status();
  await page.getByRole("button", { name: "Delete this meeting", exact: true }).focus();
  await page.keyboard.press("Enter");
  await page.locator("#delete-status").filter({ hasText: "Press the button again" }).waitFor();
  check(await stored() === 200, "one press deletes nothing");
  await page.keyboard.press("Enter");
  await page.locator("#list-status").filter({ hasText: "Deleted Budget review." }).waitFor();
  check(await page.locator("#meeting").isHidden(), "the deleted meeting is no longer shown");
  check(await stored() === 404, "the gateway no longer has the deleted meeting");
  check(await page.locator(`#meeting-list li[data-meeting-id="${id}"]`).count() === 0, "the deleted meeting left the list");
  check(await page.evaluate(() => document.activeElement.id) === "open-heading", "focus goes to the list");
  console.log(`meeting ${id} deleted from the page`);
}

const browser = await chromium.launch({
  executablePath: process.env.MMC_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"],
});
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, permissions: ["clipboard-read", "clipboard-write"] });
  // Generous: CI runs this beside other clusters on two cores.
  context.setDefaultTimeout(2 * MINUTE);
  if (apiKey) {
    // Keys on: the first API call is refused, the key form appears with the focus in it,
    // the key is typed and saved from the keyboard, and after a reload the page works.
    const page = await context.newPage();
    try {
      await open(page, "/ui/search");
      await page.locator("#api-key").waitFor({ state: "visible" });
      check(await page.evaluate(() => document.activeElement && document.activeElement.id) === "api-key", "the key form takes the focus");
      await page.keyboard.type(apiKey);
      await page.keyboard.press("Enter");
      check(await page.locator("#api-key-form").isHidden(), "the key form closes once saved");
      await page.reload();
      await page.locator("#search-status").filter({ hasText: "The index is empty" }).waitFor();
      check(await page.locator("#api-key-form").isHidden(), "no key form once the key is saved");
      console.log("key form: ok");
    } catch (e) {
      failed = true;
      console.error(`key form: FAILED: ${e.message}`);
    }
    await page.close();
    // Each page below is a new tab, where the user has entered the key already.
    await context.addInitScript((key) => sessionStorage.setItem("mmc-api-key", key), apiKey);
  }
  for (const [name, run] of [["search", searchPage], ["review", reviewPage], ["describe", describePage], ["meetings", meetingsPage]]) {
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push(`script error: ${e.message}`));
    page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
    try {
      await run(page);
      check(problems.length === 0, `the ${name} page ran cleanly: ${problems.join("; ")}`);
    } catch (e) {
      failed = true;
      console.error(`${name}: FAILED: ${e.message}${problems.length ? `\n  page problems: ${problems.join("; ")}` : ""}`);
      await page.screenshot({ path: join(artifacts, `${name}.failed.png`), fullPage: true }).catch(() => {});
    }
    await page.close();
  }
} finally {
  await browser.close();
}
writeFileSync(join(artifacts, "report.json"), JSON.stringify(report, null, 2));
console.log(failed ? "web UI checks FAILED" : `web UI checks passed; screenshots in ${artifacts}`);
process.exit(failed ? 1 : 0);
