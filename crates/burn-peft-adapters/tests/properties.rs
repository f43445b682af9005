//! Properties of the adapter configs: what is written as PEFT's `adapter_config.json` reads
//! back as the same config, for any values the checks accept.

use burn_peft_adapters::{AdapterConfig, Ia3Config, LoraConfig, PrefixTuningConfig};
use burn_peft_core::TargetModules;
use proptest::prelude::*;

fn targets() -> impl Strategy<Value = TargetModules> {
    prop_oneof![
        Just(TargetModules::all_linear()),
        prop::collection::vec(
            prop::sample::select(vec!["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]),
            1..4
        )
        .prop_map(TargetModules::names),
        Just(TargetModules::Pattern(r".*\.(q|v)_proj".into())),
    ]
}

fn round_trip(config: AdapterConfig) -> Result<(), TestCaseError> {
    let json = config.to_peft_json().unwrap();
    let back = AdapterConfig::from_peft_json(&json).unwrap();
    // PEFT's file says inference_mode: true; the rest is the config.
    prop_assert_eq!(back.to_peft_json().unwrap(), json);
    Ok(())
}

proptest! {
    #[test]
    fn lora_configs_round_trip(
        r in 1usize..512,
        alpha in 0.5f64..1024.0,
        dropout in 0.0f64..0.9,
        targets in targets(),
        layers in prop::option::of(prop::collection::vec(0usize..32, 1..4)),
        rslora in any::<bool>(),
        dora in any::<bool>(),
    ) {
        let mut config = LoraConfig::new(r)
            .with_lora_alpha(alpha)
            .with_lora_dropout(dropout)
            .with_target_modules(targets)
            .with_use_rslora(rslora)
            .with_use_dora(dora);
        if let Some(layers) = layers {
            config = config.with_layers_to_transform(layers);
        }
        round_trip(AdapterConfig::Lora(config))?;
    }

    #[test]
    fn ia3_and_prefix_configs_round_trip(
        targets in targets(),
        tokens in 1usize..256,
    ) {
        let ia3 = Ia3Config {
            target_modules: Some(targets),
            ..Ia3Config::default()
        };
        round_trip(AdapterConfig::Ia3(ia3))?;
        round_trip(AdapterConfig::Prefix(PrefixTuningConfig::new(tokens)))?;
    }

    /// Any rank the file says, from 0 to 2⁶⁴ − 1, is read or refused without a panic, and a
    /// rank of 0 is refused.
    #[test]
    fn any_rank_in_a_file_is_read_or_refused(r in any::<u64>()) {
        let json = AdapterConfig::Lora(LoraConfig::new(8))
            .to_peft_json()
            .unwrap()
            .replace("\"r\": 8", &format!("\"r\": {r}"));
        let expected = format!("\"r\": {r}");
        prop_assert!(json.contains(&expected));
        let parsed = AdapterConfig::from_peft_json(&json);
        prop_assert_eq!(parsed.is_ok(), r > 0);
    }
}
