//! Stop sequences over streamed text.
//!
//! Tokens do not line up with stop strings ("###" may arrive as "#" then "##"), so text that
//! could still become the start of a stop sequence is held back until it cannot; text after
//! a match is never released.

/// Tracks the generated text and how much of it may be released to the client.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    text: String,
    released: usize,
    stopped: bool,
}

/// What the newest text allows.
#[derive(Debug, PartialEq, Eq)]
pub enum StopCheck {
    /// Text that may be sent now (possibly empty).
    Release(String),
    /// A stop sequence matched: send this last piece (text before the match) and finish.
    Stopped(String),
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> StopMatcher {
        StopMatcher { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), ..Default::default() }
    }

    /// Appends newly generated text and says what may be sent.
    pub fn push(&mut self, new_text: &str) -> StopCheck {
        debug_assert!(!self.stopped);
        self.text.push_str(new_text);
        // A match can only start at or after the released boundary... or straddle it, when
        // held text was released earlier; search from the boundary minus the longest stop.
        let longest = self.stops.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut from = self.released.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let earliest = self.stops.iter().filter_map(|s| self.text[from..].find(s.as_str()).map(|i| i + from)).min();
        if let Some(at) = earliest {
            self.stopped = true;
            let piece = if at > self.released { self.text[self.released..at].to_string() } else { String::new() };
            self.released = self.released.max(at);
            return StopCheck::Stopped(piece);
        }
        // Hold back the longest suffix that is a proper prefix of some stop sequence.
        let mut hold = 0;
        for stop in &self.stops {
            for n in (1..stop.len()).rev() {
                if n <= self.text.len() && stop.is_char_boundary(n) && self.text.ends_with(&stop[..n]) {
                    hold = hold.max(n);
                    break;
                }
            }
        }
        let until = (self.text.len() - hold).max(self.released);
        let piece = self.text[self.released..until].to_string();
        self.released = until;
        StopCheck::Release(piece)
    }

    /// The text released so far (the final answer when generation ends).
    pub fn released_text(&self) -> &str {
        &self.text[..self.released]
    }

    /// Releases whatever was held back (generation ended without a match).
    pub fn flush(&mut self) -> String {
        let piece = self.text[self.released..].to_string();
        self.released = self.text.len();
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopCheck::Release(t) => out.push_str(&t),
                StopCheck::Stopped(t) => {
                    out.push_str(&t);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.flush());
        (out, false)
    }

    #[test]
    fn stop_split_across_tokens_is_caught_and_never_leaked() {
        assert_eq!(run(&["###"], &["Hello", " #", "#", "# more"]), ("Hello ".to_string(), true));
    }

    #[test]
    fn false_start_is_released_later() {
        assert_eq!(run(&["###"], &["a #", "# b"]), ("a ## b".to_string(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(run(&["END", "\n\n"], &["one\n\ntwo END"]), ("one".to_string(), true));
    }

    #[test]
    fn no_stops_releases_everything_at_once() {
        let mut m = StopMatcher::new(&[]);
        assert_eq!(m.push("abc"), StopCheck::Release("abc".into()));
    }
}
