//! glibc's `malloc` settings for a training process on the CPU.
//!
//! A training step on burn-flex allocates and frees buffers of a few MiB hundreds of times:
//! activations, their gradients, matrix-product outputs. With glibc's defaults, buffers above a
//! threshold (128 KiB at first, raised up to 32 MiB as such buffers are freed) get an `mmap` of
//! their own, and free memory at the top of a heap goes back to the kernel once it passes a
//! trim threshold (twice the mmap threshold). Either way the next step's buffers arrive as
//! fresh pages, and the kernel zeroes each one on its first touch: on a 2-core CPU a LoRA step
//! at the SmolLM2-135M shape spent much of its system time in those page faults.
//!
//! [`tune_for_training`] keeps freed memory in the process instead (64-bit Linux with glibc):
//!
//! | `mallopt` setting | value | effect |
//! | --- | --- | --- |
//! | `M_MMAP_THRESHOLD` | 32 MiB (the largest 64-bit glibc accepts) | buffers below 32 MiB come from the heap and are reused |
//! | `M_TRIM_THRESHOLD` | 2 GiB − 1 | free memory at the top of a heap is kept |
//! | `M_TOP_PAD` | 1 GiB | the main heap grows in large steps (address space under the kernel's default overcommit; pages count once touched) |
//!
//! The same step then faults about once per page of its peak memory, and runs faster for a
//! slightly higher peak RSS (measured in `docs/perf-log/2026-11-28-malloc.md`). The price: memory
//! freed by the process is not handed back to the kernel until it exits, and under strict
//! overcommit (`vm.overcommit_memory=2`) or an address-space limit the large top pad can make
//! an allocation fail. The `burn-peft` command-line tool calls it first thing in `main`; a
//! program of your own that trains on the CPU can do the same.
//!
//! `BURN_PEFT_MALLOC=off` (or `0`, `false`, `none`) leaves glibc's settings alone, and so does
//! any malloc setting of the user's own: a `glibc.malloc.*` tunable in `GLIBC_TUNABLES`, or one
//! of glibc's `MALLOC_TRIM_THRESHOLD_`, `MALLOC_TOP_PAD_`, `MALLOC_MMAP_THRESHOLD_` and
//! `MALLOC_MMAP_MAX_` variables. Elsewhere (32-bit, musl, macOS, Windows) the call does nothing.

/// What [`tune_for_training`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MallocTuning {
    /// glibc's `malloc` now keeps freed memory for reuse.
    Applied,
    /// `BURN_PEFT_MALLOC=off`, or the user set malloc up: left alone.
    LeftToUser,
    /// glibc refused a setting (the first refused, named by its `mallopt` parameter); the
    /// others may be applied.
    Refused(&'static str),
    /// Not 64-bit Linux with glibc: nothing to tune.
    Unsupported,
}

/// Makes glibc's `malloc` keep freed memory for the next training step instead of handing it
/// back to the kernel (see the [module documentation](self) for the settings and the
/// measurement). Call it at the start of `main`, before threads start allocating.
///
/// ```
/// use burn_peft_core::allocator::{MallocTuning, tune_for_training};
///
/// let tuning = tune_for_training();
/// if cfg!(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")) {
///     assert_ne!(tuning, MallocTuning::Unsupported);
/// }
/// ```
pub fn tune_for_training() -> MallocTuning {
    if !SUPPORTED {
        return MallocTuning::Unsupported;
    }
    let own = std::env::var("BURN_PEFT_MALLOC").ok();
    let glibc = std::env::var("GLIBC_TUNABLES").ok();
    let legacy = LEGACY_VARIABLES
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    if legacy || left_to_user(own.as_deref(), glibc.as_deref()) {
        return MallocTuning::LeftToUser;
    }
    apply()
}

/// Where the settings apply: 64-bit Linux with glibc (a 32-bit glibc caps the mmap threshold
/// at 512 KiB, and a 1 GiB pad would be a quarter of its address space).
const SUPPORTED: bool = cfg!(all(
    target_os = "linux",
    target_env = "gnu",
    target_pointer_width = "64"
));

/// glibc's own environment variables for the same settings.
const LEGACY_VARIABLES: [&str; 4] = [
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_MMAP_MAX_",
];

/// Whether `BURN_PEFT_MALLOC` and `GLIBC_TUNABLES`, as given, ask to leave `malloc` alone.
fn left_to_user(own: Option<&str>, glibc_tunables: Option<&str>) -> bool {
    let off = own.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "off" | "0" | "false" | "none"
        )
    });
    let user_tunables = glibc_tunables.is_some_and(|t| {
        t.split(':')
            .any(|setting| setting.trim_start().starts_with("glibc.malloc."))
    });
    off || user_tunables
}

#[cfg(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64"))]
fn apply() -> MallocTuning {
    const MIB: libc::c_int = 1 << 20;
    let settings = [
        ("M_MMAP_THRESHOLD", libc::M_MMAP_THRESHOLD, 32 * MIB),
        ("M_TRIM_THRESHOLD", libc::M_TRIM_THRESHOLD, libc::c_int::MAX),
        ("M_TOP_PAD", libc::M_TOP_PAD, 1024 * MIB),
    ];
    let mut result = MallocTuning::Applied;
    for (name, param, value) in settings {
        // SAFETY: mallopt takes the arena lock itself and only changes malloc's parameters;
        // it returns 0 when it refuses a value, and touches no memory of ours.
        if unsafe { libc::mallopt(param, value) } != 1 && result == MallocTuning::Applied {
            result = MallocTuning::Refused(name);
        }
    }
    result
}

#[cfg(not(all(target_os = "linux", target_env = "gnu", target_pointer_width = "64")))]
fn apply() -> MallocTuning {
    MallocTuning::Unsupported
}

#[cfg(test)]
mod tests {
    use super::left_to_user;

    #[test]
    fn the_users_settings_win() {
        assert!(!left_to_user(None, None));
        assert!(!left_to_user(Some(""), None));
        assert!(!left_to_user(Some("on"), Some("glibc.rtld.nns=4")));
        for off in ["off", "OFF", "0", "false", "none", " off "] {
            assert!(left_to_user(Some(off), None), "{off}");
        }
        assert!(left_to_user(None, Some("glibc.malloc.top_pad=0")));
        assert!(left_to_user(
            None,
            Some("glibc.rtld.nns=4:glibc.malloc.arena_max=2")
        ));
        assert!(!left_to_user(
            None,
            Some("glibc.pthread.mutex_spin_count=9")
        ));
    }
}
