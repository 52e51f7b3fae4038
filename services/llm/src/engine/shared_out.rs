//! An output buffer that the thread pool's work items fill at disjoint places: the one
//! way model code hands a `&mut` buffer to candle's pool (whose closures must be `Sync`)
//! without casting the pointer to an integer.

use std::marker::PhantomData;

/// `&mut [f32]` shared by threads that write disjoint elements.
pub(crate) struct SharedOut<'a> {
    ptr: *mut f32,
    len: usize,
    _buffer: PhantomData<&'a mut [f32]>,
}

// SAFETY: the buffer is borrowed mutably for `'a`, so nothing else touches it meanwhile;
// every user promises (by the `unsafe` methods' contracts) to write disjoint elements.
unsafe impl Sync for SharedOut<'_> {}
// SAFETY: as above.
unsafe impl Send for SharedOut<'_> {}

impl<'a> SharedOut<'a> {
    pub(crate) fn new(buffer: &'a mut [f32]) -> Self {
        SharedOut { ptr: buffer.as_mut_ptr(), len: buffer.len(), _buffer: PhantomData }
    }

    /// Writes element `i`.
    ///
    /// # Safety
    ///
    /// No other thread may access element `i` while this runs.
    pub(crate) unsafe fn write(&self, i: usize, v: f32) {
        assert!(i < self.len, "index {i} outside a buffer of {}", self.len);
        // SAFETY: in bounds (checked), and exclusive by the caller's contract.
        unsafe { *self.ptr.add(i) = v }
    }

    /// Elements `start..start + len`, to fill.
    ///
    /// # Safety
    ///
    /// No other thread may access those elements while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(start + len <= self.len, "{start}..{} outside a buffer of {}", start + len, self.len);
        // SAFETY: in bounds (checked), and exclusive by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}
