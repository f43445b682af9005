//! [`HnswIndex`]: approximate nearest neighbours (HNSW, from the `hnsw_rs` crate) over an
//! [`ExactIndex`]'s vectors, for corpora too large to search exactly.

use hnsw_rs::prelude::{DistDot, Hnsw};

use crate::{Embedder, ExactIndex, Hit, Result, RetrievalError, Retriever};

/// The graph's settings (HNSW's `M`, `ef_construction` and `ef_search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HnswConfig {
    /// Neighbours kept per node and layer (at most 256).
    pub max_connections: usize,
    /// Candidates explored while inserting.
    pub ef_construction: usize,
    /// Candidates explored while searching (at least `k`).
    pub ef_search: usize,
}

impl Default for HnswConfig {
    fn default() -> Self {
        Self {
            max_connections: 24,
            ef_construction: 200,
            ef_search: 64,
        }
    }
}

/// An HNSW graph over the normalized vectors of an [`ExactIndex`] (distance `1 − cosine`),
/// which it keeps: saving is the exact index's, and loading rebuilds the graph from it.
///
/// ```
/// # use burn::tensor::{Device, Tensor};
/// # use burn_peft_retrieval::{Embedder, ExactIndex, HnswConfig, HnswIndex, Result, Retriever};
/// # struct Letters;
/// # impl Embedder for Letters {
/// #     fn dim(&self) -> usize { 2 }
/// #     fn device(&self) -> Device { Device::flex() }
/// #     fn embed(&self, texts: &[String]) -> Result<Tensor<2>> {
/// #         let rows: Vec<f32> = texts.iter().flat_map(|t| {
/// #             let (a, b) = (t.matches('a').count() as f32, t.matches('b').count() as f32);
/// #             let n = (a * a + b * b).sqrt().max(1e-6);
/// #             [a / n, b / n]
/// #         }).collect();
/// #         Ok(Tensor::<1>::from_floats(rows.as_slice(), &Device::flex()).reshape([texts.len(), 2]))
/// #     }
/// # }
/// let exact = ExactIndex::build(&Letters, vec!["aaa".into(), "bbb".into(), "aab".into()])?;
/// let index = HnswIndex::new(exact, HnswConfig::default())?;
/// let hits = index.retrieve(&Letters, "bb", 1)?;
/// assert_eq!(index.document(hits[0].doc), "bbb");
/// # Ok::<(), burn_peft_retrieval::RetrievalError>(())
/// ```
pub struct HnswIndex {
    exact: ExactIndex,
    graph: Hnsw<'static, f32, DistDot>,
    config: HnswConfig,
}

impl HnswIndex {
    /// Builds the graph over `exact`'s vectors (inserted in parallel).
    pub fn new(exact: ExactIndex, config: HnswConfig) -> Result<Self> {
        if !(1..=256).contains(&config.max_connections) {
            return Err(RetrievalError::Backend(format!(
                "max_connections {} must be in 1..=256",
                config.max_connections
            )));
        }
        let rows = exact.host_vectors()?;
        let n = rows.len();
        let layers = 16usize.min(((n.max(2) as f64).ln() / 2.0).ceil() as usize + 1);
        let graph = Hnsw::new(
            config.max_connections,
            n,
            layers,
            config.ef_construction,
            DistDot {},
        );
        let items: Vec<(&[f32], usize)> =
            rows.iter().enumerate().map(|(i, v)| (&v[..], i)).collect();
        graph.parallel_insert_slice(&items);
        Ok(Self {
            exact,
            graph,
            config,
        })
    }

    /// The exact index the graph was built over.
    pub fn exact(&self) -> &ExactIndex {
        &self.exact
    }
}

impl Retriever for HnswIndex {
    fn retrieve(&self, embedder: &dyn Embedder, query: &str, k: usize) -> Result<Vec<Hit>> {
        let q = embedder.embed(&[query.to_string()])?;
        self.exact.check_request(k, q.dims()[1])?;
        let q: Vec<f32> = q
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .map_err(|e| RetrievalError::Backend(format!("{e:?}")))?;
        let mut hits: Vec<Hit> = self
            .graph
            .search(&q, k, self.config.ef_search.max(k))
            .into_iter()
            .map(|n| Hit {
                doc: n.d_id,
                score: 1.0 - n.distance,
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        Ok(hits)
    }

    fn document(&self, doc: usize) -> &str {
        self.exact.document(doc)
    }

    fn len(&self) -> usize {
        self.exact.len()
    }
}
