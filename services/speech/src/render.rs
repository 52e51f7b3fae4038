//! Transcript documents rendered by the service: plain text, SubRip (SRT), WebVTT and a
//! verbose JSON shaped like OpenAI's `verbose_json` (so existing tools can read it).

use serde_json::json;

use crate::engine::whisper::Segment;

/// Plain text: one segment per line.
pub fn text(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        out.push_str(&s.text);
        out.push('\n');
    }
    out
}

/// SubRip: numbered cues from 1, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each.
pub fn srt(segments: &[Segment]) -> String {
    let mut out = String::new();
    for (i, s) in segments.iter().enumerate() {
        out.push_str(&format!("{}\n{} --> {}\n{}\n\n", i + 1, timestamp(s.start_ms, ','), timestamp(cue_end(s), ','), cue_text(&s.text)));
    }
    out
}

/// WebVTT: the `WEBVTT` header, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm`.
pub fn vtt(segments: &[Segment]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for s in segments {
        // "-->" must not appear in cue text; '&' and '<' must be escaped in WebVTT.
        let text = cue_text(&s.text).replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        out.push_str(&format!("{} --> {}\n{}\n\n", timestamp(s.start_ms, '.'), timestamp(cue_end(s), '.'), text));
    }
    out
}

/// OpenAI-style verbose JSON: task, language, duration (seconds), text, segments (with
/// seconds, log-probabilities, no-speech probabilities and words; with word timestamps
/// also a top-level `words` list, as OpenAI's has).
pub fn verbose_json(segments: &[Segment], language: &str, duration_ms: u64, task: &str) -> String {
    let secs = |ms: i64| ms as f64 / 1000.0;
    let segs: Vec<_> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "id": i,
                // Whisper's seek: the window start in 10 ms frames. Token ids are not kept.
                "seek": s.start_ms / 10,
                "tokens": [],
                "temperature": 0.0,
                "start": secs(s.start_ms),
                "end": secs(s.end_ms),
                "text": s.text,
                "avg_logprob": s.avg_logprob,
                "no_speech_prob": s.no_speech_prob,
                "compression_ratio": s.compression_ratio,
                "words": s.words.iter().map(|w| json!({
                    "word": w.text, "start": secs(w.start_ms), "end": secs(w.end_ms), "probability": w.probability,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let full: Vec<&str> = segments.iter().map(|s| s.text.as_str()).collect();
    let mut out = json!({
        "task": task,
        "language": language,
        "duration": duration_ms as f64 / 1000.0,
        "text": full.join(" "),
        "segments": segs,
    });
    // With word timestamps, OpenAI also lists every word at the top level.
    let words: Vec<_> =
        segments.iter().flat_map(|s| s.words.iter()).map(|w| json!({ "word": w.text, "start": secs(w.start_ms), "end": secs(w.end_ms) })).collect();
    if !words.is_empty() {
        out["words"] = json!(words);
    }
    out.to_string()
}

/// Players drop zero-length cues: give such a segment at least 10 ms.
fn cue_end(s: &Segment) -> i64 {
    s.end_ms.max(s.start_ms + 10)
}

/// Cue text on one line without the cue separator (blank lines would end the cue).
fn cue_text(text: &str) -> String {
    text.replace("-->", "->").lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

/// `HH:MM:SS<sep>mmm`.
fn timestamp(ms: i64, sep: char) -> String {
    let ms = ms.max(0);
    format!("{:02}:{:02}:{:02}{sep}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start_ms: i64, end_ms: i64, text: &str) -> Segment {
        Segment { start_ms, end_ms, text: text.into(), avg_logprob: -0.1, no_speech_prob: 0.0, compression_ratio: 1.0, words: vec![] }
    }

    #[test]
    fn srt_and_vtt_have_the_standard_shapes() {
        let s = vec![seg(0, 1500, "Hello there."), seg(3_723_004, 3_723_004, "A <b> & --> c")];
        assert_eq!(srt(&s), "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n2\n01:02:03,004 --> 01:02:03,014\nA <b> & -> c\n\n");
        assert_eq!(vtt(&s), "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n01:02:03.004 --> 01:02:03.014\nA &lt;b&gt; &amp; -&gt; c\n\n");
    }

    #[test]
    fn verbose_json_uses_seconds() {
        let v: serde_json::Value = serde_json::from_str(&verbose_json(&[seg(500, 2250, "Hi.")], "en", 3000, "transcribe")).unwrap();
        assert_eq!(v["duration"], 3.0);
        assert_eq!(v["segments"][0]["start"], 0.5);
        assert_eq!(v["segments"][0]["end"], 2.25);
        assert_eq!(v["text"], "Hi.");
    }
}
