//! The `heap-profile` feature: a global allocator that counts live heap bytes and, at their
//! peak, which buffer sizes made it up. `burn-peft` prints that table to stderr when it exits.
//!
//! Peak RSS (what `bench-step` reports) also holds memory that `malloc` keeps after a free;
//! this counts what the program holds. Every tensor buffer of burn-flex is one allocation, so a
//! size names a shape: at the SmolLM2-135M shape, 3,538,944 bytes is one `[576, 1536]` f32
//! weight, 589,824 one `[256, 576]` activation of a 256-row slice. Allocations below 64 KiB are
//! summed into one line. Each allocation takes a spin lock, so time steps without the feature.
//!
//! ```sh
//! cargo build --release -p burn-peft-cli --features heap-profile
//! target/release/burn-peft bench-step --shape smollm2-135m --method lora --batch-size 4 \
//!     --seq-len 128 --steps 2 --json
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// Allocations below this many bytes are counted together.
const SMALL: usize = 64 << 10;
/// Distinct sizes tracked; sizes beyond them are counted with the small ones.
const SLOTS: usize = 1 << 14;
/// The table is copied when the live bytes pass the last copy's by this much.
const STEP: usize = 1 << 20;

/// Live allocations by size, and the totals.
#[derive(Clone, Copy)]
struct Table {
    /// `(size, live count)`, open addressing; a size keeps its slot once taken.
    sizes: [(usize, isize); SLOTS],
    /// Bytes in allocations not in `sizes`.
    other: isize,
    live: usize,
    peak: usize,
}

impl Table {
    const EMPTY: Table = Table {
        sizes: [(0, 0); SLOTS],
        other: 0,
        live: 0,
        peak: 0,
    };

    fn record(&mut self, size: usize, count: isize) {
        if count > 0 {
            self.live += size;
            self.peak = self.peak.max(self.live);
        } else {
            self.live -= size;
        }
        if size >= SMALL {
            let start = size.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 50;
            for probe in 0..64 {
                let slot = &mut self.sizes[(start + probe) % SLOTS];
                if slot.0 == size || slot.0 == 0 {
                    *slot = (size, slot.1 + count);
                    return;
                }
            }
        }
        self.other += count * size as isize;
    }

    /// `(size, count)` with live buffers, largest total first, and the other bytes.
    fn largest(&self) -> (Vec<(usize, isize)>, isize) {
        let mut sizes: Vec<_> = self.sizes.iter().copied().filter(|e| e.1 > 0).collect();
        sizes.sort_by_key(|&(size, count)| std::cmp::Reverse(size as isize * count));
        (sizes, self.other)
    }
}

/// The live table and its copy at the peak, behind one spin lock (an allocator cannot take a
/// lock that allocates).
pub struct HeapProfile {
    lock: AtomicBool,
    now: UnsafeCell<Table>,
    at_peak: UnsafeCell<Table>,
}

// SAFETY: both tables are only touched with `lock` held.
unsafe impl Sync for HeapProfile {}

impl HeapProfile {
    pub const fn new() -> Self {
        HeapProfile {
            lock: AtomicBool::new(false),
            now: UnsafeCell::new(Table::EMPTY),
            at_peak: UnsafeCell::new(Table::EMPTY),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Table, &mut Table) -> R) -> R {
        while self
            .lock
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        // SAFETY: the lock is held, so no other reference to the tables exists.
        let result = unsafe { f(&mut *self.now.get(), &mut *self.at_peak.get()) };
        self.lock.store(false, Ordering::Release);
        result
    }

    fn record(&self, size: usize, count: isize) {
        self.with(|now, at_peak| {
            now.record(size, count);
            if now.live >= at_peak.live + STEP {
                at_peak.sizes = now.sizes;
                at_peak.other = now.other;
                at_peak.live = now.live;
            }
        });
    }

    /// The peak of live bytes and, as copied within 1 MiB of it, the table behind it.
    pub fn report(&self) -> String {
        // Copied out first: as the global allocator, this one would wait on its own lock if
        // it allocated while holding it.
        let mut copy = Box::new(Table::EMPTY);
        let peak = self.with(|now, at_peak| {
            *copy = *at_peak;
            now.peak
        });
        let ((sizes, other), copied) = (copy.largest(), copy.live);
        let gib = |bytes: f64| bytes / (1u64 << 30) as f64;
        let mib = |bytes: f64| bytes / (1u64 << 20) as f64;
        let mut out = format!(
            "heap profile: peak {:.3} GiB live (table taken at {:.3} GiB); below 64 KiB or \
             untracked sizes: {:.1} MiB\n",
            gib(peak as f64),
            gib(copied as f64),
            mib(other as f64)
        );
        for (size, count) in sizes.iter().take(24) {
            out += &format!(
                "{size:>12} B x {count:>5} = {:>8.1} MiB  ({} f32)\n",
                mib((*size as isize * count) as f64),
                size / 4
            );
        }
        out
    }
}

unsafe impl GlobalAlloc for HeapProfile {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            self.record(layout.size(), 1);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            self.record(layout.size(), 1);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        self.record(layout.size(), -1);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let moved = unsafe { System.realloc(ptr, layout, new_size) };
        if !moved.is_null() {
            self.record(layout.size(), -1);
            self.record(new_size, 1);
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_table_holds_the_buffers_live_at_the_peak() {
        let profile = HeapProfile::new();
        let mib = 1 << 20;
        profile.record(3 * mib, 1);
        profile.record(3 * mib, 1);
        profile.record(100, 1);
        profile.record(5 * mib, 1);
        // The peak (11 MiB + 100 B) has passed; freeing and smaller allocations after it do
        // not change the table.
        profile.record(5 * mib, -1);
        profile.record(2 * mib, 1);
        let report = profile.report();
        let lines: Vec<&str> = report.lines().collect();
        assert!(
            lines[0].starts_with("heap profile: peak 0.011 GiB"),
            "{report}"
        );
        assert!(lines[0].ends_with("0.0 MiB"), "{report}");
        assert!(lines[1].contains("3145728 B x     2"), "{report}");
        assert!(lines[2].contains("5242880 B x     1"), "{report}");
        assert_eq!(lines.len(), 3, "{report}");
    }
}
