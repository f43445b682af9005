//! The error type of the training crate.

use std::path::PathBuf;

/// Everything that can go wrong while preparing data or training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A data file whose content is not what its format promises.
    #[error("{}{}: {message}", path.display(), line_suffix(*line))]
    Data {
        /// The file.
        path: PathBuf,
        /// 1-based line (or record) number; 0 when it is about the whole file.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A setting out of range or inconsistent with the data.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// The training loss (with the regularizer's penalty) stopped being a finite number.
    #[error(
        "training diverged: the loss became {loss} at step {step} (a lower learning rate or \
         penalty strength may help)"
    )]
    Diverged {
        /// The optimizer step whose loss was not finite.
        step: usize,
        /// That loss.
        loss: f64,
    },
    /// The weights or gradients ran away while the loss was still finite; see
    /// [`WEIGHT_GROWTH_LIMIT`](crate::WEIGHT_GROWTH_LIMIT).
    #[error(
        "training diverged at step {step}: {what} (a lower learning rate may help; the last \
         checkpoint is kept)"
    )]
    WeightsDiverged {
        /// The optimizer step after which it was seen.
        step: usize,
        /// What ran away.
        what: String,
    },
    /// A checkpoint that cannot be resumed.
    #[error("cannot resume from {path}: {message}")]
    Resume {
        /// The checkpoint or output directory.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// From the model crate (tokenizers, weights).
    #[error(transparent)]
    Model(#[from] burn_peft_models::ModelError),
    /// From the core crate (adapter files, optimizer state).
    #[error(transparent)]
    Peft(#[from] burn_peft_core::PeftError),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn data(path: impl Into<PathBuf>, line: usize, message: impl ToString) -> Self {
        Self::Data {
            path: path.into(),
            line,
            message: message.to_string(),
        }
    }
}

/// `:N` for a line number, nothing for 0 (the whole file).
fn line_suffix(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}

/// The result type of the training crate.
pub type Result<T> = std::result::Result<T, TrainError>;
