"""Word error rates for `tests/bench/speech_wer.sh`: renders the evaluation set and scores
transcripts of it, deterministically.

    speech_wer.py render WORK_DIR VOICES SPEED   writes WORK_DIR/set.json: [{file, set, reference}]
    speech_wer.py score WORK_DIR NAME...         prints WER per set for each WORK_DIR/NAME.json

The set: the five LibriVox clips of Debian's pocketsphinx-testdata (real read speech, with
their human transcripts) and every scripted meeting of tests/fixtures/meetings, each line
spoken by espeak-ng and followed by 0.6 s of silence (as `mmc eval meetings` renders them),
in each voice asked for. Scoring: lower case, punctuation dropped, hyphens as spaces, then
word-level edit distance over the reference's words, summed over the files of a set.
Number words ("twelve thousand") against digits ("12,000") count as errors for every
engine alike, so compare columns, not the absolute figures.
"""
import json, os, re, subprocess, sys, tomllib

LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox"
MEETINGS = os.path.join(os.path.dirname(__file__), "..", "fixtures", "meetings")


def words(text):
    text = text.lower().replace("-", " ")
    return re.sub(r"[^a-z0-9' ]+", " ", text).split()


def edits(ref, hyp):
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref):
        prev, row[0] = row[0], i + 1
        for j, h in enumerate(hyp):
            cur = row[j + 1]
            row[j + 1] = min(prev + (r != h), row[j] + 1, cur + 1)
            prev = cur
    return row[len(hyp)]


def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def render(work, voices, speed):
    items = []
    for line in open(os.path.join(LIBRIVOX, "transcription")):
        m = re.match(r"<s> (.*) </s> \((.*)\)", line.strip())
        if m:
            items.append({"file": os.path.join(LIBRIVOX, m.group(2) + ".wav"), "set": "LibriVox (5 clips)", "reference": m.group(1)})
    gap = os.path.join(work, "gap.wav")
    run("sox", "-n", "-r", "22050", "-c", "1", gap, "trim", "0", "0.6")
    for name in sorted(f for f in os.listdir(MEETINGS) if f.endswith(".toml")):
        meeting = tomllib.load(open(os.path.join(MEETINGS, name), "rb"))
        for voice in voices.split(","):
            parts = []
            for i, text in enumerate(meeting["lines"]):
                part = os.path.join(work, f"{name[:-5]}.{voice}.{i}.wav")
                run("espeak-ng", "-v", voice, "-s", str(speed), "-w", part, text)
                parts += [part, gap]
            out = os.path.join(work, f"{name[:-5]}.{voice}.wav")
            run("sox", *parts, out)
            for p in parts[::2]:
                os.remove(p)
            items.append({"file": out, "set": f"meetings, espeak-ng {voice} {speed} wpm", "reference": " ".join(meeting["lines"])})
    json.dump(items, open(os.path.join(work, "set.json"), "w"), indent=1)
    print(" ".join(i["file"] for i in items))


def score(work, names):
    items = json.load(open(os.path.join(work, "set.json")))
    results = {n: json.load(open(os.path.join(work, n + ".json"))) for n in names}
    sets = list(dict.fromkeys(i["set"] for i in items)) + ["all"]
    print("| set (words) | " + " | ".join(f"WER {n}" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for s in sets:
        chosen = [i for i in items if s == "all" or i["set"] == s]
        n_words = sum(len(words(i["reference"])) for i in chosen)
        cells = []
        for n in names:
            errors = sum(edits(words(i["reference"]), words(results[n]["texts"][i["file"]])) for i in chosen)
            cells.append(f"{100 * errors / n_words:.2f}%")
        print(f"| {s} ({n_words}) | " + " | ".join(cells) + " |")
    print("| time transcribing (s) | " + " | ".join(f"{results[n]['seconds']:.1f}" for n in names) + " |")


if __name__ == "__main__":
    if sys.argv[1] == "render":
        render(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        score(sys.argv[2], sys.argv[3:])
