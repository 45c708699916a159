//! The allocator of a process that may serve models: glibc's malloc, until [`serve_with_mimalloc`]
//! switches the process's new allocations to mimalloc.
//!
//! `skiff` is one binary, and its two kinds of process want different allocators. The control
//! plane (`skiff up`) is judged by its memory: with mimalloc its idle RSS rose from 38 to 53 MiB
//! (target < 50) and from 77 to 102 MiB after the bench/apiserver load, as every one of its many
//! threads keeps pages of its own. A model server is judged by its requests per second: each
//! request makes a few dozen allocations, freed on other threads than the ones that made them,
//! where mimalloc gave 6–9 % more one-row requests per second on one CPU (docs/benchmarks.md,
//! "The allocator"). So the choice is made per process, once, when it knows what it is.
//!
//! Blocks are freed by the allocator that made them whatever the current choice:
//! `mi_is_in_heap_region` says which one owns a pointer. Until the switch nothing is mimalloc's,
//! and a process that never switches only pays one relaxed load per call.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

use libmimalloc_sys as mi;

/// Set once, never cleared. Relaxed is enough: a block reaches another thread only through
/// synchronisation, which also carries this store to that thread.
static MIMALLOC: AtomicBool = AtomicBool::new(false);

/// New allocations of this process come from mimalloc from now on; blocks glibc already handed
/// out stay glibc's and are freed there.
pub fn serve_with_mimalloc() {
    MIMALLOC.store(true, Ordering::Relaxed);
}

/// Whether new allocations come from mimalloc.
#[inline]
fn uses_mimalloc() -> bool {
    MIMALLOC.load(Ordering::Relaxed)
}

/// Alignments above this always go to glibc. mimalloc gives such blocks a mapping of their own,
/// and its two-level page map (x86-64) marks one 64 KiB slice past the end of that mapping as
/// its own, where glibc may later map memory: `mi_is_in_heap_region` would then claim glibc's
/// blocks. Nothing in skiff asks for such alignments; the rule keeps a dependency from doing so.
const MIMALLOC_MAX_ALIGN: usize = 64 << 10;

/// The `#[global_allocator]` of binaries that may serve models.
pub struct ServingAllocator;

impl ServingAllocator {
    /// Whether new blocks of `layout` come from mimalloc.
    #[inline]
    fn mimalloc_for(layout: Layout) -> bool {
        uses_mimalloc() && layout.align() <= MIMALLOC_MAX_ALIGN
    }

    /// Whether mimalloc made `ptr`, a block of `layout`.
    #[inline]
    fn owns(ptr: *mut u8, layout: Layout) -> bool {
        // SAFETY: a lookup in mimalloc's own page map; it reads `ptr` as an address only.
        Self::mimalloc_for(layout) && unsafe { mi::mi_is_in_heap_region(ptr as *const c_void) }
    }
}

// SAFETY: every block comes from `System` or from mimalloc and goes back to the one that made
// it (`owns`); both honour the size and alignment of the layout they are given.
unsafe impl GlobalAlloc for ServingAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::mimalloc_for(layout) {
            // SAFETY: as `GlobalAlloc::alloc`; mimalloc takes any size and power-of-two alignment.
            unsafe { mi::mi_malloc_aligned(layout.size(), layout.align()).cast() }
        } else {
            // SAFETY: the caller's layout, as given.
            unsafe { System.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::mimalloc_for(layout) {
            // SAFETY: as `alloc`.
            unsafe { mi::mi_zalloc_aligned(layout.size(), layout.align()).cast() }
        } else {
            // SAFETY: the caller's layout, as given.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::owns(ptr, layout) {
            // SAFETY: mimalloc made `ptr`, and the caller gives it up.
            unsafe { mi::mi_free(ptr.cast()) }
        } else {
            // SAFETY: `System` made `ptr` with `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::owns(ptr, layout) {
            // SAFETY: mimalloc made `ptr` with `layout.align()`; the block stays mimalloc's.
            unsafe { mi::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast() }
        } else {
            // SAFETY: `System` made `ptr` with `layout`; the block stays glibc's.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which allocator each block is routed to, before and after the switch, across threads and
    /// for an alignment mimalloc must not get; every block is then written, grown and freed.
    /// (The test binary's own global allocator is the default one; this drives the type.)
    #[test]
    fn blocks_go_back_to_the_allocator_that_made_them() {
        let a = ServingAllocator;
        let small = Layout::from_size_align(24, 8).unwrap();
        let aligned = Layout::from_size_align(3000, 64).unwrap();
        let page_aligned = Layout::from_size_align(4096, 128 << 10).unwrap();
        unsafe {
            let before = a.alloc(small);
            let before_big = a.alloc_zeroed(aligned);
            assert!(!ServingAllocator::owns(before, small));
            assert!(!ServingAllocator::owns(before_big, aligned));
            serve_with_mimalloc();
            // Still glibc's after the switch, and routed there.
            assert!(!ServingAllocator::owns(before, small));
            assert!(!mi::mi_is_in_heap_region(before as *const c_void));
            let after = a.alloc(small);
            let after_big = a.alloc_zeroed(aligned);
            assert!(ServingAllocator::owns(after, small));
            assert!(ServingAllocator::owns(after_big, aligned));
            assert_eq!(after_big as usize % 64, 0);
            assert!((0..3000).all(|i| *after_big.add(i) == 0));
            let huge_align = a.alloc(page_aligned);
            assert_eq!(huge_align as usize % (128 << 10), 0);
            assert!(!mi::mi_is_in_heap_region(huge_align as *const c_void));
            assert!(!ServingAllocator::owns(huge_align, page_aligned));
            before.write(7);
            after.write(9);
            let before = a.realloc(before, small, 4096);
            let after = a.realloc(after, small, 4096);
            assert_eq!((*before, *after), (7, 9));
            let grown = Layout::from_size_align(4096, 8).unwrap();
            assert!(!ServingAllocator::owns(before, grown));
            assert!(ServingAllocator::owns(after, grown));
            // Freed on another thread than the one that made it, as tensors are.
            let addr = after as usize;
            std::thread::spawn(move || ServingAllocator.dealloc(addr as *mut u8, grown))
                .join()
                .unwrap();
            a.dealloc(before, grown);
            a.dealloc(before_big, aligned);
            a.dealloc(after_big, aligned);
            a.dealloc(huge_align, page_aligned);
        }
    }
}
