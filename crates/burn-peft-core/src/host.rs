//! The layer that hosts adapters over a frozen base linear layer.

use burn::module::Module;
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::module::linear;
use burn::tensor::{DType, Device, FloatDType, Tensor};

use crate::error::{PeftError, Result};

/// One adapter method's behaviour inside an [`AdaptedLinear`].
///
/// Implemented by the adapter crate's modules (LoRA, DoRA, IA3). The host calls, for every
/// active adapter that is not merged, [`transform_input`](Self::transform_input) before the base
/// layer and [`forward`](Self::forward) after it.
pub trait LinearAdapter: Module + Sized {
    /// PEFT's `peft_type` of this adapter (`"LORA"`, `"IA3"`).
    fn peft_type(&self) -> &'static str;

    /// Scales or otherwise changes the input of the base layer (IA3 on feed-forward layers).
    /// The default leaves it alone.
    fn transform_input<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        x
    }

    /// Returns the layer output with this adapter's contribution added to `out`.
    ///
    /// `x` is the layer input, `base` the frozen base layer and `base_out` its output on `x`.
    fn forward<const D: usize>(
        &self,
        x: &Tensor<D>,
        base: &Linear,
        base_out: &Tensor<D>,
        out: Tensor<D>,
    ) -> Tensor<D>;

    /// The base weight (burn layout `[in, out]`) with this adapter folded in.
    /// May remember what [`unmerge`](Self::unmerge) needs.
    fn merge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>>;

    /// Undoes [`merge`](Self::merge) on `weight`.
    fn unmerge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>>;

    /// A new base weight that this adapter's initialization computed (PiSSA moves the principal
    /// components out of the base). Called once when the adapter is added.
    fn take_base_update(&mut self) -> Option<Tensor<2>> {
        None
    }

    /// What the base bias is multiplied by when this adapter is merged (and divided by, plus
    /// 1e-8, when it is unmerged): IA3 on output-scaled layers. `None` leaves the bias alone.
    fn merged_bias_factor(&self) -> Option<Tensor<1>> {
        None
    }

    /// Whether the forward pass draws random masks (dropout) while training: checkpointing by
    /// layer then seeds each layer's draws so that its two passes see the same masks.
    fn draws_dropout(&self) -> bool {
        false
    }

    /// Sets whether this adapter's parameters get gradients.
    fn set_trainable(self, trainable: bool) -> Self {
        self.set_require_grad(trainable)
    }
}

/// A linear layer that hosts named adapters over a frozen base.
///
/// The base gets no gradient and no optimizer state; adapters are added, activated, merged and
/// deleted by name, usually through [`PeftModel`](crate::PeftModel) on the whole model.
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::{Device, Tensor};
/// use burn_peft_core::{AdaptedLinear, NoAdapter};
///
/// let device = Device::flex();
/// let layer: AdaptedLinear<NoAdapter> = AdaptedLinear::new(LinearConfig::new(4, 3).init(&device));
/// let y = layer.forward(Tensor::<2>::ones([2, 4], &device));
/// assert_eq!(y.dims(), [2, 3]);
/// ```
#[derive(Module, Debug)]
pub struct AdaptedLinear<A: LinearAdapter> {
    /// The frozen base layer.
    pub base: Linear,
    /// The adapters, in the order they were added.
    pub(crate) adapters: Vec<A>,
    /// The adapters' names, parallel to `adapters`.
    #[module(skip)]
    pub(crate) names: Vec<String>,
    /// Names of the adapters that run in `forward`.
    #[module(skip)]
    pub(crate) active: Vec<String>,
    /// Names of the adapters folded into the base weight, in merge order.
    #[module(skip)]
    pub(crate) merged: Vec<String>,
    /// When true, `forward` runs the base alone.
    #[module(skip)]
    pub(crate) disabled: bool,
}

impl<A: LinearAdapter> AdaptedLinear<A> {
    /// Wraps `base` and freezes it. On flex, a wide weight is laid out for the CPU's products
    /// (see [`layout_for_products`]).
    pub fn new(mut base: Linear) -> Self {
        // Not under a reparameterization (burn's own LoRA): mapping the parameter drops it.
        if base.weight.adapter().is_none() {
            base.weight = base.weight.map(layout_for_products);
        }
        Self {
            base: base.no_grad(),
            adapters: Vec::new(),
            names: Vec::new(),
            active: Vec::new(),
            merged: Vec::new(),
            disabled: false,
        }
    }

    /// `[in_features, out_features]` of the base layer.
    pub fn dims(&self) -> [usize; 2] {
        self.base.weight.shape().dims()
    }

    /// The adapters, in the order they were added (parallel to [`names`](Self::names)).
    pub fn adapters(&self) -> &[A] {
        &self.adapters
    }

    /// The adapters, mutably; they can be changed but not added or removed here.
    pub fn adapters_mut(&mut self) -> &mut [A] {
        &mut self.adapters
    }

    /// The adapters' names, in the order they were added.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The names of the adapters that run in `forward`.
    pub fn active(&self) -> &[String] {
        &self.active
    }

    /// The names of the adapters folded into the base weight, in merge order.
    pub fn merged(&self) -> &[String] {
        &self.merged
    }

    /// Whether adapters are switched off, so that `forward` runs the base alone.
    pub fn is_disabled(&self) -> bool {
        self.disabled
    }

    /// Switches this layer's adapters off (`forward` runs the base alone) or on again;
    /// [`PeftModel::disable_adapters`](crate::PeftModel::disable_adapters) does it for every layer.
    pub fn set_disabled(&mut self, disabled: bool) {
        self.disabled = disabled;
    }

    /// Runs the base and every active, unmerged adapter.
    ///
    /// The output has `x`'s element type. A base weight stored in another type (an f32 master
    /// weight trained under `--dtype bf16`) is cast to it for the product; adapters compute in
    /// their own type and add their result back in `x`'s (see [`Precision`](crate::Precision)).
    ///
    /// Leading dimensions are folded into rows first, as PyTorch's `linear` does: every product
    /// is then one `[rows, in] · [in, out]` matrix product, and a trainable weight's gradient is
    /// one product over all rows, not one per batch entry summed afterwards.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if D <= 2 {
            return self.forward_rows(x);
        }
        let dims = x.dims();
        let rows = dims[..D - 1].iter().product::<usize>();
        let out = self.forward_rows(x.reshape([rows, dims[D - 1]]));
        let mut out_dims = dims;
        out_dims[D - 1] = out.dims()[1];
        out.reshape(out_dims)
    }

    fn forward_rows<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let running: Vec<&A> = self.running_adapters().collect();
        if running.is_empty() {
            return self.base_forward(x);
        }
        let mut base_in = x.clone();
        for adapter in &running {
            base_in = adapter.transform_input(base_in);
        }
        let base_out = self.base_forward(base_in);
        let mut out = base_out.clone();
        for adapter in running {
            out = adapter.forward(&x, &self.base, &base_out, out);
        }
        out
    }

    /// The base layer on `x`, its parameters cast to `x`'s element type where they differ.
    fn base_forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // One `val()`: under a reparameterization (burn's own LoRA) it builds the weight.
        let dtype = x.dtype();
        let weight = self.base.weight.val();
        let bias = self.base.bias.as_ref().map(|b| b.val());
        if weight.dtype() == dtype {
            return linear(x, weight, bias);
        }
        linear(x, weight.cast(dtype), bias.map(|b| b.cast(dtype)))
    }

    /// Stores the base weight and bias in `dtype` if they are frozen (trainable ones keep their
    /// f32 master copy and are cast where they are used). Adapters are not touched.
    pub fn cast_frozen_base(&mut self, dtype: FloatDType) {
        self.base.weight = cast_if_frozen(self.base.weight.clone(), dtype);
        self.base.bias = self.base.bias.take().map(|b| cast_if_frozen(b, dtype));
    }

    fn running_adapters(&self) -> impl Iterator<Item = &A> {
        self.adapters
            .iter()
            .zip(&self.names)
            .filter(move |(_, name)| {
                !self.disabled && self.active.contains(name) && !self.merged.contains(name)
            })
            .map(|(a, _)| a)
    }

    /// The index of the adapter called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The adapter called `name`.
    pub fn adapter(&self, name: &str) -> Option<&A> {
        self.position(name).map(|i| &self.adapters[i])
    }

    /// The adapter called `name`, mutably.
    pub fn adapter_mut(&mut self, name: &str) -> Option<&mut A> {
        self.position(name).map(move |i| &mut self.adapters[i])
    }

    /// Adds an adapter; it is inactive until [`set_active`](Self::set_active) names it.
    pub fn add(&mut self, name: &str, adapter: A) -> Result<()> {
        if self.position(name).is_some() {
            return Err(PeftError::DuplicateAdapter(name.to_string()));
        }
        let mut adapter = adapter;
        if let Some(weight) = adapter.take_base_update() {
            let dtype = self.base.weight.val().dtype();
            self.set_base_weight(weight.cast(dtype));
        }
        self.adapters.push(adapter.set_trainable(false));
        self.names.push(name.to_string());
        Ok(())
    }

    /// Makes exactly `names` (those this layer holds) active and trainable.
    pub fn set_active(&mut self, names: &[String]) {
        self.active = names
            .iter()
            .filter(|n| self.names.contains(n))
            .cloned()
            .collect();
        let adapters = std::mem::take(&mut self.adapters);
        self.adapters = adapters
            .into_iter()
            .zip(&self.names)
            .map(|(a, n)| a.set_trainable(self.active.contains(n)))
            .collect();
    }

    /// Removes the adapter called `name`; it must not be merged.
    pub fn delete(&mut self, name: &str) -> Result<Option<A>> {
        if self.merged.iter().any(|m| m == name) {
            return Err(PeftError::AdapterMerged(name.to_string()));
        }
        let Some(i) = self.position(name) else {
            return Ok(None);
        };
        self.names.remove(i);
        self.active.retain(|n| n != name);
        Ok(Some(self.adapters.remove(i)))
    }

    /// Folds the named adapters (those this layer holds and has not merged) into the base weight.
    pub fn merge(&mut self, names: &[String]) -> Result<()> {
        for name in names {
            if self.merged.contains(name) {
                continue;
            }
            let Some(i) = self.position(name) else {
                continue;
            };
            let weight = self.base.weight.val().detach();
            let dtype = weight.dtype();
            let merged = self.adapters[i].merge(weight.cast(FloatDType::F32))?;
            self.set_base_weight(merged.cast(dtype));
            if let Some(factor) = self.adapters[i].merged_bias_factor() {
                self.map_bias(|b| b * factor);
            }
            self.merged.push(name.clone());
        }
        Ok(())
    }

    /// Undoes every merge, last merged first.
    pub fn unmerge(&mut self) -> Result<()> {
        while let Some(name) = self.merged.pop() {
            let i = self
                .position(&name)
                .ok_or_else(|| PeftError::UnknownAdapter(name.clone()))?;
            let weight = self.base.weight.val().detach();
            let dtype = weight.dtype();
            let restored = self.adapters[i].unmerge(weight.cast(FloatDType::F32))?;
            self.set_base_weight(restored.cast(dtype));
            if let Some(factor) = self.adapters[i].merged_bias_factor() {
                self.map_bias(|b| b / (factor + 1e-8));
            }
        }
        Ok(())
    }

    fn set_base_weight(&mut self, weight: Tensor<2>) {
        let param = self.base.weight.clone().map(|_| weight);
        self.base.weight = param.set_require_grad(false);
    }

    fn map_bias(&mut self, f: impl FnOnce(Tensor<1>) -> Tensor<1>) {
        if let Some(bias) = self.base.bias.take() {
            let current = bias.val().detach();
            let dtype = current.dtype();
            let value = f(current.cast(FloatDType::F32)).cast(dtype);
            self.base.bias = Some(bias.map(|_| value).set_require_grad(false));
        }
    }

    /// The base layer alone, with whatever is merged into it, and no adapters.
    pub fn into_base(self) -> Linear {
        self.base
    }
}

/// `param` stored in `dtype` when it gets no gradient. Unchanged when it trains, when it is in
/// `dtype` already, and when it carries burn's own LoRA reparameterization (re-wrapping the value
/// would drop it).
pub fn cast_if_frozen<const D: usize>(
    param: Param<Tensor<D>>,
    dtype: FloatDType,
) -> Param<Tensor<D>> {
    if param.is_require_grad() || param.adapter().is_some() || param.base().dtype() == dtype.into()
    {
        return param;
    }
    param.map(|t| t.cast(dtype)).set_require_grad(false)
}

/// Lays out a linear layer's `[in, out]` weight for the matrix products of a training step on
/// flex; the values and the shape do not change, and neither does anything on other backends.
///
/// A layer computes `x · W` forward and `g · Wᵀ` for its input's gradient. burn-flex hands both
/// to the `gemm` crate as strided views, and gemm runs a product whose right operand is
/// transposed well below its usual speed once the inner dimension grows past a thousand or so
/// (figures in `docs/benchmarks.md`, "Weight layout on flex"). With
/// `W` stored row-major that slow product is the gradient's, over `out`; stored column-major
/// (the `[out, in]` layout PyTorch keeps) it is the forward's, over `in`. So a weight with more
/// outputs than inputs (a feed-forward layer's gate and up projections, an untied output
/// layer) is stored column-major, and the others stay row-major: the slow orientation then
/// always has the smaller inner dimension, where it runs at full speed.
///
/// Applied to f32 weights on flex only, when this crate's `flex` feature is on (its default,
/// which the `burn-peft` facade and CLI keep); a weight of another type or on another device
/// is returned as it is. [`AdaptedLinear::new`] applies it to its base; a model's untied output
/// layer calls it itself.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use burn_peft_core::layout_for_products;
///
/// let device = Device::flex();
/// let w = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device);
/// let laid_out = layout_for_products(w.clone());
/// // The same matrix, only stored differently.
/// assert_eq!(laid_out.to_data(), w.to_data());
/// ```
pub fn layout_for_products(weight: Tensor<2>) -> Tensor<2> {
    if !column_major_pays(&weight) {
        return weight;
    }
    // A dense [out, in] copy, seen through a transposed view as [in, out].
    let device = weight.device();
    Tensor::<2>::from_data(weight.transpose().into_data(), &device).transpose()
}

/// Undoes [`layout_for_products`] for a weight about to train: a trainable weight is stored
/// row-major again, since burn-flex's element-wise operations (the optimizer's update among
/// them) keep a column-major weight's layout and walk its row-major gradient across the
/// grain. Returns other weights as they are.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use burn_peft_core::{layout_for_products, layout_for_training};
///
/// let device = Device::flex();
/// let w = Tensor::<2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &device);
/// let back = layout_for_training(layout_for_products(w.clone()));
/// assert_eq!(back.to_data(), w.to_data());
/// ```
pub fn layout_for_training(weight: Tensor<2>) -> Tensor<2> {
    if !column_major_pays(&weight) {
        return weight;
    }
    let device = weight.device();
    Tensor::from_data(weight.into_data(), &device)
}

/// The weights [`layout_for_products`] stores column-major: f32 on flex, more outputs than
/// inputs.
fn column_major_pays(weight: &Tensor<2>) -> bool {
    let [d_in, d_out] = weight.dims();
    d_out > d_in && weight.dtype() == DType::F32 && is_flex(&weight.device())
}

/// Whether `device` is burn's flex CPU backend, with or without autodiff.
fn is_flex(device: &Device) -> bool {
    #[cfg(feature = "flex")]
    return device.clone().without_autodiff() == Device::flex();
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

/// An adapter type with no adapters, for models that only need the host's plumbing (and for
/// doc examples). Its methods are never called: an `AdaptedLinear<NoAdapter>` cannot hold one.
#[derive(Module, Debug)]
pub struct NoAdapter;

impl LinearAdapter for NoAdapter {
    fn peft_type(&self) -> &'static str {
        "NONE"
    }

    fn forward<const D: usize>(
        &self,
        _x: &Tensor<D>,
        _base: &Linear,
        _base_out: &Tensor<D>,
        out: Tensor<D>,
    ) -> Tensor<D> {
        out
    }

    fn merge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        Ok(weight)
    }

    fn unmerge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        Ok(weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::{Distribution, TensorData, Tolerance};

    fn close(ours: Tensor<2>, reference: Tensor<2>) {
        ours.into_data()
            .assert_approx_eq::<f32>(&reference.into_data(), Tolerance::rel_abs(1e-5, 1e-6));
    }

    /// A wide layer (more outputs than inputs) laid out column-major gives the dense weight's
    /// values and gradients: the output, the input's gradient, and the weight's own gradient
    /// when it trains (full fine-tuning). A narrow one is left as it is.
    #[test]
    fn laid_out_weights_compute_as_dense_ones() {
        let device = Device::flex().autodiff();
        device.seed(7);
        for [d_in, d_out] in [[24, 96], [96, 24]] {
            let layer = LinearConfig::new(d_in, d_out).init(&device);
            let dense: Tensor<2> = Tensor::from_data(layer.weight.val().into_data(), &device);
            let host = AdaptedLinear::<NoAdapter>::new(layer.clone());
            assert_eq!(
                host.base.weight.val().into_data(),
                dense.clone().into_data()
            );
            let x = Tensor::<2>::random([10, d_in], Distribution::Normal(0.0, 1.0), &device);
            let bias = host.base.bias.as_ref().map(|b| b.val());
            // Input gradient through the host, against a plain product on the dense weight.
            let xg = x.clone().require_grad();
            let out = host.forward(xg.clone());
            let grads = (out.clone() * out.clone()).sum().backward();
            let ours = xg.grad(&grads).expect("input gradient");
            let xr = x.clone().require_grad();
            let reference = linear(xr.clone(), dense.clone(), bias.clone());
            let ref_grads = (reference.clone() * reference.clone()).sum().backward();
            close(out.detach(), reference.detach());
            close(ours, xr.grad(&ref_grads).expect("input gradient"));
            // The weight's gradient when it trains.
            let w = layout_for_products(dense.clone()).require_grad();
            let out = x.clone().matmul(w.clone());
            let grads = (out.clone() * out).sum().backward();
            let wr = dense.require_grad();
            let out = x.matmul(wr.clone());
            let ref_grads = (out.clone() * out).sum().backward();
            close(
                w.grad(&grads).expect("weight gradient"),
                wr.grad(&ref_grads).expect("weight gradient"),
            );
        }
        // Other element types are returned as they are.
        let half =
            Tensor::<2>::from_data(TensorData::new(vec![1.0f32; 6], [1, 6]), &Device::flex())
                .cast(FloatDType::BF16);
        assert_eq!(layout_for_products(half.clone()).dtype(), half.dtype());
    }
}
