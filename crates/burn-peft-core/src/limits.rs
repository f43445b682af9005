//! Sizes checked before anything is allocated.
//!
//! A shape read from a file or a flag (`num_hidden_layers`, a LoRA rank, `--seq-len`) can be
//! absurd: a product that overflows, or a tensor of terabytes. Allocating it aborts the
//! process (or the kernel kills it) before any shape check runs. [`MemoryBudget`] adds up what
//! a step is about to allocate, with checked arithmetic, and refuses with
//! [`PeftError::TooLarge`] once the sum passes this machine's memory.

use crate::{PeftError, Result};

/// The environment variable that sets [`MemoryBudget::new`]'s limit in bytes, in place of the
/// machine's memory.
pub const MEMORY_LIMIT_VAR: &str = "BURN_PEFT_MEMORY_LIMIT";

static LIMIT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets the limit of every [`MemoryBudget::new`] in this process to `bytes` (`None`: this
/// machine's memory or `BURN_PEFT_MEMORY_LIMIT` again), e.g. to refuse early in a fuzzer.
pub fn set_memory_limit(bytes: Option<u64>) {
    LIMIT.store(bytes.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
}

/// The number of elements of a tensor of shape `dims`, `None` when the product overflows.
///
/// ```
/// use burn_peft_core::limits::elements;
/// assert_eq!(elements(&[2, 3, 4]), Some(24));
/// assert_eq!(elements(&[usize::MAX, 2]), None);
/// ```
pub fn elements(dims: &[usize]) -> Option<u64> {
    dims.iter()
        .try_fold(1u64, |n, &d| n.checked_mul(u64::try_from(d).ok()?))
}

/// The machine's physical memory in bytes (Linux and other Unix systems with `sysconf`), or
/// `None` where it cannot be read.
pub fn physical_memory() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: sysconf reads a value and has no preconditions.
        let (pages, size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if pages > 0 && size > 0 {
            return (pages as u64).checked_mul(size as u64);
        }
    }
    None
}

/// A running total of bytes about to be allocated, refused past a limit.
///
/// ```
/// use burn_peft_core::limits::MemoryBudget;
/// let mut budget = MemoryBudget::with_limit("LoRA adapter 'a'", 1 << 20);
/// budget.reserve("q_proj lora_A", &[8, 64], 4).unwrap();
/// let e = budget.reserve("q_proj lora_A", &[1_000_000_000, 64], 4).unwrap_err();
/// assert!(e.to_string().contains("q_proj lora_A [1000000000, 64]"));
/// ```
#[derive(Debug, Clone)]
pub struct MemoryBudget {
    what: String,
    used: u64,
    limit: u64,
}

impl MemoryBudget {
    /// A budget for `what` (named in the error) of this machine's physical memory (1 TiB where
    /// that cannot be read), or of `BURN_PEFT_MEMORY_LIMIT` bytes when that variable is set.
    /// [`set_memory_limit`] overrides both.
    pub fn new(what: impl Into<String>) -> Self {
        let set = LIMIT.load(std::sync::atomic::Ordering::Relaxed);
        let limit = (set > 0)
            .then_some(set)
            .or_else(|| std::env::var(MEMORY_LIMIT_VAR).ok()?.trim().parse().ok())
            .or_else(physical_memory)
            .unwrap_or(1 << 40);
        Self::with_limit(what, limit)
    }

    /// A budget of `limit` bytes.
    pub fn with_limit(what: impl Into<String>, limit: u64) -> Self {
        Self {
            what: what.into(),
            used: 0,
            limit,
        }
    }

    /// Bytes reserved so far.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Adds a tensor of shape `dims` with `bytes_per_element`-byte elements (`item` names it
    /// in the error); refused when the product overflows or the total passes the limit.
    pub fn reserve(&mut self, item: &str, dims: &[usize], bytes_per_element: u64) -> Result<()> {
        let too_large = |needed: String| PeftError::TooLarge {
            what: self.what.clone(),
            item: format!("{item} {dims:?}"),
            needed,
            limit: gib(self.limit),
        };
        let bytes = elements(dims)
            .and_then(|n| n.checked_mul(bytes_per_element))
            .ok_or_else(|| too_large("over 16 EiB (the size overflows)".into()))?;
        let total = self.used.saturating_add(bytes);
        if total > self.limit {
            return Err(too_large(gib(total)));
        }
        self.used = total;
        Ok(())
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Peak resident memory of this process since it started or since the last
/// [`reset_peak_rss`] (Linux `VmHWM`), in bytes; `None` where the system does not say.
///
/// ```
/// let peak = burn_peft_core::limits::peak_rss();
/// # #[cfg(target_os = "linux")]
/// assert!(peak.unwrap() > 0);
/// ```
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Starts [`peak_rss`] over from the memory in use now (Linux: `5` into
/// `/proc/self/clear_refs`), so that one phase of a process gets its own peak. Returns whether
/// the system allowed it.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_refuses_past_the_limit() {
        let mut budget = MemoryBudget::with_limit("model", 1000);
        budget.reserve("a", &[10, 10], 4).unwrap();
        budget.reserve("b", &[100], 4).unwrap();
        assert_eq!(budget.used(), 800);
        let e = budget.reserve("c", &[51], 4).unwrap_err().to_string();
        assert!(e.starts_with("model is too large"), "{e}");
        assert_eq!(budget.used(), 800, "a refused reservation takes nothing");
        let e = budget
            .reserve("d", &[usize::MAX, usize::MAX], 4)
            .unwrap_err();
        assert!(e.to_string().contains("overflows"), "{e}");
    }

    #[test]
    fn reads_this_machines_memory() {
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            let bytes = physical_memory().unwrap();
            assert!(bytes > 1 << 28, "{bytes}");
        }
    }
}
