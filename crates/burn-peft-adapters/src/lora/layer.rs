//! The LoRA / DoRA adapter module that lives inside an `AdaptedLinear`.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::module::linear;
use burn::tensor::{Distribution, FloatDType, Tensor};
use burn_peft_core::format::{NamedTensor, PeftTensors};
use burn_peft_core::{LinearAdapter, PeftError, Result, SplitMix64, seeded_random};

use super::config::{LoraConfig, LoraInit};

/// One LoRA (or DoRA) adapter on one linear layer.
///
/// With the base weight W (`[in, out]`, burn's layout), the output is
/// `x·W + s·(dropout(x)·A)·B`: the low-rank path is applied to activations, so no dense
/// `A·B` is built while training. With DoRA a magnitude vector m rescales each output column:
/// `m / ‖W + s·A·B‖ ⊙ (x·W + s·(dropout(x)·A)·B)`, the norm detached as in the DoRA paper §4.3.
#[derive(Module, Debug)]
pub struct Lora {
    /// Down projection A, `[in, r]` (PEFT's `lora_A.weight` transposed).
    pub lora_a: Param<Tensor<2>>,
    /// Up projection B, `[r, out]` (PEFT's `lora_B.weight` transposed).
    pub lora_b: Param<Tensor<2>>,
    /// DoRA's magnitude per output feature, `[out]`.
    pub magnitude: Option<Param<Tensor<1>>>,
    /// Dropout on the adapter path's input.
    pub dropout: Dropout,
    /// s = alpha / r, or alpha / √r with rsLoRA.
    pub scaling: f64,
    /// The config the adapter was made from (written to `adapter_config.json`).
    #[module(skip)]
    pub config: LoraConfig,
    /// DoRA: the column norms at merge time, needed to unmerge exactly.
    #[module(skip)]
    merge_norm: Option<Tensor<2>>,
    /// PiSSA: the residual base weight, handed to the host once.
    #[module(skip)]
    base_update: Option<Tensor<2>>,
}

impl Lora {
    /// Builds the adapter for the module at `path` over `base`, as `config` says.
    pub fn init(config: &LoraConfig, path: &str, base: &Linear) -> Result<Self> {
        config.validate()?;
        let (r, alpha) = config.rank_and_alpha(path)?;
        // The adapter is built in f32 whatever the base is stored in.
        let weight = base.weight.val().detach().cast(FloatDType::F32);
        let device = weight.device();
        let [d_in, d_out] = weight.dims();
        let scaling = config.scaling_for(r, alpha);
        // On the host when a seed is set (the same values on every backend), else on the device.
        let mut host_rng = config
            .init_seed
            .map(|seed| SplitMix64::for_stream(seed, path));
        let mut random = |shape: [usize; 2], distribution: Distribution| {
            seeded_random(shape, distribution, host_rng.as_mut(), &device)
        };
        let kaiming = |fan_in: usize| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            Distribution::Uniform(-bound, bound)
        };
        let mut base_update = None;
        let (a, b) = match config.init_lora_weights {
            LoraInit::Default => (
                random([d_in, r], kaiming(d_in)),
                Tensor::zeros([r, d_out], &device),
            ),
            LoraInit::Gaussian => (
                random([d_in, r], Distribution::Normal(0.0, 1.0 / r as f64)),
                Tensor::zeros([r, d_out], &device),
            ),
            LoraInit::Random => (
                random([d_in, r], kaiming(d_in)),
                random([r, d_out], kaiming(r)),
            ),
            LoraInit::Pissa => {
                let (a, b, residual) = pissa(weight.clone(), r, scaling)?;
                base_update = Some(residual);
                (a, b)
            }
        };
        let magnitude = if config.use_dora {
            // With B = 0 this is ‖W‖ per output feature; PiSSA uses the residual plus s·A·B.
            let effective = base_update.clone().unwrap_or_else(|| weight.clone())
                + a.clone().matmul(b.clone()) * scaling;
            Some(Param::from_tensor(column_norm(effective).squeeze_dim(0)))
        } else {
            None
        };
        Ok(Self {
            lora_a: Param::from_tensor(a),
            lora_b: Param::from_tensor(b),
            magnitude,
            dropout: DropoutConfig::new(config.lora_dropout).init(),
            scaling,
            config: config.clone(),
            merge_norm: None,
            base_update,
        })
    }

    /// An adapter with the given factors A `[in, r]` and B `[r, out]` and scaling, frozen.
    pub(crate) fn from_factors(
        config: LoraConfig,
        a: Tensor<2>,
        b: Tensor<2>,
        scaling: f64,
    ) -> Self {
        Self {
            lora_a: Param::from_tensor(a.detach()).set_require_grad(false),
            lora_b: Param::from_tensor(b.detach()).set_require_grad(false),
            magnitude: None,
            dropout: DropoutConfig::new(config.lora_dropout).init(),
            scaling,
            config,
            merge_norm: None,
            base_update: None,
        }
    }

    /// Rank of this adapter.
    pub fn rank(&self) -> usize {
        self.lora_a.shape().dims::<2>()[1]
    }

    /// The dense update s·A·B, `[in, out]` (used for merging, never in the training forward).
    pub fn delta_weight(&self) -> Tensor<2> {
        self.lora_a.val().matmul(self.lora_b.val()) * self.scaling
    }

    /// The adapter's contribution added to `out`.
    fn apply<const D: usize>(
        &self,
        x: &Tensor<D>,
        base: &Linear,
        base_out: &Tensor<D>,
        out: Tensor<D>,
    ) -> Tensor<D> {
        // Computed in the adapter's own type (f32) whatever the activations are, and added back
        // in theirs, as PEFT does over a half-precision base.
        let dtype = out.dtype();
        let own = self.lora_a.val().dtype();
        let dropped = self.dropout.forward(x.clone().cast(own));
        let dropout_active = dropped.device().is_autodiff()
            && self.dropout.prob > 0.0
            && self.dropout.training.is_enabled();
        let lora = linear(
            linear(dropped.clone(), self.lora_a.val(), None),
            self.lora_b.val(),
            None,
        ) * self.scaling;
        let out = out.cast(own);
        let Some(magnitude) = &self.magnitude else {
            return (out + lora).cast(dtype);
        };
        let weight = base.weight.val().cast(own);
        let norm = column_norm(
            weight.clone().detach()
                + self
                    .lora_a
                    .val()
                    .detach()
                    .matmul(self.lora_b.val().detach())
                    * self.scaling,
        )
        .detach();
        let scale: Tensor<D> = (magnitude.val().unsqueeze::<2>() / norm)
            .squeeze_dim::<1>(0)
            .unsqueeze::<D>();
        // As PEFT: without active dropout the running output (base plus adapters applied
        // before this one) is rescaled; with dropout, the base on the dropped-out input.
        let _ = base_out;
        let base_no_bias = if dropout_active {
            linear(dropped, weight, None)
        } else {
            match &base.bias {
                Some(bias) => out.clone() - bias.val().cast(own).unsqueeze::<D>(),
                None => out.clone(),
            }
        };
        (out + (scale.clone() - 1.0) * base_no_bias + scale * lora).cast(dtype)
    }

    fn merge_into(&mut self, weight: Tensor<2>) -> Tensor<2> {
        let combined = weight + self.delta_weight().detach();
        match &self.magnitude {
            None => combined,
            Some(m) => {
                let norm = column_norm(combined.clone());
                let factor = m.val().detach().unsqueeze::<2>() / norm.clone();
                self.merge_norm = Some(norm);
                combined * factor
            }
        }
    }

    fn unmerge_from(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        let delta = self.delta_weight().detach();
        match &self.magnitude {
            None => Ok(weight - delta),
            Some(m) => {
                let norm = self.merge_norm.take().ok_or_else(|| {
                    PeftError::InvalidConfig("DoRA unmerge without a merge".into())
                })?;
                let factor = m.val().detach().unsqueeze::<2>() / norm;
                Ok(weight / factor - delta)
            }
        }
    }
}

impl LinearAdapter for Lora {
    fn peft_type(&self) -> &'static str {
        "LORA"
    }

    fn forward<const D: usize>(
        &self,
        x: &Tensor<D>,
        base: &Linear,
        base_out: &Tensor<D>,
        out: Tensor<D>,
    ) -> Tensor<D> {
        self.apply(x, base, base_out, out)
    }

    fn merge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        Ok(self.merge_into(weight))
    }

    fn unmerge(&mut self, weight: Tensor<2>) -> Result<Tensor<2>> {
        self.unmerge_from(weight)
    }

    fn take_base_update(&mut self) -> Option<Tensor<2>> {
        self.base_update.take()
    }

    fn draws_dropout(&self) -> bool {
        self.dropout.prob > 0.0
    }
}

impl PeftTensors for Lora {
    fn export(&self) -> Vec<(String, NamedTensor)> {
        let mut out = vec![
            (
                "lora_A.weight".to_string(),
                NamedTensor::from_tensor(self.lora_a.val().transpose()),
            ),
            (
                "lora_B.weight".to_string(),
                NamedTensor::from_tensor(self.lora_b.val().transpose()),
            ),
        ];
        if let Some(m) = &self.magnitude {
            out.push((
                "lora_magnitude_vector".to_string(),
                NamedTensor::from_tensor(m.val()),
            ));
        }
        out
    }

    fn import(
        &mut self,
        take: &mut dyn FnMut(&str, &[usize]) -> Result<NamedTensor>,
    ) -> Result<()> {
        let [d_in, r] = self.lora_a.shape().dims();
        let [_, d_out] = self.lora_b.shape().dims();
        let device = self.lora_a.device();
        let a = take("lora_A.weight", &[r, d_in])?.transposed();
        let b = take("lora_B.weight", &[d_out, r])?.transposed();
        let magnitude = match &self.magnitude {
            Some(_) => Some(take("lora_magnitude_vector", &[d_out])?),
            None => None,
        };
        self.lora_a = replace(&self.lora_a, a.to_tensor(&device, "lora_A.weight")?);
        self.lora_b = replace(&self.lora_b, b.to_tensor(&device, "lora_B.weight")?);
        if let (Some(param), Some(m)) = (&self.magnitude, magnitude) {
            self.magnitude = Some(replace(
                param,
                m.to_tensor(&device, "lora_magnitude_vector")?,
            ));
        }
        Ok(())
    }
}

/// A parameter with a new value, keeping its id and whether it trains.
pub(crate) fn replace<const D: usize>(
    param: &Param<Tensor<D>>,
    value: Tensor<D>,
) -> Param<Tensor<D>> {
    let trains = param.is_require_grad();
    param.clone().map(|_| value).set_require_grad(trains)
}

/// ‖column‖₂ of a `[in, out]` weight: one norm per output feature, shape `[1, out]`.
fn column_norm(weight: Tensor<2>) -> Tensor<2> {
    weight.powi_scalar(2).sum_dim(0).sqrt()
}

/// PiSSA: A and B from the top-r singular triplets of W, and the residual base weight.
fn pissa(weight: Tensor<2>, r: usize, scaling: f64) -> Result<(Tensor<2>, Tensor<2>, Tensor<2>)> {
    let [d_in, d_out] = weight.dims();
    if r > d_in.min(d_out) {
        return Err(PeftError::InvalidConfig(format!(
            "PiSSA rank {r} exceeds the weight's smaller side {}",
            d_in.min(d_out)
        )));
    }
    // PyTorch layout W_t = [out, in] = U S Vh; A_t = sqrt(S/s) Vh_r, B_t = U_r sqrt(S/s).
    let (u, s, vh) = burn::linalg::svd::<2, 1>(weight.clone().transpose(), 64);
    let root = (s.slice(0..r) / scaling).sqrt();
    let a_t = vh.slice([0..r, 0..d_in]) * root.clone().unsqueeze_dim::<2>(1);
    let b_t = u.slice([0..d_out, 0..r]) * root.unsqueeze_dim::<2>(0);
    // Dense copies: a transposed view would be re-laid out on every matmul by some backends.
    let device = weight.device();
    let a = Tensor::<2>::from_data(a_t.transpose().into_data(), &device);
    let b = Tensor::<2>::from_data(b_t.transpose().into_data(), &device);
    let residual = weight - a.clone().matmul(b.clone()) * scaling;
    Ok((a, b, residual))
}
