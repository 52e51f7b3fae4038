"""faster-whisper's speed on one recording: real-time factor with one stream (all threads),
and its throughput when requests are run one at a time (= 1 / RTF). Same settings as
mmc-speech: greedy, English, no cross-window conditioning, no VAD.

    faster_whisper_bench.py MODEL_DIR AUDIO.wav --threads N --runs R [--compute-type int8|default]   -> JSON on stdout
"""
import argparse, json, time

import faster_whisper

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("audio")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--runs", type=int, default=2)
# "default" keeps the model's type where the CPU computes it (f16 files run in f32 on CPU);
# "int8" is what faster-whisper recommends on CPU.
ap.add_argument("--compute-type", default="int8")
a = ap.parse_args()

model = faster_whisper.WhisperModel(a.model, device="cpu", cpu_threads=a.threads, compute_type=a.compute_type)

def once():
    t = time.time()
    segments, info = model.transcribe(a.audio, beam_size=1, temperature=0.0, language="en",
                                      condition_on_previous_text=False, vad_filter=False)
    text = " ".join(s.text.strip() for s in segments)
    return time.time() - t, info.duration, text

once()  # warm-up
best = min((once() for _ in range(a.runs)), key=lambda r: r[0])
print(json.dumps({"audio_s": best[1], "rtf": best[0] / best[1], "seconds": best[0], "text": best[2],
                  "faster_whisper": faster_whisper.__version__, "compute_type": a.compute_type}))
