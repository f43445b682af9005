//! Prefix and prompt tuning start from host-drawn values when seeded: the same on every backend.

use burn::tensor::{Device, Tensor};
use burn_peft_adapters::{
    PrefixTuning, PrefixTuningConfig, PromptGeometry, PromptTuning, PromptTuningConfig,
};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn moments(v: &[f32]) -> (f32, f32) {
    let mean = v.iter().sum::<f32>() / v.len() as f32;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
    (mean, var)
}

#[test]
fn seeded_prefix_and_prompt_inits_ignore_the_device_generator() {
    let device = Device::flex();
    let geometry = PromptGeometry {
        num_layers: 2,
        hidden_size: 32,
        num_kv_heads: 2,
        head_dim: 8,
    };
    for projection in [false, true] {
        let mut config = PrefixTuningConfig::new(6).fill(&geometry).unwrap();
        config.prefix_projection = projection;
        config.init_seed = Some(5);
        let init = |device_seed| {
            device.seed(device_seed);
            PrefixTuning::init(&config, &device).unwrap()
        };
        let (one, two) = (init(1), init(2));
        assert_eq!(values(one.embedding.val()), values(two.embedding.val()));
        if projection {
            let (a, b) = (one.projection.unwrap(), two.projection.unwrap());
            assert_eq!(values(a.first.weight.val()), values(b.first.weight.val()));
            let bias = |p: &burn_peft_adapters::PrefixProjection| {
                values(p.second.bias.as_ref().unwrap().val())
            };
            assert_eq!(bias(&a), bias(&b));
            // Kaiming-uniform, bound 1/sqrt(fan_in) = 1/sqrt(16).
            assert!(values(a.first.weight.val()).iter().all(|v| v.abs() < 0.25));
        } else {
            // N(0, 1) over 6 × 64 draws.
            let (mean, var) = moments(&values(one.embedding.val()));
            assert!(mean.abs() < 0.2 && (var - 1.0).abs() < 0.2, "{mean} {var}");
        }
        let mut other = config.clone();
        other.init_seed = Some(6);
        device.seed(1);
        let other = PrefixTuning::init(&other, &device).unwrap();
        assert_ne!(values(one.embedding.val()), values(other.embedding.val()));
    }
    let draw = |init_seed, device_seed| {
        let mut prompt = PromptTuningConfig::new(4);
        prompt.init_seed = init_seed;
        device.seed(device_seed);
        values(PromptTuning::random(&prompt, 32, &device).embedding.val())
    };
    assert_eq!(draw(Some(9), 1), draw(Some(9), 2));
    // Unseeded, the device generator decides.
    assert_ne!(draw(None, 1), draw(None, 2));
}
