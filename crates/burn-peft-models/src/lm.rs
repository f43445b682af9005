//! The contract between the models and everything above them: a causal language model
//! ([`CausalLm`]), the frozen base behind its adapters ([`BaseView`]), and a model family's
//! weights as a Hugging Face directory ([`PretrainedWeights`]). The training loop and the
//! forgetting methods are written against these traits and name no model.

use std::path::Path;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor};
use burn_peft_adapters::AddAdapter;
use burn_peft_core::Precision;

use crate::error::Result;
use crate::tokenizer::TextTokenizer;

/// A causal language model: hidden states for token ids `[batch, seq]`, and the output layer
/// that turns them into logits, where position `t` predicts token `t + 1`.
pub trait CausalLm: Module + Clone {
    /// Final hidden states `[batch, seq, hidden]`; `attention_mask` is 1 for real tokens and 0
    /// for padding.
    fn hidden_states(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3>;

    /// Logits `[batch, seq, vocab]` of hidden states.
    fn output_logits(&self, hidden: Tensor<3>) -> Tensor<3>;

    /// The gradients of `scale(head(hidden))`, where `hidden` is what
    /// [`hidden_states`](Self::hidden_states) returns, computed one decoder layer at a time:
    /// the forward pass keeps each layer's input only, and the backward pass recomputes each
    /// layer before its own backward pass. Returns `head`'s loss (detached) and the gradients.
    /// Dropout masks are drawn from seeds derived from `seed`, the same in both passes.
    ///
    /// The default runs one plain forward and backward pass (no checkpointing), so a model
    /// that has no layers to recompute still trains with `checkpoint_layers` on.
    fn layerwise_gradients(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        head: &mut dyn FnMut(Tensor<3>) -> Tensor<1>,
        scale: &dyn Fn(Tensor<1>) -> Tensor<1>,
        seed: u64,
    ) -> (Tensor<1>, GradientsParams) {
        input_ids.device().seed(seed);
        let loss = head(self.hidden_states(input_ids, attention_mask));
        let grads = GradientsParams::from_grads(scale(loss.clone()).backward(), self);
        (loss.detach(), grads)
    }

    /// Logits `[batch, seq, vocab]` for token ids.
    fn token_logits(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        self.output_logits(self.hidden_states(input_ids, attention_mask))
    }

    /// Logits `[rows, vocab]` of hidden states `[rows, hidden]` (rows picked from any
    /// positions): what the chunked losses project a chunk of rows with.
    fn row_logits(&self, hidden: Tensor<2>) -> Tensor<2> {
        let [rows, _] = hidden.dims();
        let logits = self.output_logits(hidden.unsqueeze());
        let [_, _, vocab] = logits.dims();
        logits.reshape([rows, vocab])
    }
}

/// A model that can show its frozen base: the same weights with every adapter switched off and
/// prompt learning removed. burn tensors are shared handles, so the view costs no weights.
/// Every [`AddAdapter`] model has it.
pub trait BaseView: Sized {
    /// The base model sharing this model's weights, or `None` when nothing is switched off
    /// (full fine-tuning: the base itself trains).
    fn base_view(&self) -> Option<Self>;
}

impl<M: AddAdapter> BaseView for M {
    fn base_view(&self) -> Option<Self> {
        let mut base = self.clone();
        let has_prompt = base.remove_prompt_learning().is_some();
        let has_linear = !base.adapter_names().is_empty();
        if has_linear {
            base.disable_adapters().ok()?;
        }
        (has_prompt || has_linear).then_some(base)
    }
}

/// A model family's weights as a Hugging Face model directory (`config.json`,
/// `model.safetensors`, the tokenizer): what full fine-tuning saves and resumes from.
pub trait PretrainedWeights: Sized {
    /// Writes the model (merged adapters included) to `dir` as an HF directory, with the
    /// tokenizer and chat template when given.
    fn save_pretrained(
        &self,
        dir: &Path,
        tokenizer: Option<&TextTokenizer>,
        chat_template: Option<&str>,
    ) -> Result<()>;

    /// Reads an HF model directory that [`save_pretrained`](Self::save_pretrained) wrote.
    fn from_pretrained(dir: &Path, device: &Device) -> Result<Self>;

    /// Sets what the model computes in and stores its frozen weights in that type.
    fn set_precision(&mut self, precision: Precision);
}
