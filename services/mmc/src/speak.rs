//! Speech synthesized with espeak-ng, for the demo meeting and the evaluation set: each
//! line spoken in its voice, the lines joined with a pause into one WAV recording.

use anyhow::bail;

/// `lines` ((espeak-ng voice, text)) spoken at `words_per_minute`, `gap_ms` of silence after
/// each, as one WAV file (espeak-ng's 22.05 kHz 16-bit mono; the headers of all but the
/// first line dropped). `None` when espeak-ng is not installed.
pub fn speak(lines: &[(&str, &str)], words_per_minute: u32, gap_ms: u32) -> anyhow::Result<Option<Vec<u8>>> {
    let mut pcm = Vec::new();
    let mut header = None;
    let speed = words_per_minute.to_string();
    for (voice, line) in lines {
        let out = match std::process::Command::new("espeak-ng").args(["-v", voice, "-s", &speed, "--stdout", line]).output() {
            Ok(out) if out.status.success() => out.stdout,
            Ok(out) => bail!("espeak-ng -v {voice} failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
            Err(_) => return Ok(None),
        };
        if out.len() < 44 {
            bail!("espeak-ng wrote no audio");
        }
        header.get_or_insert_with(|| out[..44].to_vec());
        pcm.extend_from_slice(&out[44..]);
        pcm.extend(std::iter::repeat_n(0u8, (22050 * 2 * gap_ms / 1000) as usize));
    }
    let mut wav = header.unwrap_or_default();
    if wav.len() < 44 {
        bail!("no lines to speak");
    }
    // RIFF and data chunk sizes for the joined audio.
    wav[4..8].copy_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    wav[40..44].copy_from_slice(&(pcm.len() as u32).to_le_bytes());
    wav.extend(pcm);
    Ok(Some(wav))
}
