//! `ferrymail policy new NAME`: a policy crate that builds and passes its own tests out of the
//! box. It carries a copy of this relay's SDK and contract in `NAME/ferrymail/` (the SDK is not
//! on crates.io), and the bundle's Cargo.lock, so it builds with the versions the relay was
//! tested with.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

include!(concat!(env!("OUT_DIR"), "/sdk_files.rs"));

const LIB: &str = include_str!("scaffold/lib.rs.in");
const README: &str = include_str!("scaffold/README.md.in");
const LOCK: &str = include_str!("../../policies/Cargo.lock");
const CARGO_CONFIG: &str = include_str!("../../policies/.cargo/config.toml");

/// Write the crate for policy `name` into `dir` (which must not exist or be empty).
/// Returns the path the built component will have, relative to `dir`.
pub fn new_policy(name: &str, dir: &Path) -> Result<PathBuf> {
    check_name(name)?;
    if dir.read_dir().is_ok_and(|mut entries| entries.next().is_some()) {
        bail!("{} exists and is not empty", dir.display());
    }
    let file = name.replace('-', "_");
    let fill = |template: &str| template.replace("__NAME__", name).replace("__TYPE__", &type_name(name)).replace("__FILE__", &file);
    let mut files: Vec<(PathBuf, String)> = vec![
        ("Cargo.toml".into(), manifest(name)),
        ("src/lib.rs".into(), fill(LIB)),
        ("README.md".into(), fill(README)),
        ("Cargo.lock".into(), LOCK.to_string()),
        (".cargo/config.toml".into(), CARGO_CONFIG.to_string()),
        (".gitignore".into(), "/target\n".to_string()),
    ];
    files.extend(SDK_FILES.iter().map(|(path, text)| (Path::new("ferrymail").join(path), text.to_string())));
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a folder"))
            .with_context(|| format!("cannot create {}", path.parent().unwrap_or(dir).display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(Path::new("target/wasm32-wasip2/release").join(format!("{file}.wasm")))
}

/// A crate name that is also a readable policy name: `a-z`, digits and `-`, starting with a letter.
fn check_name(name: &str) -> Result<()> {
    let valid = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-');
    if !valid {
        bail!("`{name}` is not a policy name: use a-z, 0-9 and '-', starting with a letter (e.g. `block-list`)");
    }
    Ok(())
}

/// `block-list` -> `BlockList`.
fn type_name(name: &str) -> String {
    name.split('-')
        .filter(|w| !w.is_empty())
        .map(|w| w[..1].to_ascii_uppercase() + &w[1..])
        .collect()
}

fn manifest(name: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
publish = false

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
ferrymail-policy = {{ path = "ferrymail/policies/sdk" }}
serde = {{ version = "1", default-features = false, features = ["derive", "alloc"] }}

# The copy of the SDK in ferrymail/ takes these from here.
[workspace]
[workspace.package]
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
license = "MIT OR Apache-2.0"

[workspace.dependencies]
ferrymail-policy = {{ path = "ferrymail/policies/sdk" }}
serde = {{ version = "1", default-features = false, features = ["derive", "alloc"] }}
serde_json = {{ version = "1", default-features = false, features = ["alloc"] }}

# A policy is compiled once by the relay and instantiated for every call: keep it small.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true
debug = false
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(type_name("block-list"), "BlockList");
        assert_eq!(type_name("a1"), "A1");
        assert!(check_name("block-list").is_ok());
        for bad in ["", "Block", "1abc", "a_b", "a-", "../x", "a b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sdk_and_contract_are_embedded() {
        let paths: Vec<&str> = SDK_FILES.iter().map(|(p, _)| *p).collect();
        for needed in ["policies/sdk/Cargo.toml", "policies/sdk/src/lib.rs", "message/src/armor.rs", "wit/policy.wit"] {
            assert!(paths.contains(&needed), "{needed} missing from {paths:?}");
        }
    }
}
