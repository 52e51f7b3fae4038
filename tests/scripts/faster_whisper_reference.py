"""Reference transcripts for the speech tests: faster-whisper (CTranslate2) on the ORIGINAL
bundled Whisper files (models/whisper-tiny.en-ct2, before our ggml conversion), greedy,
no cross-window conditioning, no VAD: the settings mmc-speech uses.

    python3 -m venv /tmp/fw && /tmp/fw/bin/pip install faster-whisper==1.2.1
    /tmp/fw/bin/python tests/scripts/faster_whisper_reference.py > tests/fixtures/whisper-tiny.en.faster_whisper.json

Audio: Debian's pocketsphinx-testdata (real recorded speech, LibriVox, public domain).
"""
import glob, json, os, sys, time

import faster_whisper

MODEL = os.environ.get("MMC_MODELS_DIR", "models") + "/whisper-tiny.en-ct2"
DATA = "/usr/share/pocketsphinx/test/data"
CLIPS = sorted(glob.glob(f"{DATA}/librivox/*.wav"))

model = faster_whisper.WhisperModel(MODEL, device="cpu", cpu_threads=2)
out = {"faster_whisper": faster_whisper.__version__, "model": "whisper-tiny.en-ct2", "clips": {}}
for path in CLIPS:
    t = time.time()
    segments, info = model.transcribe(path, beam_size=1, temperature=0.0, condition_on_previous_text=False,
                                      vad_filter=False, language="en")
    segments = list(segments)
    out["clips"][os.path.basename(path)] = {
        "text": " ".join(s.text.strip() for s in segments),
        "segments": [[round(s.start, 2), round(s.end, 2), s.text.strip()] for s in segments],
        "seconds": round(time.time() - t, 3),
    }
json.dump(out, sys.stdout, indent=1)
print()
