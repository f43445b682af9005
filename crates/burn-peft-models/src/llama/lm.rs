//! The Llama family's side of the model contract: [`CausalLm`], [`DecoderStack`] (checkpointing
//! by layer) and [`PretrainedWeights`].

use std::path::Path;

use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor};
use burn_peft_core::Precision;

use super::model::{DecoderLayer, LayerContext, Llama};
use crate::error::Result;
use crate::layerwise::{DecoderStack, layerwise_gradients};
use crate::lm::{CausalLm, PretrainedWeights};
use crate::tokenizer::TextTokenizer;

impl CausalLm for Llama {
    fn hidden_states(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Tensor<3> {
        Llama::hidden_states(self, input_ids, attention_mask)
    }

    fn output_logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        self.logits(hidden)
    }

    fn layerwise_gradients(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        head: &mut dyn FnMut(Tensor<3>) -> Tensor<1>,
        scale: &dyn Fn(Tensor<1>) -> Tensor<1>,
        seed: u64,
    ) -> (Tensor<1>, GradientsParams) {
        layerwise_gradients(
            self,
            input_ids,
            attention_mask,
            |hidden, virtual_tokens| {
                let [b, s, h] = hidden.dims();
                head(hidden.slice([0..b, virtual_tokens..s, 0..h]))
            },
            scale,
            seed,
        )
    }
}

impl DecoderStack for Llama {
    type Context = LayerContext;
    type Layer = DecoderLayer;

    fn embed(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        with_prompt: bool,
    ) -> (Tensor<3>, Option<Tensor<2, Int>>, usize) {
        Llama::embed(self, input_ids, attention_mask, with_prompt)
    }

    fn layers(&self) -> &[DecoderLayer] {
        &self.layers
    }

    fn layer_context(
        &self,
        past: usize,
        seq: usize,
        mask: Option<Tensor<2, Int>>,
        device: &Device,
    ) -> LayerContext {
        Llama::layer_context(self, past, seq, mask, device)
    }

    fn layer_forward(
        &self,
        layer: &DecoderLayer,
        x: Tensor<3>,
        context: &LayerContext,
        past: Option<(Tensor<4>, Tensor<4>)>,
    ) -> Tensor<3> {
        layer.forward(x, context, past).0
    }

    fn prefix_keys_values(
        &self,
        table: Tensor<2>,
        layer: usize,
        batch: usize,
    ) -> (Tensor<4>, Tensor<4>) {
        Llama::prefix_keys_values(self, table, layer, batch)
    }

    fn final_norm(&self, x: Tensor<3>) -> Tensor<3> {
        self.norm.forward(x)
    }
}

impl PretrainedWeights for Llama {
    fn save_pretrained(
        &self,
        dir: &Path,
        tokenizer: Option<&TextTokenizer>,
        chat_template: Option<&str>,
    ) -> Result<()> {
        Llama::save_pretrained(self, dir, tokenizer, chat_template)
    }

    fn from_pretrained(dir: &Path, device: &Device) -> Result<Self> {
        Llama::from_pretrained(dir, device)
    }

    fn set_precision(&mut self, precision: Precision) {
        Llama::set_precision(self, precision)
    }
}

impl Llama {
    /// [`layerwise_gradients`] on this model: the gradients of `scale(head(hidden,
    /// virtual_tokens))` computed one decoder layer at a time.
    pub fn layerwise_gradients(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        head: impl FnOnce(Tensor<3>, usize) -> Tensor<1>,
        scale: &dyn Fn(Tensor<1>) -> Tensor<1>,
        seed: u64,
    ) -> (Tensor<1>, GradientsParams) {
        layerwise_gradients(self, input_ids, attention_mask, head, scale, seed)
    }
}
