//! Exact search against a brute-force reference, the index's files (round trip, no half index
//! after a failed save, corrupt files refused), bad input, and all-MiniLM-L6-v2 finding the
//! paraphrase of a query (real asset; skipped without it unless `BURN_PEFT_REQUIRE_ASSETS`).

use burn::tensor::{Device, Tensor};
use burn_peft_assets::{AssetCache, MINILM_DIR};
use burn_peft_retrieval::{BertEmbedder, Embedder, ExactIndex, Result, RetrievalError, Retriever};

/// Hashed character trigrams, normalized: similar strings get similar vectors.
struct Trigrams;

const DIM: usize = 64;

fn trigram_vector(text: &str) -> Vec<f32> {
    let bytes: Vec<u8> = format!("  {}  ", text.to_lowercase()).into_bytes();
    let mut v = vec![0f32; DIM];
    for w in bytes.windows(3) {
        let h = w.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        v[(h % DIM as u64) as usize] += 1.0;
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter().map(|x| x / n).collect()
}

impl Embedder for Trigrams {
    fn dim(&self) -> usize {
        DIM
    }
    fn device(&self) -> Device {
        Device::flex()
    }
    fn embed(&self, texts: &[String]) -> Result<Tensor<2>> {
        let rows: Vec<f32> = texts.iter().flat_map(|t| trigram_vector(t)).collect();
        Ok(Tensor::<1>::from_floats(rows.as_slice(), &Device::flex()).reshape([texts.len(), DIM]))
    }
}

fn corpus() -> Vec<String> {
    (0..200)
        .map(|i| {
            format!(
                "document {i} about topic {} and item {}",
                i % 17,
                i * 7 % 31
            )
        })
        .collect()
}

#[test]
fn exact_search_equals_brute_force_cosine() {
    let docs = corpus();
    let index = ExactIndex::build(&Trigrams, docs.clone()).unwrap();
    let vectors: Vec<Vec<f32>> = docs.iter().map(|d| trigram_vector(d)).collect();
    for query in ["topic 3 and item 9", "document 42", "nothing alike at all"] {
        let q = trigram_vector(query);
        let mut reference: Vec<(usize, f32)> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (i, v.iter().zip(&q).map(|(a, b)| a * b).sum()))
            .collect();
        reference.sort_by(|a, b| b.1.total_cmp(&a.1));
        let hits = index.retrieve(&Trigrams, query, 10).unwrap();
        assert_eq!(hits.len(), 10);
        for (hit, (doc, score)) in hits.iter().zip(&reference) {
            assert!(
                (hit.score - score).abs() < 1e-5,
                "{query}: {hit:?} vs {doc} {score}"
            );
        }
        // Ties aside, the same documents.
        let kth = reference[9].1;
        for hit in &hits {
            assert!(hit.score >= kth - 1e-5);
        }
    }
    // Each document finds itself first.
    let hits = index.retrieve(&Trigrams, &docs[17], 1).unwrap();
    assert_eq!(index.document(hits[0].doc), docs[17]);
}

#[test]
fn an_index_round_trips_and_a_failed_save_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let index = ExactIndex::build(&Trigrams, corpus()).unwrap();
    let dir = tmp.path().join("index");
    index.save(&dir).unwrap();
    let again = ExactIndex::load(&dir, &Device::flex()).unwrap();
    assert_eq!(again.len(), 200);
    for q in ["topic 5", "item 30"] {
        assert_eq!(
            index.retrieve(&Trigrams, q, 5).unwrap(),
            again.retrieve(&Trigrams, q, 5).unwrap()
        );
    }
    // Saving over an index is refused, and the index is intact.
    assert!(index.save(&dir).is_err());
    ExactIndex::load(&dir, &Device::flex()).unwrap();
    // A save that cannot finish (its parent is a file) leaves no folder behind.
    std::fs::write(tmp.path().join("file"), "x").unwrap();
    assert!(index.save(&tmp.path().join("file/index")).is_err());
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
    // A folder without a complete index (a crash before the rename leaves only a temporary
    // folder; the index's own name never holds half of one) is refused, not read as empty.
    let half = tmp.path().join("half");
    std::fs::create_dir(&half).unwrap();
    std::fs::copy(
        dir.join("vectors.safetensors"),
        half.join("vectors.safetensors"),
    )
    .unwrap();
    let e = ExactIndex::load(&half, &Device::flex()).err().unwrap();
    assert!(matches!(e, RetrievalError::NoIndex(_)), "{e}");
    // Files that disagree are refused.
    let lines = std::fs::read_to_string(dir.join("documents.jsonl")).unwrap();
    let short: String = lines.lines().skip(1).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.join("documents.jsonl"), short).unwrap();
    let e = ExactIndex::load(&dir, &Device::flex()).err().unwrap();
    assert!(
        e.to_string().contains("199 documents, index.json says 200"),
        "{e}"
    );
}

#[test]
fn bad_input_is_an_error() {
    let e = ExactIndex::build(&Trigrams, Vec::new()).err().unwrap();
    assert!(matches!(e, RetrievalError::EmptyCorpus), "{e}");
    let index = ExactIndex::build(&Trigrams, vec!["a".into(), "b".into()]).unwrap();
    let e = index.retrieve(&Trigrams, "a", 3).unwrap_err();
    assert!(e.to_string().contains("k = 3 is more than the 2"), "{e}");
    let wrong = Tensor::<2>::zeros([1, DIM + 1], &Device::flex());
    assert!(matches!(
        index.search(wrong, 1),
        Err(RetrievalError::Dimension { .. })
    ));
    assert!(index.retrieve(&Trigrams, "a", 0).unwrap().is_empty());
}

#[test]
fn minilm_finds_the_paraphrase() {
    let dir = match AssetCache::from_env(None).resolve(MINILM_DIR) {
        Ok(d) => d,
        Err(e) if std::env::var_os("BURN_PEFT_REQUIRE_ASSETS").is_none() => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let device = Device::flex();
    let mut embedder = BertEmbedder::from_pretrained(&dir, &device).unwrap();
    embedder.batch_size = 2; // several batches, with padding
    embedder.progress = true; // drawn only on a terminal; the vectors are the same
    let docs: Vec<String> = [
        "The stock market fell sharply on Monday.",
        "A small cat is sleeping on the sofa.",
        "The recipe needs two eggs and some flour.",
        "Heavy rain is expected over the weekend.",
        "",
    ]
    .map(String::from)
    .to_vec();
    let index = ExactIndex::build(&embedder, docs.clone()).unwrap();
    // Batched and padded, each vector is the one the text gets alone.
    let one = embedder.embed(&docs[1..2]).unwrap();
    let hits = index.search(one, 1).unwrap();
    assert_eq!(hits[0][0].doc, 1);
    assert!((hits[0][0].score - 1.0).abs() < 1e-4, "{:?}", hits[0][0]);
    for (query, want) in [
        ("a kitten naps on the couch", 1),
        ("shares dropped at the start of the week", 0),
        ("what do I need to bake a cake", 2),
        ("will it be wet on Saturday", 3),
    ] {
        let hits = index.retrieve(&embedder, query, 2).unwrap();
        assert_eq!(hits[0].doc, want, "{query}: {hits:?}");
        assert!(hits[0].score > hits[1].score);
    }
}

/// HNSW against exact search on the same corpus: recall@10 of 2,000 documents, averaged over
/// 100 queries.
#[cfg(feature = "hnsw")]
#[test]
fn hnsw_recall_at_10_against_exact_search() {
    use burn_peft_retrieval::{HnswConfig, HnswIndex};
    let docs: Vec<String> = (0..2000)
        .map(|i| format!("record {i}: {} {} {}", i % 13, i * 31 % 97, i * 7 % 53))
        .collect();
    let exact = ExactIndex::build(&Trigrams, docs.clone()).unwrap();
    let approx = HnswIndex::new(
        ExactIndex::build(&Trigrams, docs).unwrap(),
        HnswConfig::default(),
    )
    .unwrap();
    let mut found = 0;
    let queries = 100;
    for q in 0..queries {
        let query = format!("record {}: {} {}", q * 17, q % 13, q * 5 % 97);
        let want: Vec<usize> = exact
            .retrieve(&Trigrams, &query, 10)
            .unwrap()
            .iter()
            .map(|h| h.doc)
            .collect();
        let got = approx.retrieve(&Trigrams, &query, 10).unwrap();
        assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
        found += got.iter().filter(|h| want.contains(&h.doc)).count();
    }
    let recall = found as f64 / (10 * queries) as f64;
    eprintln!("HNSW recall@10: {recall:.3}");
    assert!(recall >= 0.95, "recall@10 {recall}");
    assert!(approx.retrieve(&Trigrams, "x", 2001).is_err());
}
