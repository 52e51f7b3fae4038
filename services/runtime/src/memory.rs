//! Heap tuning for model services.
//!
//! Model code allocates and frees megabyte-sized buffers (activations, logits, KV blocks)
//! on every request. glibc's malloc, by default, serves such blocks with fresh `mmap`s
//! (its threshold adapts between 128 KiB and 32 MiB) and hands memory freed at the top of
//! the heap back to the kernel above 128 KiB, so every layer of every request faults its
//! pages in again, zero-filled: 1.2 million page faults in one run of the embedding
//! benchmark, and about 15% of its CPU time (`perf stat`: 19.7–21.9 s of task clock,
//! 17.6–17.8 s tuned, with 45 thousand faults).
//!
//! [`retain_freed_memory`] fixes both thresholds, as servers that preallocate do in effect
//! (llama.cpp keeps its compute buffers; text-embeddings-inference swaps the allocator):
//! blocks up to 32 MiB come from the heap and freed memory stays there for the next
//! request. The cost: a process keeps its peak heap instead of shrinking after a burst.
//! Operators who want glibc's behaviour set `GLIBC_TUNABLES` with any `glibc.malloc.*`
//! entry, which this then leaves alone.

/// Largest block served from the heap rather than a private mapping (glibc's ceiling for
/// the adaptive threshold on 64-bit).
const MMAP_THRESHOLD_BYTES: i32 = 32 << 20;

/// Keeps freed memory in the process for reuse (see the module docs). Call once at start,
/// before threads allocate; services get it from [`crate::run`].
pub fn retain_freed_memory() {
    if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc.")) {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before other threads
    // exist (and glibc serialises it against allocations anyway).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Hands the heap's free pages back to the kernel (glibc's `malloc_trim`), in every arena.
///
/// The counterpart of [`retain_freed_memory`] for rare, outsized requests. Kept memory is
/// reused only by the arena (roughly: the thread) that freed it, so after a request that
/// needed hundreds of megabytes the next such one, landing on another thread, grows the
/// process by as much again: tokenizing a 1 MiB text of one-character tokens peaks at
/// ~540 MB and leaves ~390 MB free in its arena, and four such texts in turn grew the
/// embedding service's peak by 368 MB in one CI run instead of not at all. A service calls
/// this (off the async threads: it walks every arena) after such a request, before the
/// next one may start. Ordinary requests never need it. Returns whether anything was
/// released.
pub fn release_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free pages; glibc locks each arena while it walks it.
    return unsafe { libc::malloc_trim(0) } == 1;
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    /// Bytes glibc currently holds in private mappings (blocks above the mmap threshold).
    fn mapped_bytes() -> usize {
        // SAFETY: mallinfo2 only reads allocator statistics.
        unsafe { libc::mallinfo2() }.hblkhd
    }

    #[test]
    fn megabyte_buffers_come_from_the_reusable_heap() {
        // glibc's default serves a 24 MiB block with its own mapping (and unmaps it on
        // free), unless something in this process already freed a mapped block that large
        // (its adaptive threshold then rises to it; nothing here does).
        const SIZE: usize = 24 << 20;
        let before = mapped_bytes();
        let untuned = vec![1u8; SIZE];
        let mapped_untuned = mapped_bytes() - before;
        drop(untuned);
        super::retain_freed_memory();
        let before = mapped_bytes();
        let tuned = vec![1u8; SIZE];
        let mapped_tuned = mapped_bytes().saturating_sub(before);
        drop(tuned);
        assert!(mapped_untuned >= SIZE, "glibc's default should map a 24 MiB block ({mapped_untuned} bytes mapped)");
        assert_eq!(mapped_tuned, 0, "after tuning a 24 MiB block must come from the heap");
    }
}
