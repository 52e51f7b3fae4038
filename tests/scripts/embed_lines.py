"""Embeds every line of a text file through a gateway's OpenAI-compatible /v1/embeddings
and writes the vectors, in order, as little-endian f32 (base64 from the API, so no float
is printed and re-parsed). Standard library only.

    python3 tests/scripts/embed_lines.py http://127.0.0.1:PORT TEXTS.txt OUT.f32
"""
import base64
import concurrent.futures
import json
import sys
import time
import urllib.request

BATCH = 64


def embed(url, batch):
    body = json.dumps({"input": batch, "encoding_format": "base64"}).encode()
    request = urllib.request.Request(url + "/v1/embeddings", data=body, headers={"content-type": "application/json"})
    response = json.load(urllib.request.urlopen(request, timeout=300))
    data = sorted(response["data"], key=lambda d: d["index"])
    assert len(data) == len(batch), f"{len(data)} embeddings for {len(batch)} lines"
    return b"".join(base64.b64decode(d["embedding"]) for d in data)


def main():
    url, texts, out = sys.argv[1], sys.argv[2], sys.argv[3]
    lines = open(texts, encoding="utf-8").read().splitlines()
    batches = [lines[i : i + BATCH] for i in range(0, len(lines), BATCH)]
    started = time.time()
    # A few requests in flight keep the embedding service's batcher full.
    with open(out, "wb") as f, concurrent.futures.ThreadPoolExecutor(4) as pool:
        for i, vectors in enumerate(pool.map(lambda b: embed(url, b), batches)):
            f.write(vectors)
            if i % 500 == 0:
                print(f"[embed] {i * BATCH} of {len(lines)} lines, {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    print(f"[embed] {len(lines)} lines in {time.time() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
