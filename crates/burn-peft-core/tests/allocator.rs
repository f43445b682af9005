//! `allocator::tune_for_training` changes what glibc's `malloc` does, read back through
//! `mallinfo2`. One test in its own process: the settings are process-wide.
//! It assumes glibc's defaults at start-up: no malloc tunables or `MALLOC_*_` variables, no
//! preloaded allocator.
#![cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]

use burn_peft_core::allocator::{MallocTuning, tune_for_training};

const MIB: usize = 1 << 20;

/// Allocates and touches `bytes`, then returns glibc's counts while it is held: chunks from
/// `mmap` of their own, and bytes of heap the arenas hold.
fn counts_while_holding(bytes: usize) -> (usize, usize) {
    let buffer = std::hint::black_box(vec![1u8; bytes]);
    let info = unsafe { libc::mallinfo2() };
    assert_eq!(buffer[bytes - 1], 1);
    (info.hblks, info.arena)
}

#[test]
fn freed_buffers_stay_in_the_heap() {
    // SAFETY: the only test in this process, and nothing else runs yet.
    unsafe {
        std::env::remove_var("BURN_PEFT_MALLOC");
        std::env::remove_var("GLIBC_TUNABLES");
    }
    let idle = unsafe { libc::mallinfo2() }.hblks;
    // glibc's default: an 8 MiB buffer gets an mmap of its own.
    let (held, _) = counts_while_holding(8 * MIB);
    assert_eq!(
        held,
        idle + 1,
        "glibc's default did not mmap an 8 MiB buffer"
    );

    assert_eq!(tune_for_training(), MallocTuning::Applied);

    // Tuned: 24 MiB comes from the heap (the default would now mmap it: its threshold rose to
    // 8 MiB when the first buffer was freed) and stays there once freed.
    let idle = unsafe { libc::mallinfo2() }.hblks;
    let (held, heap_held) = counts_while_holding(24 * MIB);
    assert_eq!(held, idle, "a 24 MiB buffer was mmapped after tuning");
    assert!(heap_held >= 24 * MIB, "heap {heap_held} bytes");
    let heap_after = unsafe { libc::mallinfo2() }.arena;
    assert!(
        heap_after >= 24 * MIB,
        "the heap shrank to {heap_after} bytes once the buffer was freed"
    );
}
