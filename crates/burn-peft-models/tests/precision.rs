//! Mixed precision: the base in bf16 / f16 with adapters in f32, checked against transformers +
//! PEFT running the same fixture in the same types (`scripts/half_reference.py`, values in
//! `tests/fixtures/expected_half.json`), and against our own f32 path.

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use burn_peft_adapters::{AddAdapter, LoraConfig, LoraInit, load_adapter};
use burn_peft_core::{PeftModel, Precision, TargetModules};
use burn_peft_models::{Llama, LlamaConfig};
use burn_peft_optim::make_trainable;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn fixture_ids() -> Vec<u32> {
    json("expected.json")["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The fixture's loss with `adapter` (a fixture adapter directory name) in `precision`.
fn fixture_loss(precision: Precision, adapter: Option<&str>) -> f32 {
    let device = Device::flex();
    let mut model = Llama::from_pretrained(&fixtures().join("tiny-llama"), &device).unwrap();
    if let Some(name) = adapter {
        load_adapter(
            &mut model,
            &fixtures().join("adapters").join(name),
            "default",
        )
        .unwrap();
    }
    let mut model = model.no_grad();
    model.set_precision(precision);
    model.sequence_loss(&fixture_ids(), &device).unwrap()
}

#[test]
fn half_precision_losses_match_peft_in_half_precision() {
    let half = json("expected_half.json");
    let full = json("expected.json");
    // bf16 keeps 8 bits of mantissa: torch and flex round the same products in different
    // orders, and the loss moves by up to 0.018 from f32 on these adapters.
    for (precision, key, tol) in [
        (Precision::Bf16, "bf16", 6e-3),
        (Precision::F16, "f16", 1.5e-3),
    ] {
        let want = half[key]["base_loss"].as_f64().unwrap();
        let got = fixture_loss(precision, None) as f64;
        assert!(
            (got - want).abs() < tol,
            "{key} base: ours {got}, PEFT {want}"
        );
        for (name, want) in half[key]["adapters"].as_object().unwrap() {
            let want = want.as_f64().unwrap();
            let got = fixture_loss(precision, Some(name)) as f64;
            let f32_loss = full["adapters"][name]["loss"].as_f64().unwrap();
            assert!(
                (got - want).abs() < tol,
                "{key} {name}: ours {got}, PEFT {want} (f32: {f32_loss})"
            );
        }
    }
}

/// (path, dtype, trains, bytes) of every float parameter.
fn parameters(model: &Llama) -> Vec<(String, DType, bool, usize)> {
    struct Collect {
        path: Vec<String>,
        out: Vec<(String, DType, bool, usize)>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let dtype = param.val().dtype();
            self.out.push((
                self.path.join("."),
                dtype,
                param.is_require_grad(),
                param.shape().num_elements() * dtype.size(),
            ));
        }
    }
    let mut c = Collect {
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

fn tiny_with_lora(device: &Device) -> Llama {
    device.seed(5);
    let mut model = Llama::init(&LlamaConfig::tiny(48), device);
    let config = LoraConfig::new(4)
        .with_lora_alpha(8.0)
        .with_init(LoraInit::Random)
        .with_target_modules(TargetModules::all_linear());
    model.add_lora("a", &config).unwrap();
    model
}

fn batch(device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = (0..24).map(|i| (i * 7 + 3) % 48).collect();
    Tensor::from_data(TensorData::new(ids, [2, 12]), device)
}

#[test]
fn frozen_weights_are_stored_in_half_and_adapters_in_f32() {
    let device = Device::flex();
    let mut model = tiny_with_lora(&device);
    let bytes = |m: &Llama| -> usize { parameters(m).iter().map(|p| p.3).sum() };
    let before = bytes(&model);
    model.set_precision(Precision::Bf16);
    let params = parameters(&model);
    let (mut half, mut adapter) = (0, 0);
    for (path, dtype, _, _) in &params {
        if path.contains(".adapters.") {
            adapter += 1;
            assert_eq!(*dtype, DType::F32, "{path}");
        } else {
            half += 1;
            assert_eq!(*dtype, DType::BF16, "{path}");
        }
    }
    assert!(half > 0 && adapter > 0);
    // The frozen part is most of the model: its bytes are halved.
    let after = bytes(&model);
    assert!(
        (after as f64) < 0.6 * before as f64,
        "{before} bytes in f32, {after} in bf16"
    );
}

/// The gradients of every trainable parameter, flattened in visiting order, with their dtypes.
fn gradients(model: &Llama, ids: Tensor<2, Int>) -> (Vec<f32>, Vec<DType>) {
    struct Flatten<'a> {
        grads: &'a GradientsParams,
        values: Vec<f32>,
        dtypes: Vec<DType>,
    }
    impl ModuleVisitor for Flatten<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                self.dtypes.push(g.dtype());
                let data = g.into_data().convert::<f32>();
                self.values.extend(data.try_to_vec::<f32>().unwrap());
            }
        }
    }
    let loss = model.lm_loss(ids, None);
    assert_eq!(loss.dtype(), DType::F32);
    let grads = GradientsParams::from_grads(loss.backward(), model);
    let mut f = Flatten {
        grads: &grads,
        values: Vec::new(),
        dtypes: Vec::new(),
    };
    model.visit(&mut f);
    (f.values, f.dtypes)
}

fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm).sqrt()
}

#[test]
fn lora_gradients_in_bf16_and_f16_follow_the_f32_ones() {
    let device = Device::flex().autodiff();
    let model = tiny_with_lora(&device);
    let (want, _) = gradients(&model, batch(&device));
    assert!(want.iter().any(|g| g.abs() > 1e-6));
    for (precision, tol) in [(Precision::Bf16, 0.05), (Precision::F16, 0.01)] {
        let mut half = model.clone();
        half.set_precision(precision);
        let (got, dtypes) = gradients(&half, batch(&device));
        assert!(dtypes.iter().all(|d| *d == DType::F32), "{dtypes:?}");
        let err = relative_error(&got, &want);
        // Not f32 computed under another name: the half path rounds.
        assert!(err > 0.0 && err < tol, "{precision}: relative error {err}");
    }
}

#[test]
fn full_fine_tuning_in_bf16_keeps_f32_master_weights() {
    let device = Device::flex().autodiff();
    device.seed(9);
    let model = make_trainable(Llama::init(&LlamaConfig::tiny(48), &device));
    let (want, _) = gradients(&model, batch(&device));
    let mut half = model.clone();
    half.set_precision(Precision::Bf16);
    assert!(
        parameters(&half)
            .iter()
            .all(|(_, d, trains, _)| *d == DType::F32 && *trains)
    );
    let (got, dtypes) = gradients(&half, batch(&device));
    assert!(dtypes.iter().all(|d| *d == DType::F32));
    let err = relative_error(&got, &want);
    assert!(err > 0.0 && err < 0.05, "relative error {err}");
}

#[test]
fn merging_into_a_bf16_base_and_unmerging_restores_it() {
    let device = Device::flex();
    let mut model = tiny_with_lora(&device).no_grad();
    model.set_precision(Precision::Bf16);
    let weight = |m: &Llama| {
        m.layers[0]
            .self_attn
            .q_proj
            .base
            .weight
            .val()
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let original = weight(&model);
    let unmerged = model.lm_loss(batch(&device), None).into_scalar::<f32>();
    model.merge_adapter(None).unwrap();
    assert_eq!(
        model.layers[0].self_attn.q_proj.base.weight.val().dtype(),
        DType::BF16
    );
    let merged = model.lm_loss(batch(&device), None).into_scalar::<f32>();
    let merged_weight = weight(&model);
    assert!(
        (merged - unmerged).abs() < 2e-2,
        "merged {merged}, unmerged {unmerged}"
    );
    model.unmerge_adapter().unwrap();
    // Two bf16 roundings (of W + ΔW, then of the difference), each within half a unit in the
    // last place (2^-8 relative): never the update itself.
    let restored = weight(&model);
    let mut moved = 0;
    for ((r, o), m) in restored.iter().zip(&original).zip(&merged_weight) {
        assert!(
            (r - o).abs() <= (m.abs() + o.abs()) / 256.0,
            "{r} vs {o} (merged {m})"
        );
        moved += usize::from((m - o).abs() > (m.abs() + o.abs()) / 256.0);
    }
    assert!(
        moved > restored.len() / 2,
        "the merge changed {moved} weights"
    );
}
