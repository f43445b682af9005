//! Prefix and prompt tuning on the Llama model: its [`PromptHost`] side. The methods
//! themselves (adding, saving, loading) are written once in `burn-peft-adapters`.

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_peft_adapters::{AddAdapter, PromptGeometry, PromptHost, PromptSlot};
use burn_peft_core::{PeftError, Result};

use super::model::Llama;
use crate::error::ModelError;

impl PromptHost for Llama {
    fn prompt_geometry(&self) -> PromptGeometry {
        PromptGeometry {
            num_layers: self.config.num_hidden_layers,
            hidden_size: self.config.hidden_size,
            num_kv_heads: self.config.num_key_value_heads,
            head_dim: self.config.head_dim(),
        }
    }

    fn prompt_slot(&self) -> &PromptSlot {
        &self.prompt
    }

    fn prompt_slot_mut(&mut self) -> &mut PromptSlot {
        &mut self.prompt
    }

    fn token_embeddings(&self, ids: &[u32]) -> Result<Tensor<2>> {
        self.check_ids(ids).map_err(|e| match e {
            ModelError::InvalidInput(m) => PeftError::InvalidConfig(m),
            other => PeftError::InvalidConfig(other.to_string()),
        })?;
        let n = ids.len();
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, n]),
            &self.prompt_device(),
        );
        let e = self.embed_tokens.forward(ids).detach();
        let [_, n, h] = e.dims();
        Ok(e.reshape([n, h]))
    }

    fn prompt_device(&self) -> Device {
        self.embed_tokens.weight.device()
    }
}

impl AddAdapter for Llama {
    fn prompt_host(&self) -> Option<&dyn PromptHost> {
        Some(self)
    }

    fn prompt_host_mut(&mut self) -> Option<&mut dyn PromptHost> {
        Some(self)
    }
}
