//! The process's allocator: mimalloc, asked for an alignment only when the type needs one.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every request to `mi_malloc_aligned`, with
//! the layout's alignment. In mimalloc 3 that call takes a slower path than `mi_malloc`
//! whenever the free block it finds first is not aligned to the request, and for blocks over
//! 1 KiB it over-allocates by the alignment, even an alignment of 1, and marks the page as
//! holding interior pointers, which makes each later `mi_free` on that page slower too.
//! In an SSO login, which allocates about 140 times, 6 % of the allocations took the slower
//! path and 4 % over-allocated.
//!
//! Every block `mi_malloc` returns is aligned to at least 8 bytes (its size classes are
//! multiples of the word, and a page's first block is aligned to 16), so a layout whose
//! alignment is 8 or less goes to the plain calls; larger alignments (tokio's cache-padded
//! queues, SIMD groups) keep the aligned ones. This is the rule Rust's own `System`
//! allocator follows with the C library's `malloc`, with mimalloc's guarantee of 8 in place
//! of glibc's 16.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The largest alignment every block of `mi_malloc` has.
const PLAIN_ALIGN: usize = 8;

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
            if layout.align() <= PLAIN_ALIGN {
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
            if layout.align() <= PLAIN_ALIGN {
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
            if layout.align() <= PLAIN_ALIGN {
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

    /// Every size class up to 64 KiB and a few beyond, at every alignment from 1 to 4 KiB:
    /// the block is aligned as asked, writable to its last byte, zeroed when asked, and keeps
    /// its contents through a `realloc` to a larger and then a smaller size.
    #[test]
    fn blocks_are_aligned_and_keep_their_contents() {
        let a = Allocator;
        let mut sizes: Vec<usize> = (1..=300).collect();
        sizes.extend((300..70_000).step_by(997));
        sizes.extend([1 << 20, (1 << 22) + 3]);
        for align in (0..=12).map(|s| 1usize << s) {
            for &size in &sizes {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is freed with the layout it has.
                unsafe {
                    let zeroed = a.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    assert_eq!(zeroed as usize % align, 0, "zeroed {size} aligned {align}");
                    assert!(
                        std::slice::from_raw_parts(zeroed, size)
                            .iter()
                            .all(|&b| b == 0)
                    );
                    a.dealloc(zeroed, layout);

                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} aligned {align}");
                    let fill = (size % 251) as u8;
                    std::ptr::write_bytes(p, fill, size);
                    let grown = a.realloc(p, layout, size * 2 + 17);
                    assert_eq!(grown as usize % align, 0, "grown {size} aligned {align}");
                    let larger = Layout::from_size_align(size * 2 + 17, align).unwrap();
                    let shrunk = a.realloc(grown, larger, size);
                    assert_eq!(shrunk as usize % align, 0, "shrunk {size} aligned {align}");
                    let kept = std::slice::from_raw_parts(shrunk, size);
                    assert!(kept.iter().all(|&b| b == fill), "contents of {size}");
                    a.dealloc(shrunk, layout);
                }
            }
        }
    }
}
