//! The process's allocator: mimalloc, asked for an alignment only when the type needs one.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every request to `mi_malloc_aligned`, with
//! the layout's alignment. In mimalloc 3 that call costs about 55 instructions where
//! `mi_malloc` costs 38, and for blocks over 1 KiB, or when the size's free list is empty, it
//! first goes through a generic aligned path and an over-allocating fallback before it ends
//! in the same allocation. In an SSO login, which allocates about 140 times, 6 % of the
//! allocations took the generic path and 4 % the fallback.
//!
//! Every block of at least 8 bytes that `mi_malloc` returns is aligned to 8 (its size
//! classes are multiples of the word, and a page's first block is aligned to 16), so a
//! layout whose alignment is 8 or less, and no larger than its size, goes to the plain
//! calls; larger alignments (tokio's cache-padded queues, SIMD groups) keep the aligned
//! ones. This is the rule Rust's own `System` allocator follows with the C library's
//! `malloc`, with mimalloc's guarantee of 8 in place of glibc's 16. (Rust's types are never
//! smaller than their alignment, so in practice the size condition only matters on 32-bit
//! targets, where mimalloc's smallest blocks are 4 bytes.)

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The largest alignment every block of `mi_malloc` of at least this many bytes has.
const PLAIN_ALIGN: usize = 8;

/// Whether a block of `size` bytes aligned to `align` can come from the calls without an
/// alignment.
#[inline]
fn plain(size: usize, align: usize) -> bool {
    align <= PLAIN_ALIGN && align <= size
}

/// mimalloc as the global allocator (`#[global_allocator]` in `main.rs`).
pub struct Allocator;

// SAFETY: every method hands the layout's size (and, above `PLAIN_ALIGN`, its alignment) to
// mimalloc, whose blocks are at least that large and aligned as asked; `dealloc` and
// `realloc` get only pointers that this allocator returned, which `mi_free` and
// `mi_realloc` accept whichever call made them.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain FFI calls; mimalloc returns null when out of memory, as required.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.size(), layout.align()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the trait's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the trait's contract); the
        // new block keeps the alignment, and mimalloc copies the contents.
        unsafe {
            // The new block is the one that must be aligned: `plain` with the new size.
            if plain(new_size, layout.align()) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size up to 2 KiB, every multiple of 8 up to 12 KiB with its neighbours (which
    /// covers every mimalloc size class up to there and the 1 KiB edge of its small path), a
    /// step through to 70 KB, and 1 MiB and 4 MiB + 3, each at every alignment from 1 to
    /// 4 KiB: the block is aligned as asked, zeroed when asked, writable to its last byte, and
    /// keeps its contents through a `realloc` to a larger size, a smaller one, and one byte
    /// more (which mimalloc does in place when the block has room for it).
    #[test]
    fn blocks_are_aligned_and_keep_their_contents() {
        let a = Allocator;
        let mut sizes: Vec<usize> = (1..=2048).collect();
        sizes.extend((2048..=12_288).step_by(8).flat_map(|n| [n - 1, n, n + 1]));
        sizes.extend((12_289..70_000).step_by(997));
        sizes.extend([1 << 20, (1 << 22) + 3]);
        // Compared as slices (`memcmp`): byte by byte, the test would take long unoptimised.
        let zeros = vec![0u8; (1 << 22) + 3];
        for align in (0..=12).map(|s| 1usize << s) {
            for &size in &sizes {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is checked for null before it is used,
                // and freed with the layout it has.
                unsafe {
                    let zeroed = a.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size} aligned {align}");
                    assert!(std::slice::from_raw_parts(zeroed, size) == &zeros[..size]);
                    a.dealloc(zeroed, layout);

                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} aligned {align}");
                    // Never 0, so that contents lost to a zeroed block cannot pass.
                    let fill = (size % 255) as u8 + 1;
                    std::ptr::write_bytes(p, fill, size);
                    let larger = size * 2 + 17;
                    let grown = a.realloc(p, layout, larger);
                    assert!(!grown.is_null());
                    assert_eq!(grown as usize % align, 0, "grown {size} aligned {align}");
                    let larger = Layout::from_size_align(larger, align).unwrap();
                    let shrunk = a.realloc(grown, larger, size);
                    assert!(!shrunk.is_null());
                    assert_eq!(shrunk as usize % align, 0, "shrunk {size} aligned {align}");
                    let nudged = a.realloc(shrunk, layout, size + 1);
                    assert!(!nudged.is_null());
                    assert_eq!(nudged as usize % align, 0, "nudged {size} aligned {align}");
                    let kept = std::slice::from_raw_parts(nudged, size);
                    assert!(kept == vec![fill; size].as_slice(), "contents of {size}");
                    a.dealloc(nudged, Layout::from_size_align(size + 1, align).unwrap());
                }
            }
        }
    }
}
