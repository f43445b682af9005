//! The GGUF reader against values written and dequantized by the `gguf` Python package
//! (`scripts/make_real_fixtures.py`), and against malformed and lying files.

use std::path::{Path, PathBuf};

use burn_peft_models::{Gguf, GgufError, GgufValue};
use serde_json::Value;

fn fixture() -> (PathBuf, Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/real");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("gguf_quants.json")).unwrap())
            .unwrap();
    (dir.join("gguf_quants.gguf"), json)
}

#[test]
fn every_tensor_dequantizes_like_the_gguf_package() {
    let (path, json) = fixture();
    let file = Gguf::open(&path).unwrap();
    assert_eq!(file.version, 3);
    let tensors = json["tensors"].as_array().unwrap();
    assert_eq!(file.tensors.len(), tensors.len());
    for t in tensors {
        let name = t["name"].as_str().unwrap();
        let got = file.tensor(name).unwrap();
        let shape: Vec<usize> = t["torch_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(got.shape, shape, "{name}");
        let want: Vec<f64> = t["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.data.len(), want.len(), "{name}");
        for (i, (g, w)) in got.data.iter().zip(&want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= 1e-6 * (1.0 + w.abs()),
                "{name}[{i}]: {g} vs {w} ({})",
                t["ggml_type"]
            );
        }
    }
}

#[test]
fn metadata_of_every_type_reads_back() {
    let (path, json) = fixture();
    let file = Gguf::open(&path).unwrap();
    let meta = json["metadata"].as_object().unwrap();
    assert_eq!(file.metadata.len(), meta.len());
    for (key, entry) in meta {
        let got = file.get(key).unwrap();
        let want = &entry["value"];
        let same = match (got, want) {
            (GgufValue::Str(s), Value::String(w)) => s == w,
            (GgufValue::Bool(b), Value::Bool(w)) => b == w,
            (GgufValue::Uint(u), w) => w.as_u64() == Some(*u),
            (GgufValue::Int(i), w) => w.as_i64() == Some(*i),
            (GgufValue::Float(f), w) => w.as_f64().is_some_and(|w| (f - w).abs() <= 1e-6 * w.abs()),
            (GgufValue::Array(a), Value::Array(w)) => a.len() == w.len(),
            _ => false,
        };
        assert!(same, "{key}: {got:?} vs {want}");
    }
    assert_eq!(file.metadata_str("test.string"), Some("héllo, wörld 🙂"));
}

fn parse(bytes: Vec<u8>) -> Result<Gguf, GgufError> {
    Gguf::parse(Path::new("test.gguf"), bytes)
}

#[test]
fn truncated_and_corrupted_files_are_errors_not_panics() {
    let (path, _) = fixture();
    let good = std::fs::read(&path).unwrap();
    // Every truncation point in the header and index.
    for cut in 0..1600.min(good.len()) {
        assert!(parse(good[..cut].to_vec()).is_err(), "cut at {cut} parsed");
    }
    // Random byte flips anywhere: any result but a panic is fine; many must be caught.
    let mut state = 0x2545F4914F6CDD1Du64;
    let mut errors = 0;
    for _ in 0..3000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mut bytes = good.clone();
        let at = (state as usize) % 1568;
        bytes[at] ^= 1 << ((state >> 32) % 8);
        if let Ok(file) = parse(bytes) {
            for t in file.tensors.clone() {
                let _ = file.tensor(&t.name);
            }
        } else {
            errors += 1;
        }
    }
    assert!(errors > 100, "only {errors} corruptions detected");
}

fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n_tensors.to_le_bytes());
    b.extend(n_kv.to_le_bytes());
    b
}

#[test]
fn lying_counts_and_sizes_are_refused_without_allocating() {
    // A huge tensor count.
    assert!(matches!(
        parse(header(u64::MAX, 0)),
        Err(GgufError::Invalid { .. })
    ));
    // A huge string length in a key.
    let mut b = header(0, 1);
    b.extend(u64::MAX.to_le_bytes());
    assert!(matches!(parse(b), Err(GgufError::Invalid { .. })));
    // A huge array.
    let mut b = header(0, 1);
    b.extend(1u64.to_le_bytes());
    b.push(b'k');
    b.extend(9u32.to_le_bytes()); // array
    b.extend(4u32.to_le_bytes()); // of u32
    b.extend((1u64 << 60).to_le_bytes());
    assert!(matches!(parse(b), Err(GgufError::Invalid { .. })));
    // A tensor whose data lies past the end of the file.
    let mut b = header(1, 0);
    b.extend(1u64.to_le_bytes());
    b.push(b't');
    b.extend(2u32.to_le_bytes());
    b.extend(1024u64.to_le_bytes());
    b.extend(1024u64.to_le_bytes());
    b.extend(0u32.to_le_bytes()); // F32
    b.extend(0u64.to_le_bytes());
    b.resize(b.len().div_ceil(32) * 32 + 64, 0);
    let err = parse(b).unwrap_err().to_string();
    assert!(err.contains("does not fit"), "{err}");
    // Dimensions whose product overflows.
    let mut b = header(1, 0);
    b.extend(1u64.to_le_bytes());
    b.push(b't');
    b.extend(2u32.to_le_bytes());
    b.extend(u64::MAX.to_le_bytes());
    b.extend(16u64.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    assert!(parse(b).is_err());
    // Wrong magic and version.
    assert!(parse(b"GGML\x03\0\0\0".to_vec()).is_err());
    let mut b = header(0, 0);
    b[4] = 9;
    assert!(parse(b).is_err());
    // A missing tensor is a typed error.
    let (path, _) = fixture();
    let file = Gguf::open(&path).unwrap();
    assert!(matches!(
        file.tensor("nope"),
        Err(GgufError::Missing { .. })
    ));
}
