//! What the benches share.

use burn::module::Module;
use burn_peft::prelude::*;

/// A model of one adapted linear layer, called `proj`.
#[derive(Module, Debug)]
pub struct One {
    pub proj: AdaptedLinear<Adapter>,
}

impl AdapterHost for One {
    type Adapter = Adapter;
    fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut AdaptedLinear<Adapter>)) {
        f("proj", &mut self.proj);
    }
}

impl AddAdapter for One {}
