//! The other approximate search (`--search-index scan`, both engines): a scan of compact
//! codes of every image, in three steps, instead of a walk of a graph.
//!
//! 1. **Bits.** Each image's fused vector ([`ImageVectors::fused`], as the graphs index) is kept
//!    as one sign bit per dimension (48 bytes for 384 dimensions). A search compares the
//!    query's bits with all of them (XOR and popcount: a million images are 48 MB, read in
//!    one pass on every core) and keeps the `shortlist` images that differ in fewest bits.
//! 2. **Bytes.** Those are scored from an 8-bit copy of each fused vector (one scale per
//!    image; 384 bytes) and the best `candidates` kept.
//! 3. The store scores those exactly from the f32 originals, as it does the graph's (the
//!    embedded store in memory, the PostgreSQL store in SQL by seq).
//!
//! Why a second method: an HNSW graph finds neighbours by walking from near to nearer, which
//! works when vectors cluster (real embeddings do) and fails when they do not. On random
//! 384-dimensional vectors, the benchmark's worst case, the graph found 0.71 of the true
//! top ten at a million images and the widest breadth (44 ms); this scan found 0.976 in
//! 4.7 ms (p50, two cores) at the default breadth. Its cost and recall hardly depend on how
//! the data is spread: the bit step keeps every true neighbour whose bits are not unluckily
//! far, and its shortlist is wide enough for that to be rare. It also needs no build (a
//! million images are coded in about 3 s at open, where the graph takes 26 minutes on two
//! cores) and no saved file, and holds about 480 bytes per image (codes, seq, slot map)
//! where the graph holds its f16 vectors and links. Its price is a full pass per query:
//! about 3x the graph's time on clustered data (figures in docs/gateway.md).

use std::collections::HashMap;

use super::{cores, ImageVectors};

/// The bit step's shortlist per candidate wanted: the default breadth (400) shortlists
/// 40 000 images. On random 384-dimensional vectors (fused pairs, as the benchmark makes)
/// that kept the true top ten 0.98 of the time at a million images (4% of them) and 0.99
/// at 100 000 (numpy simulation of these steps, 40 queries); narrower shortlists lose
/// recall fast (2% of a million: 0.95; 4% of 100 000: 0.93).
pub const SHORTLIST_PER_CANDIDATE: usize = 100;

/// Sign bits per code word.
const WORD_BITS: usize = 64;

/// From this many images on, a search is split over the machine's cores (below it a pass is
/// shorter than starting the threads).
const PARALLEL_FROM: usize = 100_000;

/// Codes of every image, in dense slots (a removed image's slot takes the last one's).
pub struct Scan {
    dimensions: usize,
    /// `u64` words of sign bits per image.
    words: usize,
    bits: Vec<u64>,
    bytes: Vec<i8>,
    /// Per image: the factor that turns its bytes back into (approximately) its vector.
    scales: Vec<f32>,
    seqs: Vec<u64>,
    slot_of: HashMap<u64, usize>,
    /// [`PARALLEL_FROM`] (a field so that tests can split small scans).
    parallel_from: usize,
}

impl Scan {
    /// An empty scan of vectors of `dimensions`.
    pub fn new(dimensions: usize) -> Self {
        Self {
            dimensions,
            words: dimensions.div_ceil(WORD_BITS),
            bits: Vec::new(),
            bytes: Vec::new(),
            scales: Vec::new(),
            seqs: Vec::new(),
            slot_of: HashMap::new(),
            parallel_from: PARALLEL_FROM,
        }
    }

    /// The codes of `entries` (seq, vectors; each seq once), made on every core: an open of
    /// a large store waits for them (a million images: about 3 s on one core).
    pub fn build(dimensions: usize, entries: &[(u64, &ImageVectors)]) -> Self {
        let mut scan = Self::new(dimensions);
        scan.extend_with(entries, |codes, (seq, vectors)| codes.add(*seq, vectors));
        scan
    }

    /// Adds the codes of `entries` (images this scan does not hold yet), each coded by `add`
    /// into a part per core, after its own and in the order of `entries`.
    pub fn extend_with<T: Sync>(&mut self, entries: &[T], add: impl Fn(&mut Self, &T) + Sync) {
        let per_thread = entries.len().div_ceil(cores()).max(1);
        let parts = on_each(entries.chunks(per_thread), |part| {
            let mut codes = Self::new(self.dimensions);
            for entry in part {
                add(&mut codes, entry);
            }
            codes
        });
        for part in parts {
            self.append(part);
        }
    }

    /// Adds the codes of `other` (images this scan does not hold yet) after its own.
    fn append(&mut self, other: Scan) {
        debug_assert_eq!(self.dimensions, other.dimensions);
        for (slot, seq) in other.seqs.iter().enumerate() {
            let earlier = self.slot_of.insert(*seq, self.seqs.len());
            debug_assert!(earlier.is_none(), "seq {seq} given twice (the store's seqs are unique)");
            self.seqs.push(*seq);
            self.scales.push(other.scales[slot]);
            self.bits.extend_from_slice(&other.bits[slot * self.words..(slot + 1) * self.words]);
            self.bytes.extend_from_slice(&other.bytes[slot * self.dimensions..(slot + 1) * self.dimensions]);
        }
    }

    /// Images held.
    pub fn len(&self) -> usize {
        self.seqs.len()
    }

    /// The seqs of the images held, in slot order.
    pub fn seqs(&self) -> &[u64] {
        &self.seqs
    }

    /// Whether no image is held.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Adds (or replaces) the image at `seq`.
    pub fn add(&mut self, seq: u64, vectors: &ImageVectors) {
        self.add_fused(seq, &vectors.fused());
    }

    /// Adds (or replaces) the image at `seq` by its fused vector ([`ImageVectors::fused`]).
    pub fn add_fused(&mut self, seq: u64, fused: &[f32]) {
        if fused.len() != self.dimensions {
            // The store checks dimensions before anything reaches here; a wrong length would
            // only misalign the slots.
            return;
        }
        let slot = match self.slot_of.get(&seq) {
            Some(&slot) => slot,
            None => {
                let slot = self.seqs.len();
                self.seqs.push(seq);
                self.bits.resize(self.bits.len() + self.words, 0);
                self.bytes.resize(self.bytes.len() + self.dimensions, 0);
                self.scales.push(0.0);
                self.slot_of.insert(seq, slot);
                slot
            }
        };
        sign_bits(fused, &mut self.bits[slot * self.words..(slot + 1) * self.words]);
        self.scales[slot] = quantize(fused, &mut self.bytes[slot * self.dimensions..(slot + 1) * self.dimensions]);
    }

    /// Removes the image at `seq`, if it is there.
    pub fn remove(&mut self, seq: u64) {
        let Some(slot) = self.slot_of.remove(&seq) else { return };
        let last = self.seqs.len() - 1;
        if slot != last {
            let moved = self.seqs[last];
            self.seqs[slot] = moved;
            self.scales[slot] = self.scales[last];
            self.bits.copy_within(last * self.words..(last + 1) * self.words, slot * self.words);
            self.bytes.copy_within(last * self.dimensions..(last + 1) * self.dimensions, slot * self.dimensions);
            self.slot_of.insert(moved, slot);
        }
        self.seqs.pop();
        self.scales.pop();
        self.bits.truncate(last * self.words);
        self.bytes.truncate(last * self.dimensions);
    }

    /// The seqs of about the `candidates` nearest `query` by the fused score: the
    /// `shortlist` nearest by bits, re-ranked by bytes (see the module docs). Ties at the
    /// shortlist's edge are broken by slot, so a search is deterministic for a given store.
    ///
    /// Past [`PARALLEL_FROM`] images the slots are split in one range per core, in two
    /// passes: bit distances and their histogram; then, once the histograms say where the
    /// shortlist's edge is, each range scores its own shortlisted codes.
    pub fn search(&self, query: &[f32], candidates: usize, shortlist: usize) -> Vec<u64> {
        let n = self.len();
        if query.len() != self.dimensions || n == 0 || candidates == 0 {
            return Vec::new();
        }
        let mut query_bits = vec![0u64; self.words];
        sign_bits(query, &mut query_bits);
        let mut query_bytes = vec![0i8; self.dimensions];
        quantize(query, &mut query_bytes);

        let per_range = n.div_ceil(if n >= self.parallel_from { cores() } else { 1 });
        let ranges: Vec<std::ops::Range<usize>> = (0..n).step_by(per_range).map(|from| from..n.min(from + per_range)).collect();
        let mut distances = vec![0u16; n];
        let histograms: Vec<Vec<usize>> =
            on_each(distances.chunks_mut(per_range).zip(&ranges), |(out, range)| self.bit_distances(range.clone(), &query_bits, out));

        let (cut, mut ties) = shortlist_edge(&histograms, shortlist.max(candidates).min(n));
        // Ties at the edge go to the first ranges (lowest slots) first.
        let quotas: Vec<usize> = histograms
            .iter()
            .map(|h| {
                let quota = h.get(cut).copied().unwrap_or(0).min(ties);
                ties -= quota;
                quota
            })
            .collect();
        let scored: Vec<Vec<(f32, usize)>> = on_each(ranges.into_iter().zip(quotas), |(range, quota)| {
            let shortlisted = below_edge(&distances[range.clone()], range.start, cut, quota);
            self.best_by_bytes(&shortlisted, &query_bytes, candidates)
        });
        let mut best: Vec<(f32, usize)> = scored.into_iter().flatten().collect();
        keep_best(&mut best, candidates);
        best.into_iter().map(|(_, slot)| self.seqs[slot]).collect()
    }

    /// Bit distances of the codes of `slots` to `query_bits` into `out`, and their
    /// histogram (count per distance).
    fn bit_distances(&self, slots: std::ops::Range<usize>, query_bits: &[u64], out: &mut [u16]) -> Vec<usize> {
        let codes = &self.bits[slots.start * self.words..slots.end * self.words];
        // Codes of a size known when compiling unroll into plain XOR and POPCNT; the sizes of
        // the common embedding widths (384, 512, 768, 1 024 dimensions) are spelled out.
        match self.words {
            6 => hamming::<6>(out, codes, query_bits),
            8 => hamming::<8>(out, codes, query_bits),
            12 => hamming::<12>(out, codes, query_bits),
            16 => hamming::<16>(out, codes, query_bits),
            words => {
                for (d, code) in out.iter_mut().zip(codes.chunks_exact(words)) {
                    *d = code.iter().zip(query_bits).map(|(a, b)| (a ^ b).count_ones()).sum::<u32>() as u16;
                }
            }
        }
        let mut histogram = vec![0usize; self.dimensions + 1];
        for &d in out.iter() {
            histogram[usize::from(d)] += 1;
        }
        histogram
    }

    /// The best `keep` of `slots` by their byte codes.
    fn best_by_bytes(&self, slots: &[usize], query_bytes: &[i8], keep: usize) -> Vec<(f32, usize)> {
        // The shortlist is scattered over the codes: each is a miss in every cache, so the
        // codes a few places ahead are asked for while this one is scored.
        let code = |slot: usize| &self.bytes[slot * self.dimensions..(slot + 1) * self.dimensions];
        let mut scored: Vec<(f32, usize)> = Vec::with_capacity(slots.len());
        for (i, &slot) in slots.iter().enumerate() {
            if let Some(&ahead) = slots.get(i + PREFETCH_AHEAD) {
                prefetch(code(ahead));
            }
            scored.push((byte_dot(query_bytes, code(slot)) as f32 * self.scales[slot], slot));
        }
        keep_best(&mut scored, keep);
        scored
    }
}

/// Runs `work` on each item, one thread per item when there are several.
fn on_each<I: Send, T: Send>(items: impl IntoIterator<Item = I>, work: impl Fn(I) -> T + Sync) -> Vec<T> {
    let items: Vec<I> = items.into_iter().collect();
    if items.len() <= 1 {
        return items.into_iter().map(work).collect();
    }
    let work = &work;
    std::thread::scope(|scope| {
        let running: Vec<_> = items.into_iter().map(|item| scope.spawn(move || work(item))).collect();
        running.into_iter().map(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// Where the `keep` smallest distances end, from the ranges' histograms: every distance
/// below the returned cut-off is kept, and the returned number of those at it.
fn shortlist_edge(histograms: &[Vec<usize>], keep: usize) -> (usize, usize) {
    let max = histograms.iter().map(Vec::len).max().unwrap_or(1) - 1;
    let count = |d: usize| histograms.iter().map(|h| h.get(d).copied().unwrap_or(0)).sum::<usize>();
    let (mut cut, mut below) = (0, 0);
    while cut < max && below + count(cut) < keep {
        below += count(cut);
        cut += 1;
    }
    (cut, keep - below.min(keep))
}

/// The slots (numbered from `first`) whose distance is below `cut`, and the first `ties`
/// of those at it.
fn below_edge(distances: &[u16], first: usize, cut: usize, mut ties: usize) -> Vec<usize> {
    let mut slots = Vec::new();
    for (i, &d) in distances.iter().enumerate() {
        let d = usize::from(d);
        if d < cut || (d == cut && ties > 0) {
            ties -= usize::from(d == cut);
            slots.push(first + i);
        }
    }
    slots
}

/// Keeps the best `keep` of `scored` (highest score, then lowest slot), unordered.
fn keep_best(scored: &mut Vec<(f32, usize)>, keep: usize) {
    if scored.len() > keep && keep > 0 {
        scored.select_nth_unstable_by(keep - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored.truncate(keep);
    }
}

/// Bits that differ between `query` and each `W`-word code of `codes`, into `out`.
fn hamming<const W: usize>(out: &mut [u16], codes: &[u64], query: &[u64]) {
    let query: &[u64; W] = query.try_into().expect("query code of W words");
    for (d, code) in out.iter_mut().zip(codes.chunks_exact(W)) {
        let code: &[u64; W] = code.try_into().expect("chunks of W words");
        let mut differ = 0;
        for i in 0..W {
            differ += (code[i] ^ query[i]).count_ones();
        }
        *d = differ as u16;
    }
}

/// One bit per dimension, set where the component is positive.
fn sign_bits(v: &[f32], out: &mut [u64]) {
    out.fill(0);
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            out[i / WORD_BITS] |= 1 << (i % WORD_BITS);
        }
    }
}

/// `v` in 8 bits, scaled so its largest component is ±127; returns the scale back.
fn quantize(v: &[f32], out: &mut [i8]) -> f32 {
    let largest = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    if largest == 0.0 || !largest.is_finite() {
        out.fill(0);
        return 0.0;
    }
    let scale = largest / 127.0;
    for (o, x) in out.iter_mut().zip(v) {
        *o = (x / scale).round().clamp(-127.0, 127.0) as i8;
    }
    scale
}

/// How many shortlisted codes ahead [`Scan::search`] prefetches.
const PREFETCH_AHEAD: usize = 8;

/// Asks the CPU to bring `bytes` into its caches (a hint; nothing on other targets).
fn prefetch(bytes: &[i8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch never faults, and the pointer is in bounds anyway.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Integer dot product of two byte codes (the compiler vectorises this loop).
fn byte_dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(x, y)| i32::from(*x) * i32::from(*y)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors(image: Vec<f32>, caption: Vec<f32>) -> ImageVectors {
        ImageVectors { image, caption }
    }

    fn random_unit(dims: usize, state: &mut u64) -> Vec<f32> {
        let v: Vec<f32> = (0..dims)
            .map(|_| {
                // xorshift: deterministic, no dependency.
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                (*state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    #[test]
    fn codes_follow_adds_replacements_and_removals() {
        let mut scan = Scan::new(2);
        scan.add(1, &vectors(vec![1.0, 0.0], vec![1.0, 0.0]));
        scan.add(2, &vectors(vec![0.0, 1.0], vec![0.0, 1.0]));
        scan.add(3, &vectors(vec![-1.0, 0.0], vec![-1.0, 0.0]));
        assert_eq!(scan.search(&[1.0, 0.0], 1, 3), vec![1]);
        // Replaced: seq 1 now points the other way.
        scan.add(1, &vectors(vec![-1.0, 0.0], vec![-1.0, 0.0]));
        assert_eq!(scan.len(), 3);
        assert_eq!(scan.search(&[0.0, 1.0], 1, 3), vec![2]);
        // Removing a middle slot moves the last into it; both stay findable.
        scan.remove(2);
        scan.remove(2);
        assert_eq!(scan.len(), 2);
        let mut all = scan.search(&[-1.0, 0.0], 2, 2);
        all.sort();
        assert_eq!(all, vec![1, 3]);
        // More candidates than images: all of them.
        assert_eq!(scan.search(&[-1.0, 0.0], 10, 5).len(), 2);
        scan.remove(1);
        scan.remove(3);
        assert!(scan.search(&[1.0, 0.0], 1, 1).is_empty());
    }

    #[test]
    fn codes_built_on_every_core_equal_codes_added_one_by_one() {
        let mut state = 7u64;
        let images: Vec<(u64, ImageVectors)> =
            (0..1_001).map(|seq| (seq * 3, vectors(random_unit(96, &mut state), random_unit(96, &mut state)))).collect();
        let entries: Vec<(u64, &ImageVectors)> = images.iter().map(|(seq, v)| (*seq, v)).collect();
        let built = Scan::build(96, &entries);
        let mut added = Scan::new(96);
        for (seq, v) in &images {
            added.add(*seq, v);
        }
        assert_eq!((built.seqs.clone(), built.bits.clone(), built.bytes.clone()), (added.seqs.clone(), added.bits.clone(), added.bytes.clone()));
        assert_eq!(built.scales, added.scales);
        assert_eq!(built.slot_of, added.slot_of);
    }

    #[test]
    fn the_shortlist_takes_the_nearest_codes_and_breaks_ties_by_slot() {
        let histogram = |ds: &[u16]| (0..=8).map(|d| ds.iter().filter(|x| usize::from(**x) == d).count()).collect::<Vec<_>>();
        let shortlist = |ds: &[u16], keep| {
            let (cut, ties) = shortlist_edge(&[histogram(ds)], keep);
            below_edge(ds, 0, cut, ties)
        };
        assert_eq!(shortlist(&[5, 1, 3, 1, 0, 3], 3), vec![1, 3, 4]);
        assert_eq!(shortlist(&[5, 1, 3, 1, 0, 3], 4), vec![1, 2, 3, 4]);
        assert_eq!(shortlist(&[2, 2, 2], 5), vec![0, 1, 2]);
        // Split in two ranges: the ties at the edge go to the first range first.
        let (a, b): (&[u16], &[u16]) = (&[3, 1, 3], &[3, 0, 3]);
        let (cut, ties) = shortlist_edge(&[histogram(a), histogram(b)], 4);
        assert_eq!((cut, ties), (3, 2));
        assert_eq!(below_edge(a, 0, cut, 2), vec![0, 1, 2]);
        assert_eq!(below_edge(b, 3, cut, 0), vec![4]);
    }

    /// On random vectors (no structure to exploit) the three steps keep nearly all of the
    /// true top ten when the shortlist is a fair share of the images, and lose many when it
    /// is narrow: the shortlist is what buys recall.
    #[test]
    fn a_wide_shortlist_keeps_the_true_nearest_of_random_vectors() {
        const DIMS: usize = 384;
        const IMAGES: usize = 20_000;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut scan = Scan::new(DIMS);
        let mut fused = Vec::new();
        for seq in 0..IMAGES as u64 {
            let v = vectors(random_unit(DIMS, &mut state), random_unit(DIMS, &mut state));
            fused.push(v.fused());
            scan.add(seq, &v);
        }
        let recall = |scan: &Scan, shortlist: usize, state: &mut u64| {
            let mut found = 0;
            for _ in 0..20 {
                let q = random_unit(DIMS, state);
                let mut exact: Vec<(f32, u64)> = fused.iter().enumerate().map(|(i, f)| (crate::store::dot(&q, f), i as u64)).collect();
                exact.sort_by(|a, b| b.0.total_cmp(&a.0));
                let got = scan.search(&q, 40, shortlist);
                found += exact[..10].iter().filter(|(_, seq)| got.contains(seq)).count();
            }
            found as f64 / 200.0
        };
        let wide = recall(&scan, IMAGES / 5, &mut state.clone());
        // Split over threads (as past PARALLEL_FROM images): the same shortlist (all of it
        // is asked for, so its edge's ties count), whatever the ranges.
        let q = random_unit(DIMS, &mut state.clone());
        let one_range = scan.search(&q, 777, 777);
        scan.parallel_from = 1_000;
        let split = scan.search(&q, 777, 777);
        let (mut a, mut b) = (one_range, split);
        a.sort();
        b.sort();
        assert!(a == b, "split over ranges, the shortlist differs");
        let narrow = recall(&scan, 200, &mut state);
        assert!(wide >= 0.95, "recall@10 with a fifth of the images shortlisted: {wide}");
        assert!(narrow < wide - 0.2, "a 200-image shortlist should lose many: {narrow} against {wide}");
    }
}
