//! Helpers shared by the integration tests: a bundle on an in-memory store, the test guests,
//! and real OpenPGP messages made with sequoia.
#![allow(dead_code)]

pub mod client;
pub mod dns;
pub mod http;
pub mod mail;
pub mod net;
pub mod pebble;
pub mod pgp;
pub mod postfix;
pub mod relay;
pub mod serve;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrymail::clock::Clock;
use ferrymail::config::Config;
use ferrymail::metrics::Metrics;
use ferrymail::policy::{Policies, Services};
use ferrymail::store::Store;

pub fn services() -> Services {
    Services { store: Store::open_in_memory().unwrap(), clock: Clock::default(), metrics: Arc::new(Metrics::default()) }
}

/// The bundle `config` names, loaded like the server loads it. Compiled components are
/// cached across tests: compiling is the slow part of loading in a debug build.
pub fn policies(config: &Config) -> Policies {
    Policies::load(config, None, services(), Some(compile_cache())).unwrap()
}

pub fn compile_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-cache")
}

/// A config for the relay `c.test` with the default bundle.
pub fn config() -> Config {
    Config::parse("mail_domain = \"c.test\"").unwrap().config
}

/// A component built from `policies/testing/<name>` by build.rs.
pub fn guest(name: &str) -> PathBuf {
    PathBuf::from(env!("FERRYMAIL_GUEST_DIR")).join(format!("{name}_policy.wasm"))
}

/// Give a relay's `cache` folder the bundle compiled by an earlier test: compiling it takes
/// seconds in a debug build (half a minute for the binary on a fresh data_dir).
pub fn seed_compile_cache(cache: &Path) {
    let shared = compile_cache();
    if std::fs::read_dir(&shared).map(|d| d.count()).unwrap_or(0) < ferrymail::policy::DEFAULT_BUNDLE.len() {
        drop(policies(&config()));
    }
    std::fs::create_dir_all(cache).unwrap();
    for entry in std::fs::read_dir(&shared).unwrap().flatten() {
        let _ = std::fs::copy(entry.path(), cache.join(entry.file_name()));
    }
}

/// A folder for builds the tests make themselves (example policies, scaffolded crates): next
/// to the tests' own target folder, so that the next run rebuilds only what changed. One per
/// checkout: two checkouts at different paths sharing a target folder (CI's) would otherwise
/// mix their path dependencies' builds ("multiple different versions of crate ...").
pub fn build_dir(name: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut checkout = std::collections::hash_map::DefaultHasher::new();
    env!("CARGO_MANIFEST_DIR").hash(&mut checkout);
    // The tests run from <target>/debug/deps/.
    let target = std::env::current_exe().unwrap().ancestors().nth(3).unwrap().to_path_buf();
    target.join(format!("{name}-{:08x}", checkout.finish() as u32))
}

/// `cargo ARGS` in `dir`, the way an author runs it: none of the settings cargo gave this test.
pub fn cargo(dir: &Path, args: &[&str]) -> std::process::Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    command.current_dir(dir).args(args);
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"] {
        command.env_remove(var);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "cargo {args:?} in {} failed:\n{}", dir.display(), String::from_utf8_lossy(&output.stderr));
    output
}
