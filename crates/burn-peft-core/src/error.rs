//! The error type of the core crate.

use std::path::PathBuf;

/// Everything that can go wrong in the adapter machinery.
///
/// Each variant names the path, key or value that was wrong so that a binary can print it as a
/// one-line message.
#[derive(Debug, thiserror::Error)]
pub enum PeftError {
    /// A tensor read from a file with NaN or infinite values.
    #[error("tensor '{key}' holds {count} NaN or infinite values")]
    NonFinite {
        /// The tensor's key in its file.
        key: String,
        /// How many values are not finite.
        count: usize,
    },
    /// A size that would not fit in memory (or overflows), refused before allocating.
    #[error("{what} is too large: {item} brings it to {needed}, past the {limit} of memory here")]
    TooLarge {
        /// What was being built.
        what: String,
        /// The tensor that passed the limit, with its shape.
        item: String,
        /// The bytes it would take with that tensor.
        needed: String,
        /// The limit.
        limit: String,
    },
    /// A `--device` string that is not one of the known forms.
    #[error("unknown device '{0}': expected flex, cpu, wgpu, vulkan, cuda[:N] or tch[:cuda:N]")]
    UnknownDevice(String),
    /// A device whose backend was not compiled in.
    #[error(
        "device '{device}' needs the cargo feature '{feature}' (rebuild with --features {feature})"
    )]
    BackendNotCompiled {
        /// The device as the user wrote it.
        device: String,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// A `--dtype` string that is not one of the known forms.
    #[error("unknown dtype '{0}': expected f32, bf16 or f16")]
    UnknownDtype(String),
    /// A precision the device's backend cannot store and compute in.
    #[error("device {device} cannot compute in {dtype}: use f32 there")]
    UnsupportedDtype {
        /// The precision, as `--dtype` spells it.
        dtype: String,
        /// The device.
        device: String,
    },
    /// A compiled-in backend whose device cannot be opened here (no driver, no adapter).
    #[error("device '{device}' is not usable here: {reason}")]
    DeviceUnavailable {
        /// The device as the user wrote it.
        device: String,
        /// What the backend reported.
        reason: String,
    },
    /// A `target_modules` or `exclude_modules` regex that does not compile.
    #[error("invalid module regex '{pattern}': {message}")]
    InvalidRegex {
        /// The pattern as given.
        pattern: String,
        /// What the regex engine said.
        message: String,
    },
    /// No module of the model matched the target selection.
    #[error("target modules {targets} matched no linear layer of the model")]
    NoTargetMatched {
        /// The selection, as written.
        targets: String,
    },
    /// An adapter name that is already in use.
    #[error("an adapter named '{0}' already exists")]
    DuplicateAdapter(String),
    /// An adapter name that the model does not hold.
    #[error("no adapter named '{0}'")]
    UnknownAdapter(String),
    /// An operation that cannot run while an adapter is merged into the base weights.
    #[error("adapter '{0}' is merged into the base weights: unmerge it first")]
    AdapterMerged(String),
    /// A hyper-parameter that is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A tensor whose shape does not fit the module it is loaded into.
    #[error("tensor '{key}' has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// The key in the file.
        key: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor the model needs but the file lacks.
    #[error("'{file}' has no tensor '{key}'")]
    MissingTensor {
        /// The file that was read.
        file: PathBuf,
        /// The key that was looked for.
        key: String,
    },
    /// Tensors in an adapter file that belong to no module of the model.
    #[error(
        "'{file}' has tensors for modules the model does not have, e.g. '{key}' ({count} in all)"
    )]
    UnexpectedTensors {
        /// The file that was read.
        file: PathBuf,
        /// One of the unexpected keys.
        key: String,
        /// How many keys were unexpected.
        count: usize,
    },
    /// A file that could not be parsed.
    #[error("cannot parse '{path}': {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// An adapter method this build does not know.
    #[error("unsupported adapter type '{0}'")]
    UnsupportedMethod(String),
    /// An I/O error, with the path it happened on.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl PeftError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PeftError::Io {
            path: path.into(),
            source,
        }
    }

    /// A parse error for `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl ToString) -> Self {
        PeftError::Format {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// Result alias of the core crate.
pub type Result<T, E = PeftError> = std::result::Result<T, E>;
