"""Drives the gateway's own REST routes and its OpenAPI document (requests, from
schemathesis' dependencies). Run by tests/e2e/http_api.rs against a real cluster.

Usage: python http_api_check.py BASE_URL PHOTOS_DIR AUDIO.wav

Every check raises on failure; the last line printed is a JSON report.
"""
import base64
import json
import os
import sys

import requests

base, photos, audio = sys.argv[1], sys.argv[2], sys.argv[3]
class Http:
    """requests with a base URL and a long timeout (model work on 2 cores)."""

    def __init__(self, base):
        self.base, self.s = base, requests.Session()

    def request(self, method, path, **kw):
        return self.s.request(method, self.base + path, timeout=600, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


http = Http(base)
report = {}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def ok(r):
    check(r.status_code == 200, f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:500]}")
    return r.json()


def error(r, status):
    check(r.status_code == status, f"{r.request.method} {r.request.url}: expected {status}, got {r.status_code} {r.text[:300]}")
    body = r.json()
    check(set(body["error"]) >= {"message", "type"}, f"error shape: {body}")
    return body["error"]


# The document lists every route, and every documented operation is routed.
doc = ok(http.get("/openapi.json"))
check(doc["openapi"].startswith("3."), "openapi version")
for path, ops in doc["paths"].items():
    for method in ops:
        url = path.replace("{image_id}", "img-none").replace("{meeting_id}", "mtg-none")
        r = http.request(method.upper(), url)
        check(r.status_code != 405 and "no such route" not in r.text, f"{method.upper()} {path} is documented but not routed: {r.status_code}")
check(error(http.get("/v1/not-a-route"), 404)["type"] == "not_found_error", "fallback")
report["operations"] = sum(len(v) for v in doc["paths"].values())

# Index two photos (multipart, with metadata); a corrupt one fails alone.
files = [("file", (n, open(os.path.join(photos, n), "rb").read())) for n in ("cat.png", "coffee.png")]
files.append(("file", ("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")))
indexed = ok(http.post("/v1/images", files=files, data={"metadata": json.dumps({"album": "rest"})}))["results"]
check([r.get("source_name") for r in indexed] == ["cat.png", "coffee.png", "broken.jpg"], f"index results: {indexed}")
check(all("image" in r for r in indexed[:2]) and "error" in indexed[2], f"index: {indexed}")
check(indexed[2]["error"]["type"] == "invalid_request_error", f"corrupt image error: {indexed[2]}")
cat_id = indexed[0]["image"]["image_id"]
# A thumbnail per indexed image: a JPEG of at most 384 pixels a side, cacheable for good.
thumb = http.get(indexed[0]["image"]["thumbnail_url"])
check(thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg", f"thumbnail: {thumb.status_code} {thumb.headers}")
check(thumb.content[:3] == b"\xff\xd8\xff" and 1000 < len(thumb.content) < 100_000, f"thumbnail: {len(thumb.content)} bytes")
check("immutable" in thumb.headers["cache-control"], f"thumbnail caching: {thumb.headers}")
error(http.get("/v1/images/img-nope/thumbnail"), 404)
again = ok(http.post("/v1/images", files=files[:1]))["results"]
check(again[0]["already_indexed"] is True, f"re-upload: {again}")

# Search by words, with a filter; by an image; list; describe.
hits = ok(http.post("/v1/images/search", json={"query": "a cat", "top_k": 2, "filter": {"album": "rest"}}))["hits"]
check(hits[0]["image"]["source_name"] == "cat.png", f"search: {hits}")
img = base64.b64encode(open(os.path.join(photos, "coffee.png"), "rb").read()).decode()
hits = ok(http.post("/v1/images/search", json={"image_base64": img, "top_k": 1}))["hits"]
check(hits[0]["image"]["source_name"] == "coffee.png", f"search by image: {hits}")
error(http.post("/v1/images/search", json={"query": "x", "image_base64": img}), 400)
error(http.post("/v1/images/search", json={"query": "x", "unknown": 1}), 400)
listed = ok(http.get("/v1/images", params={"page_size": 1}))
check(len(listed["images"]) == 1 and listed["next_page_token"], f"list page 1: {listed}")
described = ok(http.post("/v1/images/describe", files=[files[0]], data={"modes": "alt_text,detailed"}))
modes = [c["mode"] for c in described["captions"]]
check(modes == ["alt_text", "detailed"] and "cat" in described["captions"][0]["text"].lower(), f"describe: {described}")
check(len(described["captions"][0]["text"]) <= 125, "alt text length")

# A meeting: server-sent progress and transcript, then the summary; stored; asked.
events = []
with http.post("/v1/meetings", files=[("file", ("reading.wav", open(audio, "rb").read()))],
               data={"title": "Reading", "language": "en"}, stream=True) as r:
    check(r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), f"meeting: {r.status_code}")
    name = None
    for line in r.iter_lines(decode_unicode=True):
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            events.append((name, json.loads(line.split(":", 1)[1])))
kinds = [k for k, _ in events]
check("progress" in kinds and "segment" in kinds and kinds[-1] == "summary", f"meeting events: {kinds}")
meeting_id = events[-1][1]["meeting_id"]
meeting = ok(http.get(f"/v1/meetings/{meeting_id}"))
check(meeting["title"] == "Reading" and meeting["segments"] and "young man" in " ".join(s["text"] for s in meeting["segments"]).lower(), f"meeting: {meeting}")
answer = ok(http.post(f"/v1/meetings/{meeting_id}/ask", json={"question": "Who was not ill disposed?"}))
check(isinstance(answer["answer"], str) and answer["answer"], f"ask: {answer}")
error(http.get("/v1/meetings/mtg-none"), 404)
error(http.post(f"/v1/meetings/{meeting_id}/ask", json={"question": ""}), 400)
# A recording that is not audio: the stream ends with an error event, not a summary.
with http.post("/v1/meetings", files=[("file", ("noise.wav", b"RIFF....WAVEjunk" * 64))], stream=True) as r:
    last = [line for line in r.iter_lines(decode_unicode=True) if line.startswith("event:")][-1]
check(last == "event: error", f"bad recording: {last}")
report["meeting"] = {"events": len(events), "segments": len(meeting["segments"])}

# Delete; a second delete is 404.
check(ok(http.delete(f"/v1/images/{cat_id}"))["deleted"] is True, "delete")
error(http.delete(f"/v1/images/{cat_id}"), 404)
error(http.get(f"/v1/images/{cat_id}/thumbnail"), 404)
print(json.dumps(report))
