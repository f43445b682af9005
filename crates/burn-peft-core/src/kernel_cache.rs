//! cubecl's on-disk caches for the GPU backends (`cuda`, `vulkan`, `wgpu`).
//!
//! A fresh process on a GPU compiles every kernel it launches and autotunes every matmul
//! shape. cubecl keeps its autotune results on disk by default but not its compiled kernels:
//! with autotune results alone, a second run's first LoRA step still compiles every kernel.
//! burn-peft turns the compiled-kernel cache on too, so a second run of the same model loads
//! its kernels instead of compiling them (the H100 figures are in `docs/benchmarks.md`).
//! cubecl caches compiled kernels for CUDA and for the SPIR-V path (`vulkan` feature); the
//! WGSL path (`wgpu` alone) compiles its shaders in every process and keeps only the autotune
//! results.
//!
//! `BURN_PEFT_KERNEL_CACHE` decides, read once when the first GPU device is opened:
//!
//! | value | effect |
//! | --- | --- |
//! | unset or empty | kernels and autotune results cached where cubecl puts them: `target/environment` of the outermost Cargo project above the working directory, else the user cache directory (`~/.cache/cubecl`) |
//! | a directory | the same, in that directory |
//! | `off` (or `0`, `false`, `none`) | cubecl's own configuration, untouched (`cubecl.toml`, `burn.toml`, `CUBECL_*`) |
//!
//! A `cubecl.toml` or `burn.toml` is read first in every case; only its `compilation.cache`
//! (and, given a directory, `environment.path`) is overridden.

/// Turns on cubecl's compiled-kernel cache unless `BURN_PEFT_KERNEL_CACHE` is `off`; a no-op after
/// the first call, and a no-op when cubecl's configuration was already read or set.
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
pub(crate) fn configure() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let setting = std::env::var("BURN_PEFT_KERNEL_CACHE").unwrap_or_default();
        if let Some(config) = config_for(&setting) {
            use burn::cubecl::config::RuntimeConfig;
            // false: the application set its own configuration first; it wins.
            let _ = burn::cubecl::config::CubeClRuntimeConfig::try_set(config);
        }
    });
}

/// The configuration `BURN_PEFT_KERNEL_CACHE=setting` asks for, or `None` for cubecl's own.
#[cfg(any(feature = "wgpu", feature = "vulkan", feature = "cuda"))]
fn config_for(setting: &str) -> Option<burn::cubecl::config::CubeClRuntimeConfig> {
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
    let setting = setting.trim();
    if ["off", "0", "false", "none"]
        .iter()
        .any(|off| setting.eq_ignore_ascii_case(off))
    {
        return None;
    }
    let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
    config.compilation.cache = true;
    if !setting.is_empty() {
        config.environment.path = CacheConfig::Directory(setting.into());
    }
    Some(config)
}

#[cfg(all(test, any(feature = "wgpu", feature = "vulkan", feature = "cuda")))]
mod tests {
    use super::*;
    use burn::cubecl::config::cache::CacheConfig;

    #[test]
    fn the_setting_picks_the_cache() {
        for off in ["off", " OFF ", "0", "false", "None"] {
            assert!(config_for(off).is_none(), "{off}");
        }
        let default = config_for("").expect("cache on by default");
        assert!(default.compilation.cache);
        assert!(matches!(default.environment.path, CacheConfig::Target));
        let chosen = config_for("/tmp/kernels").expect("a directory");
        assert!(chosen.compilation.cache);
        match chosen.environment.path {
            CacheConfig::Directory(dir) => assert_eq!(dir, std::path::Path::new("/tmp/kernels")),
            other => panic!("expected a directory, got {other:?}"),
        }
    }
}
