//! A small, portable, seeded generator: the same draws on every platform and backend.
//!
//! burn's `Tensor::random` draws on the device, and each backend has its own generator, so the
//! same seed starts a LoRA adapter from other values on flex, CUDA or WGPU. Drawing on the host
//! with [`SplitMix64`] and uploading ([`host_random`]) gives every backend the same start.

use burn::tensor::{Device, Distribution, Tensor, TensorData};

/// SplitMix64 (Steele et al. 2014).
///
/// ```
/// use burn_peft_core::SplitMix64;
/// let mut a = SplitMix64::new(7);
/// let mut b = SplitMix64::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let x = a.uniform(-1.0, 1.0);
/// assert!((-1.0..1.0).contains(&x));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A generator for one named stream of `seed` (a module path, say): streams of the same
    /// seed are independent of each other and of the order they are asked for in.
    pub fn for_stream(seed: u64, stream: &str) -> Self {
        // FNV-1a of the name, mixed into the seed.
        let name = stream.bytes().fold(0xCBF2_9CE4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
        });
        let mut mix = Self(seed ^ name.rotate_left(17));
        Self(mix.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw from `[low, high)`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        // 53 random bits: every f64 step in [0, 1).
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        low + (high - low) * unit
    }

    /// A normal draw (Box–Muller).
    pub fn normal(&mut self, mean: f64, std: f64) -> f64 {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let u = 1.0 - self.uniform(0.0, 1.0);
        let v = self.uniform(0.0, 1.0);
        mean + std * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// An f32 tensor drawn on the host from `rng` and put on `device`: the same values on every
/// backend.
///
/// ```
/// use burn::tensor::{Device, Distribution};
/// use burn_peft_core::{SplitMix64, host_random};
/// let device = Device::flex();
/// let draw = |seed| {
///     let mut rng = SplitMix64::for_stream(seed, "layers.0.q_proj");
///     host_random([4, 2], Distribution::Uniform(-0.5, 0.5), &mut rng, &device)
/// };
/// assert_eq!(draw(1).into_data(), draw(1).into_data());
/// assert_ne!(draw(1).into_data(), draw(2).into_data());
/// ```
pub fn host_random<const D: usize>(
    shape: [usize; D],
    distribution: Distribution,
    rng: &mut SplitMix64,
    device: &Device,
) -> Tensor<D> {
    let draw = |r: &mut SplitMix64| match distribution {
        Distribution::Default => r.uniform(0.0, 1.0),
        Distribution::Uniform(low, high) => r.uniform(low, high),
        Distribution::Normal(mean, std) => r.normal(mean, std),
        Distribution::Bernoulli(p) => f64::from(u8::from(r.uniform(0.0, 1.0) < p)),
    };
    let n = shape.iter().product::<usize>();
    let values: Vec<f32> = (0..n).map(|_| draw(rng) as f32).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// [`host_random`] when `rng` is given, else burn's `Tensor::random` on the device's own
/// generator: how a seeded adapter and an unseeded one draw their starting values.
///
/// ```
/// use burn::tensor::{Device, Distribution};
/// use burn_peft_core::{SplitMix64, seeded_random};
/// let device = Device::flex();
/// let mut rng = SplitMix64::new(3);
/// let t = seeded_random([2, 2], Distribution::Default, Some(&mut rng), &device);
/// let u = seeded_random([2, 2], Distribution::Default, Some(&mut SplitMix64::new(3)), &device);
/// assert_eq!(t.into_data(), u.into_data());
/// ```
pub fn seeded_random<const D: usize>(
    shape: [usize; D],
    distribution: Distribution,
    rng: Option<&mut SplitMix64>,
    device: &Device,
) -> Tensor<D> {
    match rng {
        Some(rng) => host_random(shape, distribution, rng, device),
        None => Tensor::random(shape, distribution, device),
    }
}
