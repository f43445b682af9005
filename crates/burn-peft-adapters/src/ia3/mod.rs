//! IA3: learned vectors that rescale activations, as in HF PEFT's `tuners/ia3`.
//!
//! On attention projections the vector multiplies the layer's output (`[out]`, saved as PEFT's
//! `ia3_l` `[out, 1]`); on feed-forward projections it multiplies the layer's input (`[in]`,
//! saved as `[1, in]`). Several active IA3 adapters multiply.

mod config;
mod layer;

pub use config::Ia3Config;
pub use layer::Ia3;

use burn_peft_core::Result;

use crate::model::AddAdapter;
use crate::{Adapter, MethodConfig};

impl MethodConfig for Ia3Config {
    const PEFT_TYPE: &'static str = "IA3";

    fn validate(&self) -> Result<()> {
        Ia3Config::validate(self)
    }

    fn add_to<M: AddAdapter>(&self, model: &mut M, name: &str) -> Result<Vec<String>> {
        let config = self.clone().with_defaults_of(model)?;
        config.validate()?;
        model.add_adapter_with(name, &config.selector(), |path, base| {
            let dims = base.weight.shape().dims::<2>();
            Ok(Adapter::Ia3(Ia3::init(
                &config,
                path,
                dims,
                &base.weight.device(),
            )?))
        })
    }

    fn for_loading(mut self) -> Self {
        self.inference_mode = false;
        self
    }

    fn set_modules_to_save(&mut self, modules: Option<Vec<String>>) {
        self.modules_to_save = modules;
    }
}
