//! Choosing which modules get an adapter, with HF PEFT's rules.
//!
//! - a list of names matches a module whose path equals a name or ends with `.<name>`;
//! - a single string is a regular expression that must match the whole path;
//! - `all-linear` matches every linear layer except the output layer;
//! - `exclude_modules` uses the same rules and wins over the targets;
//! - `layers_to_transform` keeps only modules under `<pattern>.<index>.` with a listed index.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::{PeftError, Result};

/// PEFT's `target_modules` / `exclude_modules` value: a list of names, a regex, or `all-linear`.
///
/// It serializes as PEFT writes it: a JSON list or a JSON string.
///
/// ```
/// use burn_peft_core::TargetModules;
/// let t = TargetModules::names(["q_proj", "v_proj"]);
/// assert!(t.matches("model.layers.0.self_attn.q_proj").unwrap());
/// assert!(!t.matches("model.layers.0.self_attn.k_proj").unwrap());
/// let r = TargetModules::Pattern(r".*\.mlp\.(up|down)_proj".into());
/// assert!(r.matches("model.layers.3.mlp.up_proj").unwrap());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    /// Module names (suffixes of the path).
    Names(Vec<String>),
    /// A regular expression on the full path, or the literal `all-linear`.
    Pattern(String),
}

/// The literal that selects every linear layer but the output layer.
pub const ALL_LINEAR: &str = "all-linear";

impl TargetModules {
    /// A list of module names.
    pub fn names<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        TargetModules::Names(names.into_iter().map(Into::into).collect())
    }

    /// `all-linear`.
    pub fn all_linear() -> Self {
        TargetModules::Pattern(ALL_LINEAR.to_string())
    }

    /// Whether this is the `all-linear` shorthand.
    pub fn is_all_linear(&self) -> bool {
        matches!(self, TargetModules::Pattern(p) if p == ALL_LINEAR)
    }

    /// Whether the module at `path` is selected (`all-linear` selects everything here: the
    /// output-layer exception is applied by [`TargetSelector`]).
    pub fn matches(&self, path: &str) -> Result<bool> {
        Ok(match self {
            TargetModules::Names(names) => names
                .iter()
                .any(|n| path == n || path.ends_with(&format!(".{n}"))),
            TargetModules::Pattern(p) if p == ALL_LINEAR => true,
            TargetModules::Pattern(p) => full_match(p)?.is_match(path),
        })
    }
}

impl std::fmt::Display for TargetModules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetModules::Names(n) => write!(f, "[{}]", n.join(", ")),
            TargetModules::Pattern(p) => write!(f, "'{p}'"),
        }
    }
}

fn full_match(pattern: &str) -> Result<Regex> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| PeftError::InvalidRegex {
        pattern: pattern.to_string(),
        message: e.to_string(),
    })
}

/// The full selection rule of one adapter: targets, exclusions and layer indices.
///
/// ```
/// use burn_peft_core::{TargetModules, TargetSelector};
/// let sel = TargetSelector::new(TargetModules::all_linear())
///     .with_exclude(TargetModules::names(["o_proj"]))
///     .with_layers(vec![1]);
/// assert!(sel.selects("model.layers.1.self_attn.q_proj", false).unwrap());
/// assert!(!sel.selects("model.layers.0.self_attn.q_proj", false).unwrap());
/// assert!(!sel.selects("model.layers.1.self_attn.o_proj", false).unwrap());
/// assert!(!sel.selects("lm_head", true).unwrap());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSelector {
    /// What to adapt.
    pub target_modules: TargetModules,
    /// What never to adapt.
    pub exclude_modules: Option<TargetModules>,
    /// Only these layer indices (all when `None`).
    pub layers_to_transform: Option<Vec<usize>>,
    /// The name of the layer container in paths (PEFT's defaults when `None`).
    pub layers_pattern: Option<Vec<String>>,
}

impl TargetSelector {
    /// Selects `target_modules`, with no exclusions and every layer.
    pub fn new(target_modules: TargetModules) -> Self {
        Self {
            target_modules,
            exclude_modules: None,
            layers_to_transform: None,
            layers_pattern: None,
        }
    }

    /// Adds exclusions.
    pub fn with_exclude(mut self, exclude: TargetModules) -> Self {
        self.exclude_modules = Some(exclude);
        self
    }

    /// Keeps only these layer indices.
    pub fn with_layers(mut self, layers: Vec<usize>) -> Self {
        self.layers_to_transform = Some(layers);
        self
    }

    /// Checks that every regex compiles, so that errors surface before a model is touched.
    pub fn validate(&self) -> Result<()> {
        self.target_modules.matches("")?;
        if let Some(e) = &self.exclude_modules {
            e.matches("")?;
        }
        Ok(())
    }

    /// Whether the linear layer at `path` gets the adapter. `is_output_layer` marks the model's
    /// output projection, which `all-linear` leaves out as PEFT does.
    pub fn selects(&self, path: &str, is_output_layer: bool) -> Result<bool> {
        if let Some(exclude) = &self.exclude_modules
            && !exclude.is_all_linear()
            && exclude.matches(path)?
        {
            return Ok(false);
        }
        if self.target_modules.is_all_linear() && is_output_layer {
            return Ok(false);
        }
        if !self.target_modules.matches(path)? {
            return Ok(false);
        }
        match &self.layers_to_transform {
            None => Ok(true),
            Some(layers) => Ok(self
                .layer_index(path)
                .is_some_and(|index| layers.contains(&index))),
        }
    }

    /// The layer index in `path`: as PEFT, the first all-digit component between dots, or with
    /// `layers_pattern` the number right after one of the named containers.
    pub fn layer_index(&self, path: &str) -> Option<usize> {
        let parts: Vec<&str> = path.split('.').collect();
        let inner = parts.len().saturating_sub(1);
        match &self.layers_pattern {
            None => parts[..inner]
                .iter()
                .skip(1)
                .find_map(|p| p.parse::<usize>().ok()),
            Some(names) => parts[..inner]
                .windows(2)
                .find(|w| names.iter().any(|n| n == w[0]))
                .and_then(|w| w[1].parse().ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_suffixes_only_at_dots() {
        let t = TargetModules::names(["proj"]);
        assert!(!t.matches("model.layers.0.self_attn.q_proj").unwrap());
        assert!(t.matches("proj").unwrap());
        assert!(t.matches("a.proj").unwrap());
    }

    #[test]
    fn regex_must_match_the_whole_path() {
        let t = TargetModules::Pattern("q_proj".into());
        assert!(!t.matches("model.layers.0.self_attn.q_proj").unwrap());
        let t = TargetModules::Pattern(r".*q_proj".into());
        assert!(t.matches("model.layers.0.self_attn.q_proj").unwrap());
    }

    #[test]
    fn bad_regex_is_an_error() {
        let t = TargetModules::Pattern("(".into());
        assert!(matches!(
            t.matches("x"),
            Err(PeftError::InvalidRegex { .. })
        ));
    }

    #[test]
    fn serializes_like_peft() {
        let list: TargetModules = serde_json::from_str(r#"["q_proj","v_proj"]"#).unwrap();
        assert_eq!(list, TargetModules::names(["q_proj", "v_proj"]));
        let all: TargetModules = serde_json::from_str(r#""all-linear""#).unwrap();
        assert!(all.is_all_linear());
        assert_eq!(serde_json::to_string(&all).unwrap(), r#""all-linear""#);
    }

    #[test]
    fn layer_index_uses_the_container_name() {
        let sel = TargetSelector::new(TargetModules::all_linear());
        assert_eq!(sel.layer_index("model.layers.12.mlp.up_proj"), Some(12));
        assert_eq!(
            sel.layer_index("encoder.layer.3.attention.self.query"),
            Some(3)
        );
        assert_eq!(sel.layer_index("lm_head"), None);
        let custom = TargetSelector {
            layers_pattern: Some(vec!["blocks".into()]),
            ..sel
        };
        assert_eq!(custom.layer_index("model.layers.2.q"), None);
        assert_eq!(custom.layer_index("net.blocks.2.q"), Some(2));
    }
}
