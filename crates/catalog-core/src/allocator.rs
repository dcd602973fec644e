//! Handing freed memory back to the OS when the server goes quiet.
//!
//! mimalloc keeps memory freed by another thread on the owner's delayed-free list, and purges
//! empty pages only during later allocations on that thread. A worker that goes idle right
//! after a burst of frees (10k WebSocket subscribers leaving) would keep all of it resident:
//! the fan-out benchmark showed RSS unchanged 5 s after every subscriber had gone. So code that
//! has just freed a lot calls [`released`], and each runtime worker about to park (tokio's
//! `on_thread_park`, see `main.rs`) collects its heap once after that. The HTTP hot path never
//! calls [`released`], so a park there costs one atomic load.

use std::sync::atomic::{AtomicU64, Ordering};

static RELEASES: AtomicU64 = AtomicU64::new(0);

/// Something large was just freed (a WebSocket or SSE connection slot was given back, a
/// refresh replaced a snapshot).
pub fn released() {
    RELEASES.fetch_add(1, Ordering::Relaxed);
}

/// Collects this thread's heap now: for a blocking thread (which never parks through the
/// runtime's hook) that has just freed a large amount, e.g. the parser's events of a catalog.
pub fn collect_now() {
    #[cfg(not(feature = "system-alloc"))]
    // SAFETY: as in `on_park`.
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}

/// Called by each runtime worker before it parks.
pub fn on_park() {
    #[cfg(not(feature = "system-alloc"))]
    {
        use std::cell::Cell;
        thread_local!(static SEEN: Cell<u64> = const { Cell::new(0) });
        let now = RELEASES.load(Ordering::Relaxed);
        if SEEN.get() != now {
            SEEN.set(now);
            // SAFETY: `mi_collect` only frees memory the allocator owns and nothing references.
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
    }
}
