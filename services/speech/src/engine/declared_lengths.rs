//! Lengths that an audio file's metadata declares, checked against the bytes that hold
//! them before symphonia reads the file.
//!
//! Why: symphonia 0.5 allocates a Vorbis comment (FLAC, Ogg Vorbis, Ogg Opus) or a FLAC
//! picture at its declared size before reading it, so a 100-byte upload can ask for 4 GB.
//! Found by the `audio_decode` fuzz target (fuzz/): on a machine without that much memory
//! and swap the allocation fails and the whole speech service aborts. Every such length
//! must fit in its metadata block (FLAC) or packet (Ogg); a file whose lengths do not is
//! refused as unreadable. Only the first [`WINDOW`] bytes are read, where metadata lives.

use std::{fs::File, io::Read, path::Path};

/// Bytes read from the start of a FLAC or Ogg file (a FLAC metadata block is at most
/// 16 MiB).
const WINDOW: u64 = 32 << 20;

/// How far symphonia's probe searches for a format marker: the first read, enough for
/// every other format, which is then not read further.
const PROBE_LIMIT: u64 = 1 << 20;

/// Checks the declared lengths of `path`'s metadata; the reason when one does not fit.
pub fn check(path: &Path) -> Result<(), String> {
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    (&mut file).take(PROBE_LIMIT).read_to_end(&mut head).map_err(|e| e.to_string())?;
    if container(&head).is_some() {
        file.take(WINDOW - head.len() as u64).read_to_end(&mut head).map_err(|e| e.to_string())?;
    }
    check_bytes(&head)
}

/// [`check`] on the first bytes of a file.
pub fn check_bytes(head: &[u8]) -> Result<(), String> {
    match container(head) {
        Some((at, Container::Flac)) => flac(&head[at + 4..]),
        Some((at, Container::Ogg)) => ogg(&head[at..]),
        None => Ok(()),
    }
}

enum Container {
    Flac,
    Ogg,
}

/// Second bytes of the MPEG audio and ADTS frame-sync markers symphonia's probe knows.
const MPEG_SYNC: [u8; 19] = [0xfe, 0xff, 0xf6, 0xf7, 0xe6, 0xe7, 0xfc, 0xfd, 0xf4, 0xf5, 0xe4, 0xe5, 0xfa, 0xfb, 0xf2, 0xf3, 0xe2, 0xe3, 0xf1];

/// Where symphonia's probe will find a FLAC or Ogg stream, if it will: as the probe does,
/// the first format marker from the start wins (junk before it is skipped), and ID3v2 tags
/// are read and passed over. Another format's marker first means neither is read.
fn container(head: &[u8]) -> Option<(usize, Container)> {
    let mut at = 0;
    while let Some(w) = head.get(at..at + 4) {
        if w == b"fLaC" {
            return Some((at, Container::Flac));
        }
        if w == b"OggS" {
            return Some((at, Container::Ogg));
        }
        if w.starts_with(b"ID3") {
            // A syncsafe size after the 10-byte header.
            let h = head.get(at..at + 10)?;
            let size = h[6..10].iter().fold(0usize, |n, b| (n << 7) | usize::from(b & 0x7f));
            at += 10 + size;
            continue;
        }
        if [b"RIFF", b"FORM", b"ftyp", b"\x1a\x45\xdf\xa3"].contains(&w.try_into().unwrap()) || (w[0] == 0xff && MPEG_SYNC.contains(&w[1])) {
            return None;
        }
        at += 1;
    }
    None
}

/// A little reader whose every length must fit in what is left.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u32(&mut self, little_endian: bool) -> Result<u32, String> {
        let Some((word, rest)) = self.0.split_first_chunk::<4>() else { return Err("ends inside a length".into()) };
        self.0 = rest;
        Ok(if little_endian { u32::from_le_bytes(*word) } else { u32::from_be_bytes(*word) })
    }

    /// Reads a length and skips that many bytes, which must be there.
    fn sized(&mut self, little_endian: bool, what: &str) -> Result<(), String> {
        let len = self.u32(little_endian)? as usize;
        if len > self.0.len() {
            return Err(format!("declares a {what} of {len} bytes where {} are left", self.0.len()));
        }
        self.0 = &self.0[len..];
        Ok(())
    }
}

/// A Vorbis comment structure: vendor string and comments, lengths little-endian.
fn comments(bytes: &[u8]) -> Result<(), String> {
    let mut f = Fields(bytes);
    f.sized(true, "vendor string")?;
    let count = f.u32(true)?;
    for _ in 0..count {
        f.sized(true, "comment")?;
    }
    Ok(())
}

/// A FLAC picture block: type, MIME type, description, four numbers, data (big-endian).
fn picture(bytes: &[u8]) -> Result<(), String> {
    let mut f = Fields(bytes);
    f.u32(false)?;
    f.sized(false, "MIME type")?;
    f.sized(false, "description")?;
    for _ in 0..4 {
        f.u32(false)?;
    }
    f.sized(false, "picture")
}

fn flac(mut rest: &[u8]) -> Result<(), String> {
    while let Some((header, after)) = rest.split_first_chunk::<4>() {
        let (last, kind) = (header[0] & 0x80 != 0, header[0] & 0x7f);
        let len = u32::from_be_bytes([0, header[1], header[2], header[3]]) as usize;
        // A block cut short by the end of the file: its lengths must fit in what is there.
        let block = &after[..len.min(after.len())];
        match kind {
            4 => comments(block).map_err(|e| format!("its FLAC comment block {e}"))?,
            6 => picture(block).map_err(|e| format!("its FLAC picture block {e}"))?,
            _ => {}
        }
        if last || len >= after.len() {
            break;
        }
        rest = &after[len..];
    }
    Ok(())
}

/// The first packets of an Ogg stream, reassembled from its pages; Vorbis and Opus comment
/// packets are checked.
fn ogg(bytes: &[u8]) -> Result<(), String> {
    let (mut pos, mut packet, mut packets) = (0, Vec::new(), 0);
    while packets < 3 && bytes.get(pos..pos + 4) == Some(b"OggS") {
        let Some(&segments) = bytes.get(pos + 26) else { break };
        let Some(table) = bytes.get(pos + 27..pos + 27 + segments as usize) else { break };
        let mut data = pos + 27 + segments as usize;
        for &len in table {
            let Some(chunk) = bytes.get(data..data + len as usize) else { return Ok(()) };
            packet.extend_from_slice(chunk);
            data += len as usize;
            if len < 255 {
                if let Some(body) = packet.strip_prefix(b"\x03vorbis").or_else(|| packet.strip_prefix(b"OpusTags")) {
                    comments(body).map_err(|e| format!("its Ogg comment packet {e}"))?;
                }
                packet.clear();
                packets += 1;
            }
        }
        pos = data;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FLAC file's start: STREAMINFO (34 zero bytes), then a comment block.
    fn flac_with_comment(comment: &[u8], declared: u32) -> Vec<u8> {
        let mut block = 7u32.to_le_bytes().to_vec();
        block.extend(b"libFLAC");
        block.extend(1u32.to_le_bytes());
        block.extend(declared.to_le_bytes());
        block.extend(comment);
        let mut file = b"fLaC".to_vec();
        file.extend([0x00, 0, 0, 34]);
        file.extend([0; 34]);
        file.extend([0x84, 0, 0, block.len() as u8]);
        file.extend(block);
        file
    }

    #[test]
    fn a_comment_that_fits_passes_and_one_that_claims_gigabytes_is_refused() {
        assert_eq!(check_bytes(&flac_with_comment(b"TITLE=x", 7)), Ok(()));
        let err = check_bytes(&flac_with_comment(b"TITLE=x", u32::MAX)).unwrap_err();
        assert!(err.contains("FLAC comment block declares a comment of 4294967295 bytes"), "{err}");
    }

    #[test]
    fn the_fuzzers_reproducer_is_refused() {
        // fuzz/artifacts/audio_decode/oom-496cfbd0...: a 4 GB comment in a 100-byte FLAC.
        let mut file = b"fLaC".to_vec();
        file.extend([0x00, 0, 0, 0x22]);
        file.extend([0x10, 0, 0x10, 0, 0, 0x07, 0xa9, 0, 0x07, 0xa9, 0x03, 0xe8, 0, 0xf0, 0, 0, 0x0c, 0x80]);
        file.extend([0x78, 0x2a, 0x79, 0xb7, 0x41, 0xa7, 0x39, 0xf4, 0xf9, 0xe8, 0x65, 0xba, 0x80, 0x8a, 0x9c, 0x28]);
        file.extend([0x84, 0, 0, 0x44, 0x20, 0, 0, 0]);
        file.extend(b"reference");
        file.extend([0xff; 40]);
        assert!(check_bytes(&file).is_err());
    }

    #[test]
    fn ogg_opus_tags_are_checked_across_pages() {
        let mut tags = b"OpusTags".to_vec();
        tags.extend(3u32.to_le_bytes());
        tags.extend(b"enc");
        tags.extend(1u32.to_le_bytes());
        tags.extend(u32::MAX.to_le_bytes());
        let page = |body: &[u8]| {
            let mut p = b"OggS".to_vec();
            p.extend([0; 22]);
            p.push(1);
            p.push(body.len() as u8);
            p.extend(body);
            p
        };
        let mut file = page(b"OpusHead0123456789");
        file.extend(page(&tags));
        assert!(check_bytes(&file).unwrap_err().contains("Ogg comment packet"));
        assert_eq!(check_bytes(b"RIFF....WAVE"), Ok(()));
    }

    #[test]
    fn the_stream_is_found_where_the_probe_finds_it() {
        // Junk before the marker is skipped by the probe: the check looks there too.
        let mut junk_first = b"xyz\x9f".to_vec();
        junk_first.extend(flac_with_comment(b"TITLE=x", u32::MAX));
        assert!(check_bytes(&junk_first).is_err());
        // Another format's marker first: that format is read, not the FLAC after it.
        let mut wav_first = b"RIFF".to_vec();
        wav_first.extend(flac_with_comment(b"TITLE=x", u32::MAX));
        assert_eq!(check_bytes(&wav_first), Ok(()));
    }
}
