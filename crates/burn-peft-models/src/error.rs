//! The error type of the models crate.

use std::path::PathBuf;

use burn_peft_core::PeftError;

/// What can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An error from the adapter machinery or a file reader.
    #[error(transparent)]
    Peft(#[from] PeftError),
    /// A GGUF file that is malformed or lacks what the model needs.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// A config.json that does not describe a supported architecture.
    #[error("'{path}' is not a supported model config: {reason}")]
    UnsupportedModel {
        /// The config file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A tokenizer that could not be loaded or used.
    #[error("tokenizer '{path}': {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What the tokenizers crate said.
        message: String,
    },
    /// An input the model cannot take (a token id out of range, too long a sequence).
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

/// Result alias of the models crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
