//! Figure (d): the Delta Chat scenarios (bench/deltachat_scenarios.py) with the real core from
//! the repository's Python environment (.venv, which the README test command creates).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use crate::system::{PASSWORD, System};

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn available() -> bool {
    repository().join(".venv/bin/deltachat-rpc-server").exists()
}

/// Seconds of every round of each scenario, by scenario name.
pub fn scenarios(system: &dyn System, first_account: usize, rounds: usize) -> BTreeMap<String, Vec<f64>> {
    let root = repository();
    let host = system.ports().imaps.ip().to_string();
    let out = Command::new(root.join(".venv/bin/python"))
        .arg(root.join("bench/deltachat_scenarios.py"))
        .args(["--host", &host, "--domain", system.domain(), "--password", PASSWORD])
        .args(["--first-account", &first_account.to_string(), "--rounds", &rounds.to_string()])
        .arg("--rpc-server")
        .arg(root.join(".venv/bin/deltachat-rpc-server"))
        .output()
        .expect("python from .venv");
    assert!(
        out.status.success(),
        "Delta Chat scenarios on {} failed:\n{}\n{}",
        system.name(),
        String::from_utf8_lossy(&out.stderr),
        system.failure_context()
    );
    serde_json::from_slice(&out.stdout).expect("the scenarios print JSON")
}
