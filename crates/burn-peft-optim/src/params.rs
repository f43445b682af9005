//! Parameter-level helpers: paths and ids of trainable parameters, full fine-tuning, and
//! global-norm clipping.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Device, FloatDType, Tensor};

/// The ids of the parameters that get a gradient, by module path (`layers.0.self_attn...`).
///
/// burn keys gradients and parameters by [`ParamId`], and a model loaded afresh gets new ids;
/// the path is what stays the same (and what the optimizer's saved state is keyed by).
pub fn trainable_param_ids<M: Module>(module: &M) -> BTreeMap<String, ParamId> {
    trainable_params(module)
        .into_iter()
        .map(|(path, p)| (path, p.id))
        .collect()
}

/// What the optimizer needs to know of a trainable parameter.
pub(crate) struct TrainableParam {
    pub id: ParamId,
    pub dims: Vec<usize>,
    pub dtype: DType,
    /// The device of its value without autodiff, where optimizer state lives.
    pub device: Device,
}

/// The parameters that get a gradient, by module path.
pub(crate) fn trainable_params<M: Module>(module: &M) -> BTreeMap<String, TrainableParam> {
    let mut v = PathVisitor {
        path: Vec::new(),
        params: BTreeMap::new(),
    };
    module.visit(&mut v);
    v.params
}

/// The root mean square of the values of the parameters that get a gradient (0 when none
/// do), read back from the device once: what [`StepReport::weight_rms`] reports before a
/// step, for a model as it is now (after the last update).
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::Device;
/// use burn_peft_optim::trainable_weight_rms;
///
/// let device = Device::flex().autodiff();
/// let linear = LinearConfig::new(3, 2).init(&device);
/// let weight: Vec<f32> = linear.weight.val().into_data().to_vec().unwrap();
/// let bias: Vec<f32> = linear.bias.as_ref().unwrap().val().into_data().to_vec().unwrap();
/// let squares: f32 = weight.iter().chain(&bias).map(|v| v * v).sum();
/// let expected = (squares / 8.0).sqrt();
/// assert!((trainable_weight_rms(&linear) - expected).abs() < 1e-6);
/// ```
///
/// [`StepReport::weight_rms`]: crate::StepReport::weight_rms
pub fn trainable_weight_rms<M: Module>(module: &M) -> f32 {
    struct Squares {
        sum: Option<Tensor<1>>,
        count: usize,
    }
    impl ModuleVisitor for Squares {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if param.is_require_grad() {
                let value = param.val().inner().cast(FloatDType::F32);
                self.count += value.shape().num_elements();
                let sum = value.square().sum();
                self.sum = Some(match self.sum.take() {
                    Some(s) => s + sum,
                    None => sum,
                });
            }
        }
    }
    let mut v = Squares {
        sum: None,
        count: 0,
    };
    module.visit(&mut v);
    v.sum.map_or(0.0, |s| {
        (s.into_scalar::<f32>() / v.count.max(1) as f32).sqrt()
    })
}

/// Makes every floating-point parameter trainable: full fine-tuning through the same optimizer
/// path as adapters.
///
/// ```
/// use burn::module::Module;
/// use burn::nn::LinearConfig;
/// use burn::tensor::Device;
/// use burn_peft_core::TrainableParameters;
/// use burn_peft_optim::make_trainable;
///
/// let device = Device::flex().autodiff();
/// let frozen = LinearConfig::new(4, 2).init(&device).no_grad();
/// assert_eq!(TrainableParameters::of(&frozen).trainable, 0);
/// assert_eq!(TrainableParameters::of(&make_trainable(frozen)).trainable, 10);
/// ```
pub fn make_trainable<M: Module>(module: M) -> M {
    module.map(&mut Unfreeze)
}

/// The L2 norm of all gradients of `module`'s parameters taken together, as PyTorch's
/// `clip_grad_norm_` computes it. `None` when no parameter has a gradient.
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> Option<f32> {
    let mut v = SquaredNorm { grads, sum: None };
    module.visit(&mut v);
    v.sum.map(|s| s.into_scalar::<f32>().sqrt())
}

/// Scales all gradients by `max_norm / norm` when their global norm exceeds `max_norm`
/// (PyTorch's `clip_grad_norm_`, with its 1e-6 guard). Returns the norm before clipping.
///
/// ```
/// use burn::module::Module;
/// use burn::nn::LinearConfig;
/// use burn::optim::GradientsParams;
/// use burn::tensor::{Device, Tensor};
/// use burn_peft_optim::{clip_global_norm, global_grad_norm};
///
/// let device = Device::flex().autodiff();
/// let layer = LinearConfig::new(3, 2).init(&device);
/// let x = Tensor::<2>::ones([4, 3], &device) * 10.0;
/// let mut grads = GradientsParams::from_grads(layer.forward(x).sum().backward(), &layer);
/// let before = clip_global_norm(&layer, &mut grads, 1.0).unwrap();
/// assert!(before > 1.0);
/// let after = global_grad_norm(&layer, &grads).unwrap();
/// assert!((after - 1.0).abs() < 1e-4);
/// ```
pub fn clip_global_norm<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f32,
) -> Option<f32> {
    let norm = global_grad_norm(module, grads)?;
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        scale_grads(module, grads, coef);
    }
    Some(norm)
}

/// Multiplies every gradient of `module`'s parameters by `coef`.
pub(crate) fn scale_grads<M: Module>(module: &M, grads: &mut GradientsParams, coef: f32) {
    module.visit(&mut Scale { grads, coef });
}

struct PathVisitor {
    path: Vec<String>,
    params: BTreeMap<String, TrainableParam>,
}

impl ModuleVisitor for PathVisitor {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.is_require_grad() {
            let value = param.val().inner();
            self.params.insert(
                self.path.join("."),
                TrainableParam {
                    id: param.id,
                    dims: value.dims().to_vec(),
                    dtype: value.dtype(),
                    device: value.device(),
                },
            );
        }
    }
}

/// Gives every trainable parameter a new autodiff leaf over the same weights (`detach` shares
/// the storage), keeping its id: gradients taken through the copy are keyed like the model's.
pub(crate) struct NewLeaves;

impl ModuleMapper for NewLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if param.is_require_grad() {
            param.map(|t| t.detach().require_grad())
        } else {
            param
        }
    }
}

struct Unfreeze;

impl ModuleMapper for Unfreeze {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if D != 2 || param.is_require_grad() {
            return param.set_require_grad(true);
        }
        // A frozen weight laid out for its products goes back to the layout training wants.
        param
            .map(|t| {
                let dims = t.dims();
                let t = burn_peft_core::layout_for_training(t.reshape([dims[0], dims[1]]));
                t.reshape(dims)
            })
            .set_require_grad(true)
    }
}

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let sq = g.square().sum().cast(FloatDType::F32);
            self.sum = Some(match self.sum.take() {
                Some(s) => s + sq,
                None => sq,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    coef: f32,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g * self.coef);
        }
    }
}
