//! Activation checkpointing by decoder layer, written once for every decoder: a backward
//! pass that keeps each layer's input only and recomputes the layer when its gradient is
//! needed, as HF's `gradient_checkpointing_enable()` does.

use std::sync::Mutex;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Gradients, Int, Tensor};
use burn_peft_adapters::AddAdapter;
use burn_peft_core::LinearAdapter;

/// A decoder seen as a stack of layers: what [`layerwise_gradients`] needs of a model family.
/// A family implements it in its own folder next to its forward pass, which it can then write
/// with the same methods.
pub trait DecoderStack: AddAdapter {
    /// What the layers of one forward pass share (rotary tables, attention masks).
    type Context;
    /// One decoder layer.
    type Layer: Module;

    /// The token embeddings `[batch, seq, hidden]` in the model's activation type, with a
    /// prompt-tuning adapter's virtual tokens in front when `with_prompt` is set; the attention
    /// mask widened to match, and the number of virtual tokens.
    fn embed(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
        with_prompt: bool,
    ) -> (Tensor<3>, Option<Tensor<2, Int>>, usize);

    /// The decoder layers, first to last.
    fn layers(&self) -> &[Self::Layer];

    /// What every layer of a forward pass over `seq` positions after `past` cached (or prefix)
    /// positions shares.
    fn layer_context(
        &self,
        past: usize,
        seq: usize,
        mask: Option<Tensor<2, Int>>,
        device: &Device,
    ) -> Self::Context;

    /// `layer`'s output for `x` (`[batch, seq, hidden]`), with `past` keys and values in front.
    fn layer_forward(
        &self,
        layer: &Self::Layer,
        x: Tensor<3>,
        context: &Self::Context,
        past: Option<(Tensor<4>, Tensor<4>)>,
    ) -> Tensor<3>;

    /// Layer `layer`'s keys and values (`[batch, kv_heads, prefix, head_dim]`) in a prefix
    /// `table`, in the activation type.
    fn prefix_keys_values(
        &self,
        table: Tensor<2>,
        layer: usize,
        batch: usize,
    ) -> (Tensor<4>, Tensor<4>);

    /// The norm after the last layer.
    fn final_norm(&self, x: Tensor<3>) -> Tensor<3>;
}

/// A prefix-tuning adapter's key/value table (`[prefix, 2·layers·kv_heads·head_dim]`), if one
/// is attached.
pub fn prefix_table<M: AddAdapter>(model: &M) -> Option<Tensor<2>> {
    model
        .prompt_host()
        .and_then(|h| h.prompt_slot().prefix())
        .map(|p| p.table())
}

/// Whether any adapter of `model` draws dropout masks.
fn draws_dropout<M: AddAdapter>(model: &M) -> bool {
    let mut any = false;
    model.clone().visit_adapted_linears(&mut |_, linear| {
        any |= linear.adapters().iter().any(LinearAdapter::draws_dropout);
    });
    any
}

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
/// tokens are in front (a model's `hidden_states` slices them off). `scale` is applied to the
/// loss before its backward pass (the optimizer's accumulation and loss scaling; see
/// `PeftOptimizer::backward_step_with`).
///
/// Dropout draws the same masks in both passes of a layer: the device is seeded from
/// `seed` and the layer's index before each, and no other call of this function seeds or
/// draws in between (a process-wide lock, taken only when an adapter has dropout), so
/// slices of a batch may run on threads. The masks differ from those of a run without
/// checkpointing; give each slice its own `seed`.
///
/// Every parameter may get a gradient from `head`; a prefix-tuning adapter's table
/// (through its projection MLP, if any) is differentiated once, after the layers.
///
/// ```
/// use burn::optim::GradientsParams;
/// use burn::tensor::{Device, Int, Tensor};
/// use burn_peft_adapters::{AddAdapter, LoraConfig};
/// use burn_peft_models::{Llama, LlamaConfig, layerwise_gradients};
///
/// let device = Device::flex().autodiff();
/// let mut model = Llama::init(&LlamaConfig::tiny(32), &device);
/// model.add_lora("default", &LoraConfig::new(4)).unwrap();
/// let ids = Tensor::<2, Int>::from_data([[1, 2, 3, 4]], &device);
/// let (loss, grads) = layerwise_gradients(
///     &model,
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
pub fn layerwise_gradients<M: DecoderStack>(
    model: &M,
    input_ids: Tensor<2, Int>,
    attention_mask: Option<Tensor<2, Int>>,
    head: impl FnOnce(Tensor<3>, usize) -> Tensor<1>,
    scale: &dyn Fn(Tensor<1>) -> Tensor<1>,
    seed: u64,
) -> (Tensor<1>, GradientsParams) {
    let device = input_ids.device();
    let [batch, _] = input_ids.dims();
    // Dropout draws from the device's one generator: seed it before each layer's forward
    // pass, the same in both passes, and let no other thread seed or draw in between.
    let dropout = draws_dropout(model);
    let seeded = |i: usize| {
        let guard = dropout.then(|| DROPOUT_DRAWS.lock().unwrap_or_else(|e| e.into_inner()));
        device.seed(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        guard
    };
    // The embedding stage, recorded (a gather from the embedding table): whether it
    // records anything says whether it trains (full fine-tuning, prompt tuning).
    let (embedded, mask, virtual_tokens) =
        model.embed(input_ids.clone(), attention_mask.clone(), true);
    let embedding_trains = embedded.is_tracked();
    let slot = model.prompt_host().map(|h| h.prompt_slot());
    let prefix_trains = slot.is_some_and(|s| s.prefix().is_some() && trains(s));

    // Below the lowest layer that trains, no gradient is needed (adapters on some layers
    // only); below the first, only if the embedding stage trains. A prefix enters every
    // layer.
    let lowest = if embedding_trains || prefix_trains {
        0
    } else {
        let layers = model.layers();
        (0..layers.len())
            .position(|i| trains(&layers[i]))
            // Nothing in the layers trains: the output part is all there is.
            .unwrap_or(layers.len())
    };

    // Forward, recording nothing: the parameters are detached and so is the input.
    let frozen = model.clone().no_grad();
    let table = prefix_table(&frozen);
    let past = |model: &M, table: &Option<Tensor<2>>, i: usize| {
        table
            .as_ref()
            .map(|t| model.prefix_keys_values(t.clone(), i, batch))
    };
    let past_len = past(&frozen, &table, 0).map_or(0, |(k, _)| k.dims()[2]);
    let context = model.layer_context(past_len, embedded.dims()[1], mask, &device);
    let mut inputs = Vec::with_capacity(model.layers().len());
    let mut x = embedded.clone().detach();
    for (i, layer) in frozen.layers().iter().enumerate() {
        if i >= lowest {
            inputs.push(x.clone());
        }
        let _draws = seeded(i);
        x = frozen.layer_forward(layer, x, &context, past(&frozen, &table, i));
    }
    drop(frozen);

    // The output part (final norm, head); every parameter is looked at, as `head` may
    // use any.
    let mut grads = GradientsParams::new();
    let top = x.require_grad();
    let loss = head(model.final_norm(top.clone()), virtual_tokens);
    let mut backward = scale(loss.clone()).backward();
    let mut gradient = top.grad_remove(&mut backward);
    take(&mut backward, model, &mut grads);
    drop((backward, top));

    // The layers, last to first. A prefix's table is a leaf of each layer's pass here;
    // its gradients are summed and taken through the table's own computation once, at the
    // end (with a projection MLP, that is one backward pass through it, not one a layer).
    let table = if prefix_trains {
        table.map(Tensor::require_grad)
    } else {
        table
    };
    let mut table_grad: Option<Tensor<2>> = None;
    for (i, layer) in model.layers().iter().enumerate().skip(lowest).rev() {
        let (Some(output_grad), Some(x)) = (gradient.take(), inputs.pop()) else {
            break;
        };
        let x = if i > lowest || embedding_trains {
            x.require_grad()
        } else {
            x
        };
        let y = {
            let _draws = seeded(i);
            model.layer_forward(layer, x.clone(), &context, past(model, &table, i))
        };
        if !y.is_tracked() {
            // Its trainable parameters take no part (an inactive or merged adapter), and
            // nothing below it trains.
            break;
        }
        let mut backward = (y * output_grad).sum().backward();
        gradient = x.grad_remove(&mut backward);
        take(&mut backward, layer, &mut grads);
        if let Some(g) = table.as_ref().and_then(|t| t.grad_remove(&mut backward)) {
            table_grad = Some(table_grad.map_or(g.clone(), |sum| sum + g));
        }
    }

    // The prefix's table and the embedding stage.
    if let (Some(table), Some(output_grad)) = (prefix_table(model), table_grad) {
        let mut backward = (table * output_grad).sum().backward();
        if let Some(host) = model.prompt_host() {
            take(&mut backward, host.prompt_slot(), &mut grads);
        }
    }
    if let (true, Some(output_grad)) = (embedding_trains, gradient) {
        // Only the embedding stage's parameters (the token table, a prompt's virtual tokens)
        // have gradients in this pass.
        let mut backward = (embedded * output_grad).sum().backward();
        take(&mut backward, model, &mut grads);
    }
    (loss.detach(), grads)
}

/// Held while a layer seeds the device and draws its dropout masks.
static DROPOUT_DRAWS: Mutex<()> = Mutex::new(());

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
