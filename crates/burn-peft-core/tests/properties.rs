//! Properties of target selection against independent formulations of PEFT's rules.

use burn_peft_core::{TargetModules, TargetSelector};
use proptest::prelude::*;

/// A module-path component: a name or a layer number.
fn component() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,8}",
        (0usize..40).prop_map(|n| n.to_string()),
        Just("q_proj".to_string()),
        Just("layers".to_string()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(component(), 1..6).prop_map(|c| c.join("."))
}

proptest! {
    /// PEFT's name rule (`key == name` or `key.endswith("." + name)`) is the regex
    /// `(.*\.)?(name1|name2|...)` matched in full.
    #[test]
    fn a_name_list_matches_as_the_equivalent_regex(
        names in prop::collection::vec("[a-z_]{1,8}", 1..4),
        path in path(),
    ) {
        let escaped: Vec<String> = names.iter().map(|n| regex::escape(n)).collect();
        let pattern = format!(r"(.*\.)?({})", escaped.join("|"));
        let by_names = TargetModules::names(names.clone()).matches(&path).unwrap();
        let by_regex = TargetModules::Pattern(pattern).matches(&path).unwrap();
        prop_assert_eq!(by_names, by_regex);
    }

    /// `layers_to_transform` selects exactly the listed layers of a decoder path, and an
    /// exclusion always wins.
    #[test]
    fn layers_and_exclusions_select_what_they_say(
        layer in 0usize..64,
        listed in prop::collection::vec(0usize..64, 0..6),
        module in prop::sample::select(vec!["q_proj", "k_proj", "v_proj", "o_proj"]),
        excluded in any::<bool>(),
    ) {
        let path = format!("model.layers.{layer}.self_attn.{module}");
        let mut selector = TargetSelector::new(TargetModules::all_linear())
            .with_layers(listed.clone());
        if excluded {
            selector = selector.with_exclude(TargetModules::names([module]));
        }
        prop_assert_eq!(selector.layer_index(&path), Some(layer));
        prop_assert_eq!(
            selector.selects(&path, false).unwrap(),
            !excluded && listed.contains(&layer)
        );
        // all-linear never takes the output layer.
        prop_assert!(!selector.selects("lm_head", true).unwrap());
    }
}
