//! Model-wide adapter control: add, activate, disable, delete, merge, unmerge.

use burn::module::Module;
use burn::nn::Linear;

use crate::error::{PeftError, Result};
use crate::host::{AdaptedLinear, LinearAdapter};
use crate::target::{TargetModules, TargetSelector};

/// A model whose linear layers can host adapters.
///
/// Implementing it is the whole cost of making your own burn model adaptable: use
/// [`AdaptedLinear`] where you had `Linear`, and list those layers here under the module paths
/// that PEFT would give them. Every method of [`PeftModel`] then works on your model.
///
/// ```
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::tensor::Device;
/// use burn_peft_core::{AdaptedLinear, AdapterHost, NoAdapter};
///
/// #[derive(Module, Debug)]
/// struct Mlp {
///     up: AdaptedLinear<NoAdapter>,
///     down: AdaptedLinear<NoAdapter>,
/// }
///
/// impl AdapterHost for Mlp {
///     type Adapter = NoAdapter;
///     fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut AdaptedLinear<NoAdapter>)) {
///         f("up", &mut self.up);
///         f("down", &mut self.down);
///     }
/// }
/// ```
pub trait AdapterHost: Module + Sized {
    /// The adapter modules the layers hold.
    type Adapter: LinearAdapter;

    /// Calls `f` once for every adaptable linear layer, with its PEFT module path
    /// (`model.layers.0.self_attn.q_proj`).
    fn visit_adapted_linears(&mut self, f: &mut dyn FnMut(&str, &mut AdaptedLinear<Self::Adapter>));

    /// Calls `f` for every layer trained in full next to the adapters (PEFT's
    /// `modules_to_save`, e.g. a classification head), with its module path. Adding an adapter
    /// leaves these trainable, and adapter files carry them. None by default.
    fn visit_modules_to_save(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
        let _ = f;
    }

    /// Whether the layer at `path` is the model's output layer, which `all-linear` leaves out.
    fn is_output_layer(&self, path: &str) -> bool {
        path == "lm_head" || path.ends_with(".lm_head")
    }

    /// The modules a method adapts when its config names none, by PEFT's `peft_type`
    /// (`"LORA"`, `"IA3"`): this model family's entry in PEFT's
    /// `TRANSFORMERS_MODELS_TO_<METHOD>_TARGET_MODULES_MAPPING`. `None` (the default): the
    /// family has no default, and a config must name its targets.
    fn default_target_modules(&self, peft_type: &str) -> Option<TargetModules> {
        let _ = peft_type;
        None
    }

    /// The targets whose input IA3 scales when its config names none (PEFT's
    /// `TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING`); `None` by default.
    fn default_feedforward_modules(&self) -> Option<TargetModules> {
        None
    }
}

/// Adapter control for every [`AdapterHost`], named after HF PEFT's methods.
///
/// Queries take `&self` and work on a cheap clone of the model (tensors are shared handles).
pub trait PeftModel: AdapterHost {
    /// Adds the adapter `name` to every layer `selector` picks, built by `make(path, base)`.
    ///
    /// Every parameter outside the adapters is frozen. The first adapter of a model becomes
    /// active; later ones wait for [`set_adapter`](Self::set_adapter), as in PEFT. Nothing
    /// changes when an error is returned. Returns the adapted module paths.
    fn add_adapter_with<F>(
        &mut self,
        name: &str,
        selector: &TargetSelector,
        mut make: F,
    ) -> Result<Vec<String>>
    where
        F: FnMut(&str, &Linear) -> Result<Self::Adapter>,
    {
        selector.validate()?;
        if self.adapter_names().iter().any(|n| n == name) {
            return Err(PeftError::DuplicateAdapter(name.to_string()));
        }
        let mut built: Vec<(String, Self::Adapter)> = Vec::new();
        let mut error = None;
        let probe = self.clone();
        self.clone().visit_adapted_linears(&mut |path, layer| {
            if error.is_some() {
                return;
            }
            match selector.selects(path, probe.is_output_layer(path)) {
                Ok(true) => match make(path, &layer.base) {
                    Ok(adapter) => built.push((path.to_string(), adapter)),
                    Err(e) => error = Some(e),
                },
                Ok(false) => {}
                Err(e) => error = Some(e),
            }
        });
        if let Some(e) = error {
            return Err(e);
        }
        if built.is_empty() {
            return Err(PeftError::NoTargetMatched {
                targets: selector.target_modules.to_string(),
            });
        }
        let first = self.adapter_names().is_empty();
        let active = if first {
            vec![name.to_string()]
        } else {
            self.active_adapters()
        };
        let paths: Vec<String> = built.iter().map(|(p, _)| p.clone()).collect();
        let mut built = built.into_iter().peekable();
        let frozen = self.clone().no_grad();
        *self = frozen;
        self.visit_modules_to_save(&mut |_, layer| {
            *layer = layer.clone().set_require_grad(true);
        });
        self.visit_adapted_linears(&mut |path, layer| {
            if built.peek().is_some_and(|(p, _)| p == path)
                && let Some((_, adapter)) = built.next()
            {
                // The name was checked to be free on every layer above.
                let _ = layer.add(name, adapter);
            }
            layer.set_active(&active);
        });
        Ok(paths)
    }

    /// Names of every adapter, in the order they were first seen.
    fn adapter_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        self.clone().visit_adapted_linears(&mut |_, layer| {
            for n in &layer.names {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        });
        names
    }

    /// Names of the active adapters.
    fn active_adapters(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        self.clone().visit_adapted_linears(&mut |_, layer| {
            for n in &layer.active {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        });
        names
    }

    /// Makes `names` the active adapters: their outputs add up, and only they train.
    fn set_adapter(&mut self, names: &[&str]) -> Result<()> {
        all_known(&self.adapter_names(), names)?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.visit_adapted_linears(&mut |_, layer| layer.set_active(&names));
        Ok(())
    }

    /// Turns gradients on or off for the adapters `names` without changing which are active,
    /// as PEFT's `set_requires_grad`: an adapter can run frozen next to one that trains
    /// (O-LoRA keeps earlier tasks' adapters so). Whatever re-applies the active set resets
    /// it: [`set_adapter`](Self::set_adapter), and adding or loading an adapter.
    fn set_requires_grad(&mut self, names: &[&str], requires_grad: bool) -> Result<()> {
        all_known(&self.adapter_names(), names)?;
        self.visit_adapted_linears(&mut |_, layer| {
            for name in names {
                if let Some(i) = layer.position(name) {
                    let adapter = layer.adapters.remove(i);
                    layer
                        .adapters
                        .insert(i, adapter.set_trainable(requires_grad));
                }
            }
        });
        Ok(())
    }

    /// Runs the base model alone until [`enable_adapters`](Self::enable_adapters); merged
    /// adapters are unmerged first.
    fn disable_adapters(&mut self) -> Result<()> {
        self.unmerge_adapter()?;
        self.visit_adapted_linears(&mut |_, layer| layer.disabled = true);
        Ok(())
    }

    /// Undoes [`disable_adapters`](Self::disable_adapters).
    fn enable_adapters(&mut self) {
        self.visit_adapted_linears(&mut |_, layer| layer.disabled = false);
    }

    /// Removes the adapter `name` from every layer. It must not be merged.
    fn delete_adapter(&mut self, name: &str) -> Result<()> {
        if !self.adapter_names().iter().any(|n| n == name) {
            return Err(PeftError::UnknownAdapter(name.to_string()));
        }
        let mut merged = false;
        self.clone().visit_adapted_linears(&mut |_, layer| {
            merged |= layer.merged.iter().any(|m| m == name);
        });
        if merged {
            return Err(PeftError::AdapterMerged(name.to_string()));
        }
        self.visit_adapted_linears(&mut |_, layer| {
            // Checked above: not merged, so deletion cannot fail.
            let _ = layer.delete(name);
        });
        Ok(())
    }

    /// Folds adapters into the base weights: `names`, or the active adapters when `None`.
    fn merge_adapter(&mut self, names: Option<&[&str]>) -> Result<()> {
        let names: Vec<String> = match names {
            Some(n) => {
                all_known(&self.adapter_names(), n)?;
                n.iter().map(|s| s.to_string()).collect()
            }
            None => self.active_adapters(),
        };
        let mut result = Ok(());
        self.visit_adapted_linears(&mut |_, layer| {
            if result.is_ok() {
                result = layer.merge(&names);
            }
        });
        result
    }

    /// Restores the base weights of every merged adapter.
    fn unmerge_adapter(&mut self) -> Result<()> {
        let mut result = Ok(());
        self.visit_adapted_linears(&mut |_, layer| {
            if result.is_ok() {
                result = layer.unmerge();
            }
        });
        result
    }

    /// Merges the active adapters and removes every adapter: the plain model with new weights.
    fn merge_and_unload(mut self) -> Result<Self> {
        self.merge_adapter(None)?;
        self.unload();
        Ok(self)
    }

    /// Removes every adapter without unmerging: merged ones stay in the weights.
    fn unload(&mut self) {
        self.visit_adapted_linears(&mut |_, layer| {
            layer.adapters.clear();
            layer.names.clear();
            layer.active.clear();
            layer.merged.clear();
            layer.disabled = false;
        });
    }

    /// Module paths of the layers trained in full (see [`AdapterHost::visit_modules_to_save`]).
    fn modules_to_save(&self) -> Vec<String> {
        let mut paths = Vec::new();
        self.clone()
            .visit_modules_to_save(&mut |path, _| paths.push(path.to_string()));
        paths
    }

    /// Calls `f` with the module path and adapter for every layer that holds adapter `name`.
    fn visit_adapter(&mut self, name: &str, f: &mut dyn FnMut(&str, &mut Self::Adapter)) {
        self.visit_adapted_linears(&mut |path, layer| {
            if let Some(a) = layer.adapter_mut(name) {
                f(path, a);
            }
        });
    }
}

impl<M: AdapterHost> PeftModel for M {}

/// `UnknownAdapter` for the first of `names` that is not in `known`.
fn all_known(known: &[String], names: &[&str]) -> Result<()> {
    match names.iter().find(|n| !known.iter().any(|k| k == *n)) {
        Some(unknown) => Err(PeftError::UnknownAdapter(unknown.to_string())),
        None => Ok(()),
    }
}
