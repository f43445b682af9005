//! One `--device` syntax for every binary and example.
//!
//! | spelling | backend | cargo feature |
//! | --- | --- | --- |
//! | `flex`, `cpu` | burn's portable CPU backend | `flex` (default) |
//! | `wgpu` | WGPU, auto-selected graphics API | `wgpu` |
//! | `vulkan` | WGPU on Vulkan (SPIR-V kernels) | `vulkan` |
//! | `cuda`, `cuda:N` | CUDA device N (default 0) | `cuda` |
//! | `tch`, `tch:cuda:N` | LibTorch on CPU or CUDA device N | `tch` |

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::error::{PeftError, Result};

/// A parsed `--device` value.
///
/// ```
/// use burn_peft_core::DeviceSpec;
/// let spec: DeviceSpec = "cuda:1".parse().unwrap();
/// assert_eq!(spec, DeviceSpec::Cuda(1));
/// assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Flex);
/// // flex is always compiled in.
/// let device = DeviceSpec::Flex.device().unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// burn's portable CPU backend (`flex`, alias `cpu`).
    #[default]
    Flex,
    /// WGPU with the graphics API it picks.
    Wgpu,
    /// WGPU on Vulkan.
    Vulkan,
    /// A CUDA device by index.
    Cuda(usize),
    /// LibTorch on the CPU.
    TchCpu,
    /// LibTorch on a CUDA device.
    TchCuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = PeftError;

    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let index = |rest: &str| -> Result<usize> {
            rest.parse::<usize>()
                .map_err(|_| PeftError::UnknownDevice(s.to_string()))
        };
        match lower.as_str() {
            "flex" | "cpu" => Ok(DeviceSpec::Flex),
            "wgpu" => Ok(DeviceSpec::Wgpu),
            "vulkan" => Ok(DeviceSpec::Vulkan),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            "tch" | "tch:cpu" => Ok(DeviceSpec::TchCpu),
            "tch:cuda" => Ok(DeviceSpec::TchCuda(0)),
            other => {
                if let Some(rest) = other.strip_prefix("tch:cuda:") {
                    Ok(DeviceSpec::TchCuda(index(rest)?))
                } else if let Some(rest) = other.strip_prefix("cuda:") {
                    Ok(DeviceSpec::Cuda(index(rest)?))
                } else {
                    Err(PeftError::UnknownDevice(s.to_string()))
                }
            }
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Flex => write!(f, "flex"),
            DeviceSpec::Wgpu => write!(f, "wgpu"),
            DeviceSpec::Vulkan => write!(f, "vulkan"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
            DeviceSpec::TchCpu => write!(f, "tch"),
            DeviceSpec::TchCuda(i) => write!(f, "tch:cuda:{i}"),
        }
    }
}

impl DeviceSpec {
    /// The cargo feature that compiles this backend in.
    pub fn feature(&self) -> &'static str {
        match self {
            DeviceSpec::Flex => "flex",
            DeviceSpec::Wgpu => "wgpu",
            DeviceSpec::Vulkan => "vulkan",
            DeviceSpec::Cuda(_) => "cuda",
            DeviceSpec::TchCpu | DeviceSpec::TchCuda(_) => "tch",
        }
    }

    /// How many slices of a training batch to run at once by default (the trainer's
    /// `batch_threads`): on flex, as many as the batch has samples, up to one per core; on
    /// every other backend 1.
    ///
    /// burn-flex multiplies matrices on all cores but runs element-wise operations on one, so
    /// a lone forward and backward pass leaves cores idle; slices in flight at once fill them.
    /// One per core, not more: every slice's matrix products pack the weights again, and
    /// fewer, larger slices amortize that better (measured in
    /// `docs/perf-log/2026-11-27-batch-threads.md` and `2026-11-28-fold.md`). A GPU runs one stream of kernels, and LibTorch's CPU operations are
    /// multi-threaded already.
    ///
    /// ```
    /// use burn_peft_core::DeviceSpec;
    /// let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    /// assert_eq!(DeviceSpec::Cuda(0).default_batch_threads(8), 1);
    /// assert_eq!(DeviceSpec::Flex.default_batch_threads(1), 1);
    /// assert_eq!(DeviceSpec::Flex.default_batch_threads(64), cores.min(64));
    /// ```
    pub fn default_batch_threads(&self, batch_size: usize) -> usize {
        match self {
            DeviceSpec::Flex => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                batch_size.clamp(1, cores)
            }
            _ => 1,
        }
    }

    /// The burn device for inference. Call `.autodiff()` on it for training.
    ///
    /// Fails with [`PeftError::BackendNotCompiled`] when this build lacks the backend, and with
    /// [`PeftError::DeviceUnavailable`] when a GPU backend finds no driver or adapter: the
    /// device is opened here with one tiny operation, rather than failing later.
    ///
    /// Opening a `cuda`, `vulkan` or `wgpu` device turns on cubecl's compiled-kernel cache
    /// first (see [`crate::kernel_cache`]; `BURN_PEFT_KERNEL_CACHE=off` leaves it alone).
    pub fn device(&self) -> Result<Device> {
        #[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
        if matches!(
            self,
            DeviceSpec::Wgpu | DeviceSpec::Vulkan | DeviceSpec::Cuda(_)
        ) {
            crate::kernel_cache::configure();
        }
        let device = self.unchecked_device()?;
        if matches!(self, DeviceSpec::Flex | DeviceSpec::TchCpu) {
            return Ok(device);
        }
        probe(&device).map_err(|reason| PeftError::DeviceUnavailable {
            device: self.to_string(),
            reason,
        })?;
        Ok(device)
    }

    fn unchecked_device(&self) -> Result<Device> {
        let missing = || PeftError::BackendNotCompiled {
            device: self.to_string(),
            feature: self.feature(),
        };
        match *self {
            DeviceSpec::Flex => {
                #[cfg(feature = "flex")]
                return Ok(Device::flex());
                #[cfg(not(feature = "flex"))]
                Err(missing())
            }
            DeviceSpec::Wgpu => {
                #[cfg(feature = "wgpu")]
                return Ok(Device::wgpu(Default::default()));
                #[cfg(not(feature = "wgpu"))]
                Err(missing())
            }
            DeviceSpec::Vulkan => {
                #[cfg(feature = "vulkan")]
                return Ok(Device::vulkan(Default::default()));
                #[cfg(not(feature = "vulkan"))]
                Err(missing())
            }
            DeviceSpec::Cuda(_index) => {
                #[cfg(feature = "cuda")]
                return Ok(Device::cuda(_index));
                #[cfg(not(feature = "cuda"))]
                Err(missing())
            }
            DeviceSpec::TchCpu => {
                #[cfg(feature = "tch")]
                #[allow(deprecated)]
                return Ok(Device::libtorch());
                #[cfg(not(feature = "tch"))]
                Err(missing())
            }
            DeviceSpec::TchCuda(_index) => {
                #[cfg(feature = "tch")]
                #[allow(deprecated)]
                return Ok(Device::libtorch_cuda(_index));
                #[cfg(not(feature = "tch"))]
                Err(missing())
            }
        }
    }
}

/// Runs one tiny operation on `device`. burn's GPU backends open the driver on a worker thread
/// and panic when it is missing (cubecl's "Unable to acquire wgpu device", cudarc's "Unable to
/// dynamically load"); the panic reaches this thread through the device channel and is turned
/// into its message here. The default panic hook is silenced meanwhile, so that a missing
/// driver reads as one error, not a backtrace: this assumes no other thread panics in the same
/// moment, which holds where devices are opened (at start-up).
fn probe(device: &Device) -> std::result::Result<(), String> {
    let device = device.clone();
    let hook = std::panic::take_hook();
    let first = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let seen = first.clone();
    std::panic::set_hook(Box::new(move |info| {
        if let Ok(mut slot) = seen.lock() {
            slot.get_or_insert_with(|| panic_text(info.payload()));
        }
    }));
    let outcome = std::panic::catch_unwind(move || {
        burn::tensor::Tensor::<1>::zeros([1], &device)
            .into_data()
            .try_to_vec::<f32>()
            .map(|_| ())
            .map_err(|e| format!("{e:?}"))
    });
    std::panic::set_hook(hook);
    match outcome {
        Ok(result) => result,
        // The device thread's panic says why; the one on this thread only that the channel
        // closed.
        Err(payload) => Err(first
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
            .unwrap_or_else(|| panic_text(&*payload))),
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the backend panicked".into());
    // cubecl and cudarc write long messages; the start of the first line says what is missing.
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_string(),
    }
}

/// Parses a `--device` string and returns the burn device in one call.
///
/// ```
/// let device = burn_peft_core::parse_device("flex").unwrap();
/// assert!(burn_peft_core::parse_device("tpu").is_err());
/// ```
pub fn parse_device(s: &str) -> Result<Device> {
    s.parse::<DeviceSpec>()?.device()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        let cases = [
            ("flex", DeviceSpec::Flex),
            ("CPU", DeviceSpec::Flex),
            ("wgpu", DeviceSpec::Wgpu),
            ("vulkan", DeviceSpec::Vulkan),
            ("cuda", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
            ("tch", DeviceSpec::TchCpu),
            ("tch:cuda:1", DeviceSpec::TchCuda(1)),
        ];
        for (text, spec) in cases {
            assert_eq!(text.parse::<DeviceSpec>().unwrap(), spec, "{text}");
            // Display round-trips.
            assert_eq!(spec.to_string().parse::<DeviceSpec>().unwrap(), spec);
        }
    }

    #[test]
    fn rejects_bad_spellings() {
        for bad in ["", "gpu", "cuda:x", "cuda:", "tch:cuda:-1", "metal"] {
            assert!(
                matches!(bad.parse::<DeviceSpec>(), Err(PeftError::UnknownDevice(_))),
                "{bad}"
            );
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn missing_backend_names_the_feature() {
        let err = DeviceSpec::Cuda(0).device().unwrap_err();
        assert!(err.to_string().contains("--features cuda"), "{err}");
    }
}
