//! Builds the policy guests (`policies/`, a workspace of its own) for wasm32-wasip2, so that
//! the `ferrymail` binary carries the default bundle and `cargo build` is the only command an
//! operator needs. The guests get their own target folder next to ours: their release profile
//! (size-optimised, LTO) is not the host's, and a nested cargo must not wait on our lock.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const BUNDLE: [&str; 5] = ["accounts", "encryption", "ratelimit", "privacy", "retention"];
const WASM_TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let policies = manifest_dir.join("../policies");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));

    for watched in ["../wit", "../policies", "../message"] {
        rerun_if_changed_tree(&manifest_dir.join(watched));
    }
    embed_sdk(&manifest_dir.join(".."), &out_dir);

    let target_dir = cargo_target_dir(&out_dir).join("policies");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        // From the policies' folder, so that policies/.cargo/config.toml applies.
        .current_dir(&policies)
        .args(["build", "--release", "--workspace", "--target", WASM_TARGET])
        .arg("--manifest-path")
        .arg(policies.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Settings meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        command.env_remove(var);
    }
    for (key, _) in env::vars() {
        if key.starts_with("CARGO_PROFILE_") || key.starts_with("CARGO_FEATURE_") || key.starts_with("CARGO_CFG_") {
            command.env_remove(key);
        }
    }

    let output = command.output().unwrap_or_else(|e| panic!("cannot run cargo to build the policies: {e}"));
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("may not be installed") || stderr.contains("can't find crate for `core`") {
            panic!("\n\nThe {WASM_TARGET} target is missing. Install it with:\n\n    rustup target add {WASM_TARGET}\n\n");
        }
        panic!("building the policy guests failed:\n{stderr}");
    }

    let guests = target_dir.join(WASM_TARGET).join("release");
    for name in BUNDLE {
        let file = format!("{name}_policy.wasm");
        std::fs::copy(guests.join(&file), out_dir.join(&file))
            .unwrap_or_else(|e| panic!("policy {file} was not built: {e}"));
    }
    // Tests load guests built from `policies/testing/` straight from there.
    println!("cargo:rustc-env=FERRYMAIL_GUEST_DIR={}", guests.display());
}

/// `ferrymail policy new` writes the SDK, the message crate it tests with and the contract
/// into each new policy crate: list them for `include_str!` (src/scaffold.rs).
fn embed_sdk(root: &Path, out_dir: &Path) {
    let mut files = Vec::new();
    for dir in ["policies/sdk", "message"] {
        list_tree(root, &root.join(dir), &mut files);
    }
    files.extend(["wit/policy.wit".to_string(), "wit/CHANGELOG.md".to_string()]);
    files.sort();
    let mut code = String::from("/// (path below the repository root, contents)\npub const SDK_FILES: &[(&str, &str)] = &[\n");
    for file in files {
        code.push_str(&format!("    ({file:?}, include_str!({:?})),\n", root.join(&file).canonicalize().expect("listed file").display()));
    }
    code.push_str("];\n");
    std::fs::write(out_dir.join("sdk_files.rs"), code).expect("OUT_DIR is writable");
}

fn list_tree(root: &Path, dir: &Path, files: &mut Vec<String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("SDK folder").flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if path.is_dir() {
            list_tree(root, &path, files);
        } else {
            files.push(path.strip_prefix(root).expect("below root").to_string_lossy().into_owned());
        }
    }
}

/// Cargo marks the root of a target folder with CACHEDIR.TAG; OUT_DIR lies below it.
fn cargo_target_dir(out_dir: &Path) -> PathBuf {
    out_dir
        .ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| out_dir.to_path_buf())
}

fn rerun_if_changed_tree(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "target") {
            continue;
        }
        if path.is_dir() {
            rerun_if_changed_tree(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
