//! Grouped-query attention against its definition: a model whose key/value heads each serve a
//! group of query heads computes what the same model computes with every key/value head copied
//! for each query head of its group (HF's `repeat_kv`), as plain multi-head attention. Values,
//! gradients and cached decoding, with padding.

use burn::module::Param;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_peft_models::{KvCache, Llama, LlamaConfig};

/// A `[in, kv_heads·head_dim]` projection with each head's columns repeated `groups` times
/// (query head `j` reads key/value head `j / groups`).
fn repeat_heads(w: Tensor<2>, kv_heads: usize, groups: usize) -> Tensor<2> {
    let [rows, cols] = w.dims();
    let d = cols / kv_heads;
    w.reshape([rows, kv_heads, 1, d])
        .expand([rows, kv_heads, groups, d])
        .reshape([rows, kv_heads * groups * d])
}

/// `model` with as many key/value heads as query heads, computing the same function.
fn ungrouped(model: &Llama) -> Llama {
    let mut out = model.clone();
    let (h, kvh) = (
        out.config.num_attention_heads,
        out.config.num_key_value_heads,
    );
    for layer in &mut out.layers {
        let attn = &mut layer.self_attn;
        for proj in [&mut attn.k_proj, &mut attn.v_proj] {
            let w = repeat_heads(proj.base.weight.val(), kvh, h / kvh);
            proj.base.weight = Param::from_tensor(w).set_require_grad(false);
        }
        attn.num_kv_heads = h;
    }
    out.config.num_key_value_heads = h;
    out
}

fn ints(v: Vec<i64>, shape: [usize; 2], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// The loss over a padded batch and the embedding table's gradient, which every path through
/// attention (queries, keys, values) reaches.
fn loss_and_embedding_grad(model: &Llama, device: &Device) -> (f32, Tensor<2>) {
    let mut model = model.clone();
    model.embed_tokens.weight = model.embed_tokens.weight.clone().set_require_grad(true);
    let ids = ints(vec![3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 0], [2, 6], device);
    let mask = ints(vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0], [2, 6], device);
    let loss = model.lm_loss(ids, Some(mask));
    let grads = loss.backward();
    let grad = model
        .embed_tokens
        .weight
        .grad(&grads)
        .expect("the embedding trains");
    (loss.into_scalar::<f32>(), grad)
}

#[test]
fn grouped_heads_equal_repeated_key_value_heads() {
    let device = Device::flex().autodiff();
    device.seed(21);
    let config = LlamaConfig::tiny(40);
    assert_eq!(
        config.num_attention_heads / config.num_key_value_heads,
        2,
        "the tiny shape groups two query heads per key/value head"
    );
    let grouped = Llama::init(&config, &device);
    let plain = ungrouped(&grouped);

    let ids = ints(vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [2, 5], &device);
    let mask = ints(vec![1, 1, 1, 1, 1, 1, 1, 1, 0, 0], [2, 5], &device);
    let a = grouped.forward(ids.clone(), Some(mask.clone()));
    let b = plain.forward(ids, Some(mask));
    assert!(max_diff(a.clone(), b) < 1e-5);
    assert!(
        a.abs().max().into_scalar::<f32>() > 1e-3,
        "logits are not trivial"
    );

    let (loss_a, grad_a) = loss_and_embedding_grad(&grouped, &device);
    let (loss_b, grad_b) = loss_and_embedding_grad(&plain, &device);
    assert!((loss_a - loss_b).abs() < 1e-5, "{loss_a} against {loss_b}");
    assert!(grad_a.clone().abs().max().into_scalar::<f32>() > 1e-4);
    assert!(max_diff(grad_a, grad_b) < 1e-5);

    // Cached decoding: a prompt, then one token at a time.
    let tokens = [4u32, 8, 15, 16, 23, 2];
    let mut caches = (KvCache::new(), KvCache::new());
    for (i, part) in [&tokens[..3], &tokens[3..4], &tokens[4..5], &tokens[5..]]
        .iter()
        .enumerate()
    {
        let part = ints(
            part.iter().map(|&t| t as i64).collect(),
            [1, part.len()],
            &device,
        );
        let a = grouped.forward_cached(part.clone(), &mut caches.0);
        let b = plain.forward_cached(part, &mut caches.1);
        assert!(max_diff(a, b) < 1e-5, "cached step {i}");
    }
}
