//! # burn-peft-retrieval
//!
//! Sentence embeddings and nearest-neighbour search, for retrieval-augmented generation and
//! for picking demonstrations by similarity:
//!
//! - [`Embedder`]: texts to L2-normalized vectors; [`BertEmbedder`] runs a BERT encoder
//!   (all-MiniLM-L6-v2's mean pooling) on any burn device, in batches.
//! - [`ExactIndex`]: every document's vector on the device, searched exactly by cosine
//!   similarity (one matrix product and a top-k); saved as `vectors.safetensors` beside
//!   `documents.jsonl` and `index.json`, written into a temporary folder and renamed, so that a
//!   crash leaves the whole index or none.
//! - [`Retriever`]: top-k documents of a query with their scores, for any index.
//! - `HnswIndex` (feature `hnsw`): approximate search (HNSW, the `hnsw_rs` crate) over an exact
//!   index's vectors, for large corpora.
#![warn(missing_docs)]

#[cfg(feature = "hnsw")]
mod hnsw;
#[cfg(feature = "hnsw")]
pub use hnsw::{HnswConfig, HnswIndex};

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_peft_core::format::{NamedTensor, read_safetensors, write_safetensors};
use burn_peft_models::{Bert, TextTokenizer};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

/// What can go wrong while embedding, indexing or searching.
#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    /// An index of no documents.
    #[error("the corpus is empty: an index needs at least one document")]
    EmptyCorpus,
    /// More results asked for than the index holds.
    #[error("k = {k} is more than the {count} documents in the index")]
    TooMany {
        /// Results asked for.
        k: usize,
        /// Documents in the index.
        count: usize,
    },
    /// A vector of another width than the index's.
    #[error("the embedder gives vectors of {found} values, the index holds {expected}")]
    Dimension {
        /// The index's width.
        expected: usize,
        /// The embedder's.
        found: usize,
    },
    /// No complete index at a path.
    #[error("no complete index in {0} (index.json, vectors.safetensors, documents.jsonl)")]
    NoIndex(PathBuf),
    /// A file of the index that is not what it should be.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A tensor the device could not hand back.
    #[error("{0}")]
    Backend(String),
    /// From the model (tokenizer, weights).
    #[error(transparent)]
    Model(#[from] burn_peft_models::ModelError),
    /// From the core crate (safetensors).
    #[error(transparent)]
    Core(#[from] burn_peft_core::PeftError),
}

/// The result type of this crate.
pub type Result<T> = std::result::Result<T, RetrievalError>;

fn io(path: &Path, source: std::io::Error) -> RetrievalError {
    RetrievalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Texts to L2-normalized vectors, one row per text.
pub trait Embedder {
    /// The width of a vector.
    fn dim(&self) -> usize;

    /// The vectors of `texts` as `[texts, dim]` on `device()`, each of norm 1.
    fn embed(&self, texts: &[String]) -> Result<Tensor<2>>;

    /// The device the vectors live on.
    fn device(&self) -> Device;
}

/// A BERT encoder's mean-pooled, normalized sentence embeddings (all-MiniLM-L6-v2's recipe),
/// `batch_size` texts at a time, each cut to the model's positions.
pub struct BertEmbedder {
    bert: Bert,
    tokenizer: TextTokenizer,
    device: Device,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Shows a progress bar on stderr while embedding (texts done, rate, time left); drawn
    /// only when stderr is a terminal. Off by default.
    pub progress: bool,
}

impl BertEmbedder {
    /// An embedder over a model and its tokenizer.
    pub fn new(bert: Bert, tokenizer: TextTokenizer, device: &Device) -> Self {
        Self {
            bert,
            tokenizer,
            device: device.clone(),
            batch_size: 32,
            progress: false,
        }
    }

    /// Loads an HF BERT directory (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub fn from_pretrained(dir: &Path, device: &Device) -> Result<Self> {
        let (bert, tokenizer) = Bert::from_pretrained(dir, device)?;
        Ok(Self::new(bert, tokenizer, device))
    }
}

impl Embedder for BertEmbedder {
    fn dim(&self) -> usize {
        self.bert.config.hidden_size
    }

    fn device(&self) -> Device {
        self.device.clone()
    }

    fn embed(&self, texts: &[String]) -> Result<Tensor<2>> {
        let limit = self.bert.config.max_position_embeddings;
        let bar = progress_bar(self.progress, texts.len());
        let mut parts = Vec::new();
        for batch in texts.chunks(self.batch_size.max(1)) {
            let mut rows: Vec<Vec<u32>> = Vec::with_capacity(batch.len());
            for text in batch {
                let mut ids = self.tokenizer.encode(text)?;
                ids.truncate(limit);
                if ids.is_empty() {
                    // An empty text still needs one position to pool over.
                    ids.push(0);
                }
                rows.push(ids);
            }
            let width = rows.iter().map(Vec::len).max().unwrap_or(1);
            let (mut ids, mut mask) = (Vec::new(), Vec::new());
            for row in &rows {
                ids.extend(row.iter().map(|&i| i as i64));
                ids.extend(std::iter::repeat_n(0, width - row.len()));
                mask.extend(std::iter::repeat_n(1i64, row.len()));
                mask.extend(std::iter::repeat_n(0, width - row.len()));
            }
            let shape = [rows.len(), width];
            let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, shape), &self.device);
            let mask = Tensor::<2, Int>::from_data(TensorData::new(mask, shape), &self.device);
            parts.push(self.bert.sentence_embeddings(ids, mask));
            bar.inc(rows.len() as u64);
        }
        bar.finish_and_clear();
        if parts.is_empty() {
            return Ok(Tensor::zeros([0, self.dim()], &self.device));
        }
        Ok(Tensor::cat(parts, 0))
    }
}

/// A bar counting embedded texts on stderr, or a hidden one.
fn progress_bar(show: bool, texts: usize) -> ProgressBar {
    let target = if show {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(texts as u64), target);
    if let Ok(style) = ProgressStyle::with_template(
        "embedding {bar:30} {pos}/{len} texts  {per_sec}  [{elapsed_precise}, ETA {eta}]",
    ) {
        bar.set_style(style);
    }
    bar
}

/// One search result: a document's position in the index and its cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The document's position in the index.
    pub doc: usize,
    /// Cosine similarity to the query, in [-1, 1].
    pub score: f32,
}

/// The `k` documents nearest to a query, best first.
pub trait Retriever {
    /// The `k` nearest documents to `query`, embedded by `embedder`.
    fn retrieve(&self, embedder: &dyn Embedder, query: &str, k: usize) -> Result<Vec<Hit>>;

    /// The text of document `doc`.
    fn document(&self, doc: usize) -> &str;

    /// How many documents the index holds.
    fn len(&self) -> usize;

    /// Whether the index holds no documents.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What `index.json` records.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    count: usize,
    dim: usize,
}

#[derive(Serialize, Deserialize)]
struct DocumentLine {
    text: String,
}

const MANIFEST: &str = "index.json";
const VECTORS: &str = "vectors.safetensors";
const DOCUMENTS: &str = "documents.jsonl";

/// Exact cosine search: every document's normalized vector in one `[documents, dim]` tensor on
/// the device; a query is one matrix product and a top-k.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use burn_peft_retrieval::{Embedder, ExactIndex, Result, Retriever};
///
/// /// Two letters' counts, normalized: enough to tell "aaa" from "bbb".
/// struct Letters;
/// impl Embedder for Letters {
///     fn dim(&self) -> usize { 2 }
///     fn device(&self) -> Device { Device::flex() }
///     fn embed(&self, texts: &[String]) -> Result<Tensor<2>> {
///         let rows: Vec<f32> = texts.iter().flat_map(|t| {
///             let (a, b) = (t.matches('a').count() as f32, t.matches('b').count() as f32);
///             let n = (a * a + b * b).sqrt().max(1e-6);
///             [a / n, b / n]
///         }).collect();
///         Ok(Tensor::<1>::from_floats(rows.as_slice(), &Device::flex()).reshape([texts.len(), 2]))
///     }
/// }
/// let index = ExactIndex::build(&Letters, vec!["aaa".into(), "bbb".into(), "aab".into()])?;
/// let hits = index.retrieve(&Letters, "ab a", 2)?;
/// assert_eq!(index.document(hits[0].doc), "aab");
/// # Ok::<(), burn_peft_retrieval::RetrievalError>(())
/// ```
pub struct ExactIndex {
    vectors: Tensor<2>,
    documents: Vec<String>,
}

impl ExactIndex {
    /// Embeds every document (refused when there are none).
    pub fn build(embedder: &dyn Embedder, documents: Vec<String>) -> Result<Self> {
        if documents.is_empty() {
            return Err(RetrievalError::EmptyCorpus);
        }
        let vectors = embedder.embed(&documents)?;
        Ok(Self { vectors, documents })
    }

    /// The vectors, one `Vec` per document, read back from the device.
    pub fn host_vectors(&self) -> Result<Vec<Vec<f32>>> {
        let d = self.dim();
        let flat: Vec<f32> = self
            .vectors
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .map_err(|e| RetrievalError::Backend(format!("reading the vectors back: {e:?}")))?;
        Ok(flat.chunks(d.max(1)).map(<[f32]>::to_vec).collect())
    }

    /// The width of the vectors.
    pub fn dim(&self) -> usize {
        self.vectors.dims()[1]
    }

    /// The `k` nearest documents to each query vector (`[queries, dim]`, normalized), best
    /// first.
    pub fn search(&self, queries: Tensor<2>, k: usize) -> Result<Vec<Vec<Hit>>> {
        let [q, found] = queries.dims();
        self.check_request(k, found)?;
        if k == 0 || q == 0 {
            return Ok(vec![Vec::new(); q]);
        }
        let scores = queries.matmul(self.vectors.clone().transpose());
        let (top, index) = scores.topk_with_indices(k, 1);
        let read = |e| RetrievalError::Backend(format!("reading the scores back: {e:?}"));
        let top: Vec<f32> = top
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .map_err(read)?;
        let index: Vec<i64> = index
            .into_data()
            .convert::<i64>()
            .try_to_vec()
            .map_err(read)?;
        Ok((0..q)
            .map(|row| {
                (0..k)
                    .map(|j| Hit {
                        doc: index[row * k + j] as usize,
                        score: top[row * k + j],
                    })
                    .collect()
            })
            .collect())
    }

    /// Refuses `k` past the documents held, and query vectors of `found` values that are not
    /// the index's width.
    pub(crate) fn check_request(&self, k: usize, found: usize) -> Result<()> {
        let [count, expected] = self.vectors.dims();
        if k > count {
            return Err(RetrievalError::TooMany { k, count });
        }
        if found != expected {
            return Err(RetrievalError::Dimension { expected, found });
        }
        Ok(())
    }

    /// Writes the index into `dir` (which must not exist): into a temporary folder beside it,
    /// renamed when every file is written and synced, so that a crash leaves no half index.
    pub fn save(&self, dir: &Path) -> Result<()> {
        if dir.exists() {
            return Err(io(
                dir,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "already exists"),
            ));
        }
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = parent.join(format!(
            ".{}.tmp-{}-0",
            name.unwrap_or_default(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| io(&tmp, e))?;
        let written =
            (|| {
                let mut tensors = BTreeMap::new();
                tensors.insert(
                    "vectors".to_string(),
                    NamedTensor::from_tensor(self.vectors.clone()),
                );
                write_safetensors(&tmp.join(VECTORS), &tensors)?;
                let path = tmp.join(DOCUMENTS);
                let mut file = std::fs::File::create(&path).map_err(|e| io(&path, e))?;
                for text in &self.documents {
                    let line = serde_json::to_string(&DocumentLine { text: text.clone() })
                        .map_err(|e| RetrievalError::Format {
                            path: path.clone(),
                            message: e.to_string(),
                        })?;
                    writeln!(file, "{line}").map_err(|e| io(&path, e))?;
                }
                file.sync_all().map_err(|e| io(&path, e))?;
                let manifest = Manifest {
                    count: self.documents.len(),
                    dim: self.dim(),
                };
                let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
                burn_peft_core::format::write_atomic(&tmp.join(MANIFEST), text.as_bytes())?;
                std::fs::rename(&tmp, dir).map_err(|e| io(dir, e))
            })();
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        written
    }

    /// Reads an index that [`save`](Self::save) wrote, its vectors onto `device`; the three
    /// files must agree on the count and the width.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let manifest_path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|_| RetrievalError::NoIndex(dir.to_path_buf()))?;
        let bad = |path: &Path, message: String| RetrievalError::Format {
            path: path.to_path_buf(),
            message,
        };
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| bad(&manifest_path, e.to_string()))?;
        let vectors_path = dir.join(VECTORS);
        let vectors = read_safetensors(&vectors_path)?
            .remove("vectors")
            .ok_or_else(|| bad(&vectors_path, "no 'vectors' tensor".into()))?;
        if vectors.shape != [manifest.count, manifest.dim] {
            return Err(bad(
                &vectors_path,
                format!(
                    "shape {:?}, index.json says [{}, {}]",
                    vectors.shape, manifest.count, manifest.dim
                ),
            ));
        }
        let documents_path = dir.join(DOCUMENTS);
        let text = std::fs::read_to_string(&documents_path).map_err(|e| io(&documents_path, e))?;
        let documents = text
            .lines()
            .enumerate()
            .map(|(i, line)| {
                serde_json::from_str::<DocumentLine>(line)
                    .map(|d| d.text)
                    .map_err(|e| bad(&documents_path, format!("line {}: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>>>()?;
        if documents.len() != manifest.count || documents.is_empty() {
            return Err(bad(
                &documents_path,
                format!(
                    "{} documents, index.json says {}",
                    documents.len(),
                    manifest.count
                ),
            ));
        }
        Ok(Self {
            vectors: vectors.to_tensor(device, "vectors")?,
            documents,
        })
    }
}

impl Retriever for ExactIndex {
    fn retrieve(&self, embedder: &dyn Embedder, query: &str, k: usize) -> Result<Vec<Hit>> {
        let q = embedder.embed(&[query.to_string()])?;
        let q = q.to_device(&self.vectors.device());
        Ok(self.search(q, k)?.pop().unwrap_or_default())
    }

    fn document(&self, doc: usize) -> &str {
        &self.documents[doc]
    }

    fn len(&self) -> usize {
        self.documents.len()
    }
}
