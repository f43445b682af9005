//! burn-optim's AdamW stepped over buckets of parameters flattened into one tensor each, as
//! PyTorch's multi-tensor (`foreach`) optimizers do.
//!
//! burn's `ModuleOptimizer` records about fifteen operations per parameter tensor. A LoRA model
//! has hundreds of small tensors, and on a GPU the host's time to record those operations is
//! what bounds the step (`docs/perf-log/2026-11-27-h100-lease-3.md`).
//! Here the gradients and values of parameters that share a learning rate, a dtype and an Adam
//! step count are concatenated, AdamW's own [`Optimizer::step`] runs once per bucket, and each
//! parameter takes back its slice: a few operations per tensor plus one AdamW per bucket. The
//! arithmetic is element-wise, so every value is exactly what the per-tensor step computes.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamW, AdamWState, AdaptiveMomentumState, GradientsParams, Optimizer};
use burn::tensor::{DType, Device, FloatDType, Tensor};

/// The most elements one bucket holds (1 MiB in f32); a larger tensor gets a bucket of its own,
/// with nothing concatenated. On a CPU, AdamW's fifteen passes over a bucket then stay in
/// cache, which much larger buckets lose (`docs/perf-log/2026-11-28-optimizer-buckets.md`). A GPU gains as much from this size as from larger ones, since the
/// operations per tensor (slices, reshapes) are what is left.
const BUCKET_ELEMENTS: usize = 1 << 18;

/// One parameter's Adam state, flattened.
#[derive(Clone)]
pub(crate) struct ParamState {
    pub time: usize,
    pub moment_1: Tensor<1>,
    pub moment_2: Tensor<1>,
}

/// The state of parameters stepped together last time.
struct Bucket {
    members: Vec<(ParamId, usize)>,
    state: AdamWState<1>,
}

/// AdamW over buckets of flattened parameters; see the module's documentation.
pub(crate) struct BucketedAdamW {
    adamw: AdamW,
    /// The most elements a bucket holds ([`BUCKET_ELEMENTS`]).
    max_elements: usize,
    /// Last step's buckets, by their first member.
    buckets: HashMap<ParamId, Bucket>,
    /// States not in a bucket: loaded from a file, or split off a bucket whose membership
    /// changed.
    loose: HashMap<ParamId, ParamState>,
}

/// A parameter that has a gradient this step, flattened.
struct Item {
    id: ParamId,
    lr: f64,
    numel: usize,
    dtype: DType,
    device: Device,
    value: Tensor<1>,
    grad: Tensor<1>,
}

/// The gradients of one step, gathered into buckets, before the update.
pub(crate) struct Gathered {
    buckets: Vec<GatheredBucket>,
}

struct GatheredBucket {
    members: Vec<(ParamId, usize)>,
    lr: f64,
    value: Tensor<1>,
    grad: Tensor<1>,
    state: Option<AdamWState<1>>,
}

impl Gathered {
    /// The global L2 norm of the gradients (as PyTorch's `clip_grad_norm_`) when `with_grad`,
    /// and the root mean square of the parameters' values, read back from the device together.
    /// `None` when no parameter has a gradient.
    pub fn norms(&self, with_grad: bool) -> Option<(Option<f32>, f32)> {
        let square_sum = |t: &Tensor<1>| t.clone().cast(FloatDType::F32).square().sum();
        let sums = self
            .buckets
            .iter()
            .map(|b| {
                let v = square_sum(&b.value);
                if with_grad {
                    Tensor::cat(vec![v, square_sum(&b.grad)], 0)
                } else {
                    v
                }
            })
            .reduce(|a, b| a + b)?;
        let sums: Vec<f32> = sums.into_data().convert::<f32>().try_to_vec().ok()?;
        let count: usize = self.buckets.iter().map(|b| b.value.dims()[0]).sum();
        let rms = (sums[0] / count.max(1) as f32).sqrt();
        Some((sums.get(1).map(|g| g.sqrt()), rms))
    }

    /// Multiplies every gradient by `coef`.
    pub fn scale(&mut self, coef: f32) {
        for b in &mut self.buckets {
            b.grad = b.grad.clone() * coef;
        }
    }
}

impl BucketedAdamW {
    pub fn new(adamw: AdamW) -> Self {
        Self {
            adamw,
            max_elements: BUCKET_ELEMENTS,
            buckets: HashMap::new(),
            loose: HashMap::new(),
        }
    }

    /// Takes the gradients of `module`'s parameters out of `grads` and groups them, with their
    /// values and Adam states, into buckets. `lr_of` gives a parameter's learning rate from its
    /// path.
    pub fn gather<M: Module>(
        &mut self,
        module: &M,
        mut grads: GradientsParams,
        lr_of: &dyn Fn(&str) -> f64,
    ) -> Gathered {
        let mut visitor = Collect {
            grads: &mut grads,
            lr_of,
            path: Vec::new(),
            items: Vec::new(),
        };
        module.visit(&mut visitor);
        // Each stepped parameter's Adam step count, and the bucket (by first member) it was in.
        let mut last: HashMap<ParamId, (usize, Option<ParamId>)> = self
            .loose
            .iter()
            .map(|(id, s)| (*id, (s.time, None)))
            .collect();
        for (first, b) in &self.buckets {
            let time = b.state.momentum.time;
            last.extend(b.members.iter().map(|(id, _)| (*id, (time, Some(*first)))));
        }
        // Parameters that can share one AdamW call, in the order they were visited: LoRA+
        // alternates A and B, whose learning rates differ.
        type Key = (u64, DType, Device, usize);
        let mut groups: Vec<(Key, Vec<Item>)> = Vec::new();
        for item in visitor.items {
            let time = last.get(&item.id).map_or(0, |(time, _)| *time);
            let key = (item.lr.to_bits(), item.dtype, item.device.clone(), time);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, items)) => items.push(item),
                None => groups.push((key, vec![item])),
            }
        }
        let mut buckets = Vec::new();
        for (_, items) in groups {
            let mut run: Vec<Item> = Vec::new();
            let mut size = 0;
            for item in items {
                if !run.is_empty() && size + item.numel > self.max_elements {
                    buckets.push(self.bucket(std::mem::take(&mut run), &last));
                    size = 0;
                }
                size += item.numel;
                run.push(item);
            }
            buckets.push(self.bucket(run, &last));
        }
        Gathered { buckets }
    }

    /// Concatenates a run of parameters (same learning rate, type, device and step count) and
    /// finds its state: the last step's bucket when it had the same members, otherwise the
    /// members' own states put together.
    fn bucket(
        &mut self,
        run: Vec<Item>,
        last: &HashMap<ParamId, (usize, Option<ParamId>)>,
    ) -> GatheredBucket {
        let members: Vec<(ParamId, usize)> = run.iter().map(|i| (i.id, i.numel)).collect();
        let (lr, device) = (run[0].lr, run[0].device.clone());
        let same = self
            .buckets
            .get(&members[0].0)
            .is_some_and(|b| b.members == members);
        let state = match same {
            true => self.buckets.remove(&members[0].0).map(|b| b.state),
            false => self.assemble(&run, last),
        };
        // burn-optim moves state to the parameter's device on every step; so does this.
        let state = state.map(|s| {
            if s.momentum.moment_1.device() == device {
                s
            } else {
                <AdamW as Optimizer>::to_device(s, &device)
            }
        });
        let (values, grads): (Vec<_>, Vec<_>) = run.into_iter().map(|i| (i.value, i.grad)).unzip();
        GatheredBucket {
            members,
            lr,
            value: cat(values),
            grad: cat(grads),
            state,
        }
    }

    /// The state of a new bucket from its members' states, splitting the buckets they were in.
    /// Members share a step count: all have a state, or none has (`None`).
    fn assemble(
        &mut self,
        run: &[Item],
        last: &HashMap<ParamId, (usize, Option<ParamId>)>,
    ) -> Option<AdamWState<1>> {
        let time = last.get(&run[0].id).map_or(0, |(time, _)| *time);
        if time == 0 {
            return None;
        }
        for item in run {
            if let Some((_, Some(first))) = last.get(&item.id)
                && let Some(bucket) = self.buckets.remove(first)
            {
                self.loose.extend(split(&bucket));
            }
        }
        let (mut first, mut second) = (Vec::new(), Vec::new());
        for item in run {
            // Grouping by step count puts only parameters with a state here.
            let state = self.loose.remove(&item.id);
            debug_assert!(state.as_ref().is_some_and(|s| s.time == time));
            let (m1, m2) = match state {
                Some(s) => (s.moment_1.cast(item.dtype), s.moment_2.cast(item.dtype)),
                None => (item.grad.zeros_like(), item.grad.zeros_like()),
            };
            first.push(m1);
            second.push(m2);
        }
        Some(AdamWState::new(AdaptiveMomentumState::new(
            time,
            cat(first),
            cat(second),
        )))
    }

    /// Steps every bucket and puts the new values back into `module`.
    pub fn update<M: Module>(&mut self, module: M, gathered: Gathered) -> M {
        let mut values = HashMap::new();
        for b in gathered.buckets {
            let (value, state) = self.adamw.step(b.lr, b.value, b.grad, b.state);
            let mut offset = 0;
            for &(id, numel) in &b.members {
                let part = if b.members.len() == 1 {
                    value.clone()
                } else {
                    value.clone().slice(offset..offset + numel)
                };
                values.insert(id, part);
                offset += numel;
            }
            if let Some(state) = state {
                self.store(b.members, state);
            }
        }
        module.map(&mut PutBack { values })
    }

    /// Puts back the states of a step that was not taken.
    pub fn keep(&mut self, gathered: Gathered) {
        for b in gathered.buckets {
            if let Some(state) = b.state {
                self.store(b.members, state);
            }
        }
    }

    /// Keeps a bucket's state for the next step, under its first member.
    fn store(&mut self, members: Vec<(ParamId, usize)>, state: AdamWState<1>) {
        self.buckets.insert(members[0].0, Bucket { members, state });
    }

    /// Every parameter's state, flattened, by id.
    pub fn states(&self) -> HashMap<ParamId, ParamState> {
        let mut all = self.loose.clone();
        for b in self.buckets.values() {
            all.extend(split(b));
        }
        all
    }

    /// Replaces the whole state.
    pub fn set_states(&mut self, states: HashMap<ParamId, ParamState>) {
        self.buckets.clear();
        self.loose = states;
    }
}

fn cat(mut parts: Vec<Tensor<1>>) -> Tensor<1> {
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        Tensor::cat(parts, 0)
    }
}

/// A bucket's state cut back into its members'.
fn split(bucket: &Bucket) -> Vec<(ParamId, ParamState)> {
    let momentum = &bucket.state.momentum;
    let mut offset = 0;
    let mut out = Vec::with_capacity(bucket.members.len());
    for &(id, numel) in &bucket.members {
        let range = offset..offset + numel;
        out.push((
            id,
            ParamState {
                time: momentum.time,
                moment_1: momentum.moment_1.clone().slice(range.clone()),
                moment_2: momentum.moment_2.clone().slice(range),
            },
        ));
        offset += numel;
    }
    out
}

struct Collect<'a> {
    grads: &'a mut GradientsParams,
    lr_of: &'a dyn Fn(&str) -> f64,
    path: Vec<String>,
    items: Vec<Item>,
}

impl ModuleVisitor for Collect<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(grad) = self.grads.remove::<D>(param.id) else {
            return;
        };
        let numel = grad.shape().num_elements();
        let value = param.val().inner();
        self.items.push(Item {
            id: param.id,
            lr: (self.lr_of)(&self.path.join(".")),
            numel,
            dtype: value.dtype(),
            device: value.device(),
            value: value.reshape([numel]),
            grad: grad.reshape([numel]),
        });
    }
}

/// Gives each updated parameter its new value, with the autodiff settings it had (trainable,
/// gradient-checkpointing strategy, distributed), as burn-optim's `ParameterContext` does.
struct PutBack {
    values: HashMap<ParamId, Tensor<1>>,
}

impl ModuleMapper for PutBack {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(flat) = self.values.remove(&param.id) else {
            return param;
        };
        let (id, old, mapper) = param.consume();
        let mut new = Tensor::from_inner(flat.reshape(old.dims()));
        if let Some(strategy) = old.gradient_checkpointing_strategy() {
            new = new.with_gradient_checkpointing_strategy(strategy);
        }
        if old.is_require_grad() {
            new = new.require_grad();
        }
        if old.is_distributed() {
            new = new.set_distributed(id);
        }
        Param::from_mapped_value(id, new, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::AdamWConfig;

    /// A weight of 12 elements and a bias of 3: a limit of 14 keeps them apart, 15 joins them,
    /// and either way the steps are burn-optim's per-tensor ones to the bit.
    #[test]
    fn buckets_hold_at_most_their_limit_and_step_alike() {
        let device = Device::flex().autodiff();
        let config = AdamWConfig::new().with_weight_decay(0.1);
        for (limit, buckets) in [(1, 2), (14, 2), (15, 1), (1000, 1)] {
            let mut ours = BucketedAdamW::new(config.build());
            ours.max_elements = limit;
            let mut reference = config.init();
            let start: Linear = LinearConfig::new(4, 3).init(&device);
            let (mut a, mut b) = (start.clone(), start);
            for step in 0..3 {
                let x = Tensor::<2>::ones([2, 4], &device) * (step as f32 + 1.0);
                let loss = |m: &Linear| m.forward(x.clone()).square().sum();
                let grads = GradientsParams::from_grads(loss(&a).backward(), &a);
                let gathered = ours.gather(&a, grads, &|_| 0.01);
                a = ours.update(a, gathered);
                let grads = GradientsParams::from_grads(loss(&b).backward(), &b);
                b = reference.step(0.01, b, grads);
            }
            assert_eq!(ours.buckets.len(), buckets, "limit {limit}");
            let weight = |m: &Linear| m.weight.val().into_data();
            assert_eq!(weight(&a), weight(&b), "limit {limit}");
            let bias = |m: &Linear| m.bias.as_ref().map(|p| p.val().into_data());
            assert_eq!(bias(&a), bias(&b), "limit {limit}");
        }
    }

    /// Learning rates that alternate along the visiting order (LoRA+'s A and B) still give one
    /// bucket per learning rate, not one per tensor.
    #[test]
    fn parameters_far_apart_share_a_bucket() {
        let device = Device::flex().autodiff();
        let layers: Vec<Linear> = (0..3)
            .map(|_| LinearConfig::new(4, 3).init(&device))
            .collect();
        let mut optim = BucketedAdamW::new(AdamWConfig::new().build());
        let x = Tensor::<2>::ones([2, 4], &device);
        let loss = layers
            .iter()
            .map(|l| l.forward(x.clone()).sum())
            .reduce(|a, b| a + b)
            .unwrap();
        let grads = GradientsParams::from_grads(loss.backward(), &layers);
        let lr_of = |path: &str| if path.ends_with("bias") { 0.02 } else { 0.01 };
        let gathered = optim.gather(&layers, grads, &lr_of);
        let sizes: Vec<(f64, usize)> = gathered
            .buckets
            .iter()
            .map(|b| (b.lr, b.members.len()))
            .collect();
        assert_eq!(sizes, [(0.01, 3), (0.02, 3)]);
    }
}
