//! Activation checkpointing by decoder layer: a backward pass that keeps each layer's input
//! only and recomputes the layer when its gradient is needed, as HF's
//! `gradient_checkpointing_enable()` does.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Gradients, Int, Tensor};

use burn_peft_adapters::PromptLearning;

use super::model::Llama;

impl Llama {
    /// The gradients of `scale(loss)` where `loss = head(hidden, virtual_tokens)` of the final
    /// hidden states, computed one decoder layer at a time; returns the loss (detached) and
    /// the gradients of every trainable parameter.
    ///
    /// The forward pass records nothing and keeps only each layer's input (`[batch, seq,
    /// hidden]`). The backward pass then runs the output part (final norm and `head`), and
    /// each layer from the last to the first: its forward pass again, this time recorded, and
    /// its backward pass, which turns the gradient of its output into that of its input and
    /// of its parameters. So a step holds one layer's activations instead of all of them, for
    /// one more forward pass of the layers (about a third more compute for full fine-tuning,
    /// half as much again for adapters, whose frozen base needs no weight gradients). The
    /// gradients equal those of `scale(head(...)).backward()` up to rounding.
    ///
    /// `head` gets the final hidden states (after the last norm) over the virtual prompt
    /// tokens, if a prompt-tuning adapter is attached, and the input, and how many virtual
    /// tokens are in front (`Llama::hidden_states` slices them off). `scale` is applied to the
    /// loss before its backward pass (the optimizer's accumulation and loss scaling; see
    /// `PeftOptimizer::backward_step_with`).
    ///
    /// Dropout draws the same masks in both passes of a layer: the device is seeded from
    /// `seed` and the layer's index before each (so the masks differ from those of a run
    /// without checkpointing).
    ///
    /// ```
    /// use burn::optim::GradientsParams;
    /// use burn::tensor::{Device, Int, Tensor};
    /// use burn_peft_adapters::{AddAdapter, LoraConfig};
    /// use burn_peft_models::{Llama, LlamaConfig};
    ///
    /// let device = Device::flex().autodiff();
    /// let mut model = Llama::init(&LlamaConfig::tiny(32), &device);
    /// model.add_lora("default", &LoraConfig::new(4)).unwrap();
    /// let ids = Tensor::<2, Int>::from_data([[1, 2, 3, 4]], &device);
    /// let (loss, grads) = model.layerwise_gradients(
    ///     ids.clone(),
    ///     None,
    ///     |hidden, virtual_tokens| model.lm_loss_from_hidden(hidden, virtual_tokens, ids.clone(), None),
    ///     &|loss| loss,
    ///     7,
    /// );
    /// assert!(loss.into_scalar::<f32>().is_finite());
    /// // q_proj and v_proj of both layers: A and B each.
    /// assert_eq!(grads.len(), 8);
    /// ```
    pub fn layerwise_gradients(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        head: impl FnOnce(Tensor<3>, usize) -> Tensor<1>,
        scale: &dyn Fn(Tensor<1>) -> Tensor<1>,
        seed: u64,
    ) -> (Tensor<1>, GradientsParams) {
        let device = input_ids.device();
        let [batch, _] = input_ids.dims();
        let layer_seed = |i: usize| seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        // The embedding stage, recorded: it keeps only the ids (a gather), and tells whether
        // anything before the first layer trains (full fine-tuning, prompt tuning).
        let (embedded, mask, virtual_tokens) =
            self.embed(input_ids.clone(), attention_mask.clone(), true);
        let embedding_trains = embedded.is_tracked();

        // Below the lowest layer that trains, no gradient is needed (adapters on some layers
        // only); below the first, only if the embedding stage trains.
        let lowest = if embedding_trains {
            0
        } else {
            // A prefix enters every layer.
            let prefix_trains = matches!(self.prompt_learning, Some(PromptLearning::Prefix(_)))
                && trains(&self.prompt_learning);
            match (0..self.layers.len()).position(|i| prefix_trains || trains(&self.layers[i])) {
                Some(i) => i,
                // Nothing in the layers trains: the output part is all there is.
                None => self.layers.len(),
            }
        };

        // Forward, recording nothing: the parameters are detached and so is the input.
        let frozen = self.clone().no_grad();
        let past = frozen.prefix_keys_values(batch, None);
        let past_len = past
            .as_ref()
            .and_then(|p| p.first())
            .map_or(0, |(k, _)| k.dims()[2]);
        let context = self.layer_context(past_len, embedded.dims()[1], mask, &device);
        let mut inputs = Vec::with_capacity(self.layers.len());
        let mut x = embedded.clone().detach();
        for (i, layer) in frozen.layers.iter().enumerate() {
            device.seed(layer_seed(i));
            let past_i = past.as_ref().and_then(|p| p.get(i).cloned());
            let (y, _) = layer.forward(x.clone(), &context, past_i);
            inputs.push(x);
            x = y;
        }
        drop((frozen, past));

        let mut grads = GradientsParams::new();
        // The output part: final norm, head.
        let top = x.require_grad();
        let loss = head(self.norm.forward(top.clone()), virtual_tokens);
        let mut backward = scale(loss.clone()).backward();
        let mut gradient = top.grad_remove(&mut backward);
        take(&mut backward, &self.norm, &mut grads);
        take(&mut backward, &self.lm_head, &mut grads);
        take(&mut backward, &self.embed_tokens, &mut grads);
        drop(backward);

        // The layers, last to first.
        for (i, layer) in self.layers.iter().enumerate().skip(lowest).rev() {
            let (Some(output_grad), Some(x)) = (gradient.take(), inputs.pop()) else {
                break;
            };
            let x = if i > lowest || embedding_trains {
                x.require_grad()
            } else {
                x
            };
            device.seed(layer_seed(i));
            let past_i = self
                .prefix_keys_values(batch, Some(i))
                .and_then(|mut p| p.pop());
            let (y, _) = layer.forward(x.clone(), &context, past_i);
            let mut backward = (y * output_grad).sum().backward();
            gradient = x.grad_remove(&mut backward);
            take(&mut backward, layer, &mut grads);
            take(&mut backward, &self.prompt_learning, &mut grads);
        }

        // The embedding stage.
        if let (true, Some(output_grad)) = (embedding_trains, gradient) {
            let mut backward = (embedded * output_grad).sum().backward();
            take(&mut backward, &self.embed_tokens, &mut grads);
            take(&mut backward, &self.prompt_learning, &mut grads);
        }
        (loss.detach(), grads)
    }
}

/// Whether any parameter of `module` trains.
fn trains<M: Module>(module: &M) -> bool {
    struct Any(bool);
    impl ModuleVisitor for Any {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0 |= param.is_require_grad();
        }
    }
    let mut any = Any(false);
    module.visit(&mut any);
    any.0
}

/// Moves the gradients of `module`'s parameters from `from` into `into`, adding them to what
/// is there (a tied embedding gets one from the output layer and one from the input).
fn take<M: Module>(from: &mut Gradients, module: &M, into: &mut GradientsParams) {
    struct Take<'a> {
        from: &'a mut Gradients,
        into: &'a mut GradientsParams,
    }
    impl ModuleVisitor for Take<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !param.is_require_grad() {
                return;
            }
            let Some(grad) = param.val().grad_remove(self.from) else {
                return;
            };
            let sum = match self.into.remove::<D>(param.id) {
                Some(earlier) => earlier + grad,
                None => grad,
            };
            self.into.register(param.id, sum);
        }
    }
    module.visit(&mut Take { from, into });
}
