"""Drives the gateway's OpenAI-compatible HTTP API with the official `openai` client.

Usage: python openai_client_check.py BASE_URL AUDIO.wav "expected words"

Run by tests/e2e/openai_api.rs against a real gateway (and real embed, speech and
textgen services). Every check raises on failure; the last line printed is a JSON report.
"""
import json
import math
import sys

import openai

base_url, audio, expected = sys.argv[1], sys.argv[2], sys.argv[3].split()
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=300)
report = {}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# Models: one per loaded model of the embed, textgen and speech services.
models = client.models.list()
ids = [m.id for m in models.data]
check(len(ids) >= 3, f"models: {ids}")
report["models"] = ids

# Embeddings: the client asks for base64 by default and decodes it; float also works.
texts = ["a cat sleeping on a sofa", "a kitten napping on a couch", "the quarterly budget review"]
for fmt in ("base64", "float"):
    r = client.embeddings.create(model="text-embedding-3-small", input=texts, encoding_format=fmt) if fmt == "float" \
        else client.embeddings.create(model="text-embedding-3-small", input=texts)
    vecs = [d.embedding for d in r.data]
    check(len(vecs) == 3 and all(len(v) == len(vecs[0]) > 0 for v in vecs), f"embeddings ({fmt}) shapes")
    check([d.index for d in r.data] == [0, 1, 2], "embedding indexes")
    cos = lambda a, b: sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))
    check(cos(vecs[0], vecs[1]) > cos(vecs[0], vecs[2]) + 0.1, f"embeddings ({fmt}): related texts are not closer")
    check(r.usage.prompt_tokens > 0, "embedding usage")
    report[f"embeddings_{fmt}"] = {"dims": len(vecs[0]), "model": r.model, "cos_related": cos(vecs[0], vecs[1]), "cos_unrelated": cos(vecs[0], vecs[2])}

# Transcriptions in every response format.
def transcribe(**kw):
    with open(audio, "rb") as f:
        return client.audio.transcriptions.create(model="whisper-1", file=f, **kw)


def has_words(text):
    low = text.lower()
    return all(w in low for w in expected)


t = transcribe()
check(has_words(t.text), f"json: {t.text!r}")
report["transcription_json"] = t.text
t = transcribe(response_format="text")
check(isinstance(t, str) and has_words(t), f"text: {t!r}")
t = transcribe(response_format="srt")
check(isinstance(t, str) and t.lstrip().startswith("1\n") and " --> " in t and has_words(t), f"srt: {t!r}")
t = transcribe(response_format="vtt")
check(isinstance(t, str) and t.startswith("WEBVTT") and " --> " in t and has_words(t), f"vtt: {t!r}")
t = transcribe(response_format="verbose_json", timestamp_granularities=["word", "segment"])
check(t.language in ("en", "english") and t.duration > 1, f"verbose_json language/duration: {t.language} {t.duration}")
check(len(t.segments) >= 1 and has_words(t.text), f"verbose_json segments: {t.segments}")
check(t.words and all(w.end >= w.start for w in t.words), f"verbose_json words: {t.words}")
report["transcription_verbose"] = {"segments": len(t.segments), "words": len(t.words), "duration": t.duration}

# Chat, streamed token by token.
stream = client.chat.completions.create(
    model="mmc", stream=True, temperature=0, max_tokens=24, stream_options={"include_usage": True},
    messages=[{"role": "system", "content": "You are concise."}, {"role": "user", "content": "Name three colours."}],
)
deltas, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta.content:
            deltas.append(c.delta.content)
        if c.finish_reason:
            finish = c.finish_reason
text = "".join(deltas)
check(len(deltas) >= 3 and text.strip(), f"stream: {deltas}")
check(finish in ("stop", "length"), f"finish_reason {finish}")
check(usage and usage.completion_tokens >= len(deltas) - 1, f"usage {usage}")
report["chat_stream"] = {"chunks": len(deltas), "text": text, "finish": finish}

# Same request, not streamed, greedy: the same text.
r = client.chat.completions.create(
    model="mmc", temperature=0, max_tokens=24,
    messages=[{"role": "system", "content": "You are concise."}, {"role": "user", "content": "Name three colours."}],
)
check(r.choices[0].message.content == text, f"non-streamed greedy differs: {r.choices[0].message.content!r} vs {text!r}")

# Structured output: a JSON schema the answer must follow.
schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"],
    "additionalProperties": False,
}
r = client.chat.completions.create(
    model="mmc", temperature=0.7, seed=7, max_tokens=120,
    response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    messages=[{"role": "user", "content": "Describe a person called Ada who is 36 and likes chess."}],
)
doc = json.loads(r.choices[0].message.content)
check(set(doc) == {"name", "age", "hobbies"}, f"schema keys: {doc}")
check(isinstance(doc["name"], str) and isinstance(doc["age"], int) and 0 <= doc["age"] <= 150, f"schema types: {doc}")
check(isinstance(doc["hobbies"], list) and len(doc["hobbies"]) <= 3 and all(isinstance(h, str) for h in doc["hobbies"]), f"hobbies: {doc}")
report["json_schema"] = doc

# Errors come back in OpenAI's shape, as the client's usual exceptions.
try:
    client.chat.completions.create(model="mmc", messages=[{"role": "user", "content": "hi"}], n=2)
    raise AssertionError("n=2 accepted")
except openai.BadRequestError as e:
    check(e.code == "unsupported_parameter" and e.param == "n", f"n=2 error: {e.body}")
try:
    client.embeddings.create(model="x", input=[])
    raise AssertionError("empty input accepted")
except openai.BadRequestError as e:
    check(e.param == "input", f"empty input error: {e.body}")
try:
    client.chat.completions.create(model="mmc", messages=[{"role": "user", "content": "word " * 20000}])
    raise AssertionError("over-long prompt accepted")
except openai.BadRequestError as e:
    check(e.code == "context_length_exceeded", f"over-long prompt error: {e.body}")
try:
    client.chat.completions.create(model="mmc", messages=[{"role": "user", "content": "hi"}], max_tokens=1_000_000)
    raise AssertionError("max_tokens over the server's limit accepted")
except openai.BadRequestError as e:
    check(e.param == "max_tokens" and "limit" in e.message, f"max_tokens error: {e.body}")
try:
    client.embeddings.create(model="x", input=["word " * 5000])
    raise AssertionError("over-long embeddings input accepted")
except openai.BadRequestError as e:
    check(e.param == "input" and "characters" in e.message, f"long input error: {e.body}")
report["errors"] = "ok"

print(json.dumps(report))
