//! Attention shared by the decoder and the encoder.

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, FloatDType, Int, Tensor};

/// softmax(q·kᵀ / √d, masked) · v for `[batch, heads, len, head_dim]` inputs; `mask` is true
/// where attention is forbidden and broadcasts over heads. The softmax runs in f32 whatever the
/// inputs are stored in, as HF's eager attention does.
pub fn scaled_dot_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    let d = q.dims()[3];
    let scores = q.matmul(k.swap_dims(2, 3)) / (d as f64).sqrt();
    let scores = match mask {
        Some(m) => scores.mask_fill(m, f32::NEG_INFINITY),
        None => scores,
    };
    let dtype = scores.dtype();
    softmax(scores.cast(FloatDType::F32), 3)
        .cast(dtype)
        .matmul(v)
}

/// `[batch, 1, queries, keys]` mask that hides padded keys (attention mask 0).
pub fn padding_mask(attention_mask: Tensor<2, Int>, queries: usize) -> Tensor<4, Bool> {
    let [b, t] = attention_mask.dims();
    attention_mask
        .equal_elem(0)
        .reshape([b, 1, 1, t])
        .expand([b, 1, queries, t])
}
