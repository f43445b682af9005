//! Tokenizers from `tokenizer.json` files, through the `tokenizers` crate.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// A tokenizer loaded from an HF `tokenizer.json`, used exactly as configured there
/// (normalizer, pre-tokenizer, post-processor and special tokens).
///
/// ```no_run
/// let tok = burn_peft_models::TextTokenizer::from_file("model/tokenizer.json".as_ref()).unwrap();
/// let ids = tok.encode("Hello world").unwrap();
/// assert_eq!(tok.decode(&ids).unwrap(), "Hello world");
/// ```
#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextTokenizer({})", self.path.display())
    }
}

impl TextTokenizer {
    /// Reads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Token ids of `text`, with the special tokens the tokenizer's post-processor adds.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, true).map_err(|e| self.error(e))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| self.error(e))
    }

    /// Number of tokens, special ones included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn error(&self, e: impl ToString) -> ModelError {
        ModelError::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}
