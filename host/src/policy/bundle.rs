//! A bundle: the configured policies, compiled, linked and asked who they are. A bundle is
//! immutable once loaded; a reload builds a new one and swaps it in whole.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::{Component, ComponentExportIndex, InstancePre};

use super::bindings::types::PolicyInfo;
use super::builtin;
use super::call::{self, CallState, PolicyMeta};
use super::engine::PolicyEngine;
use super::{CONTRACT_VERSION, Services};
use crate::config::{Config, FailMode, PolicyEntry};

/// The hooks of the contract, by their WIT names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    CreateAccount,
    NewAccount,
    MailFrom,
    RcptTo,
    CheckMessage,
    Retention,
}

impl Hook {
    pub const ALL: [Hook; 6] =
        [Hook::CreateAccount, Hook::NewAccount, Hook::MailFrom, Hook::RcptTo, Hook::CheckMessage, Hook::Retention];

    pub fn wit_name(self) -> &'static str {
        match self {
            Hook::CreateAccount => "create-account",
            Hook::NewAccount => "new-account",
            Hook::MailFrom => "mail-from",
            Hook::RcptTo => "rcpt-to",
            Hook::CheckMessage => "check-message",
            Hook::Retention => "retention",
        }
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.wit_name())
    }
}

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Builtin(String),
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Builtin(name) => write!(f, "builtin:{name}"),
            Origin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

pub(crate) struct LoadedPolicy {
    pub meta: Arc<PolicyMeta>,
    pub origin: Origin,
    pub fail_mode: FailMode,
    pub pre: InstancePre<CallState>,
    /// The hooks this policy implements and exports.
    hooks: Vec<(Hook, ComponentExportIndex)>,
    /// Hex SHA-256 of the component file.
    pub sha256: String,
}

impl LoadedPolicy {
    pub fn export(&self, hook: Hook) -> Option<&ComponentExportIndex> {
        self.hooks.iter().find(|(h, _)| *h == hook).map(|(_, index)| index)
    }

    pub fn hooks(&self) -> impl Iterator<Item = Hook> + '_ {
        self.hooks.iter().map(|(h, _)| *h)
    }
}

pub(crate) struct Bundle {
    pub generation: u64,
    pub policies: Vec<LoadedPolicy>,
}

impl Bundle {
    /// Compile, link and describe every policy the config names (the default bundle when it
    /// names none). Any failure refuses the whole bundle, with a message naming the policy.
    pub fn load(engine: &PolicyEngine, services: &Services, config: &Config, generation: u64) -> Result<Bundle, String> {
        let entries: Vec<PolicyEntry> = if config.policy.is_empty() {
            builtin::DEFAULT_BUNDLE
                .iter()
                .map(|name| PolicyEntry {
                    name: None,
                    path: None,
                    builtin: Some(name.to_string()),
                    fail_mode: None,
                    config: Default::default(),
                })
                .collect()
        } else {
            config.policy.clone()
        };
        let params = config.policy_params();
        let mut policies: Vec<LoadedPolicy> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let origin = match (&entry.builtin, &entry.path) {
                (Some(name), _) => Origin::Builtin(name.clone()),
                (None, Some(path)) => Origin::File(path.clone()),
                (None, None) => return Err(format!("policy {}: needs `path` or `builtin`", i + 1)),
            };
            let fail_mode = entry.fail_mode.unwrap_or(engine.settings.fail_mode);
            let policy = load_one(engine, services, entry, &origin, fail_mode, &params)
                .map_err(|e| format!("policy {} ({origin}): {e}", i + 1))?;
            if policies.iter().any(|p| p.meta.name == policy.meta.name) {
                return Err(format!(
                    "policy {} ({origin}): another policy is already named `{}`; give one a `name`",
                    i + 1,
                    policy.meta.name
                ));
            }
            policies.push(policy);
        }
        Ok(Bundle { generation, policies })
    }

    /// The policies implementing `hook`, in chain order.
    pub fn with_hook(&self, hook: Hook) -> impl Iterator<Item = (&LoadedPolicy, &ComponentExportIndex)> {
        self.policies.iter().filter_map(move |p| p.export(hook).map(|index| (p, index)))
    }
}

fn load_one(
    engine: &PolicyEngine,
    services: &Services,
    entry: &PolicyEntry,
    origin: &Origin,
    fail_mode: FailMode,
    params: &serde_json::Map<String, serde_json::Value>,
) -> Result<LoadedPolicy, String> {
    let owned;
    let wasm: &[u8] = match origin {
        Origin::Builtin(name) => builtin::wasm(name).ok_or_else(|| {
            format!("there is no built-in policy `{name}` (there are: {})", builtin::DEFAULT_BUNDLE.join(", "))
        })?,
        Origin::File(path) => {
            owned = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
            &owned
        }
    };
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(wasm))
    };
    let component = engine.component(wasm)?;
    let pre = engine.link(&component)?;
    let exports = find_hooks(engine, &component)?;

    let mut config = params.clone();
    for (key, value) in &entry.config {
        let value = serde_json::to_value(value).map_err(|e| format!("config `{key}`: {e}"))?;
        config.insert(key.clone(), value);
    }
    let config_json = serde_json::Value::Object(config).to_string();

    // Ask the policy who it is: the smoke test of a fresh load.
    let describe = exports.iter().find(|(name, _)| name == "describe").map(|(_, index)| index.clone());
    let describe = describe.ok_or("does not export `describe`")?;
    let provisional = LoadedPolicy {
        meta: Arc::new(PolicyMeta::new(entry.name.clone().unwrap_or_else(|| "(loading)".into()), config_json)),
        origin: origin.clone(),
        fail_mode,
        pre,
        hooks: Vec::new(),
        sha256,
    };
    let (info,): (PolicyInfo,) = call::call(engine, services, &provisional, &describe, |_| Ok(()))
        .map_err(|f| format!("describe failed ({}): {}", f.kind.as_str(), f.detail))?;
    let name = entry.name.clone().unwrap_or(info.name);
    check_name(&name)?;

    let mut hooks = Vec::new();
    for declared in &info.hooks {
        let Some(hook) = Hook::ALL.iter().copied().find(|h| h.wit_name() == declared) else {
            tracing::warn!(policy = %name, "ignoring unknown hook `{declared}` (contract {CONTRACT_VERSION})");
            continue;
        };
        let index = exports.iter().find(|(n, _)| n == declared).map(|(_, i)| i.clone());
        let index = index.ok_or_else(|| format!("declares hook `{declared}` but does not export it"))?;
        if !hooks.iter().any(|(h, _)| *h == hook) {
            hooks.push((hook, index));
        }
    }
    Ok(LoadedPolicy {
        meta: Arc::new(PolicyMeta::new(name, provisional.meta.config_json.clone())),
        hooks,
        ..provisional
    })
}

/// The functions of the exported hooks interface, by name.
fn find_hooks(engine: &PolicyEngine, component: &Component) -> Result<Vec<(String, ComponentExportIndex)>, String> {
    let wanted = format!("chatmail:policy/hooks@{CONTRACT_VERSION}");
    let Some(interface) = component.get_export_index(None, &wanted) else {
        let found: Vec<String> = component
            .component_type()
            .exports(&engine.engine)
            .map(|(name, _)| name.to_string())
            .filter(|name| name.starts_with("chatmail:policy/hooks"))
            .collect();
        return Err(match found.first() {
            Some(other) => format!("exports {other}, but this relay speaks chatmail:policy@{CONTRACT_VERSION}"),
            None => format!("does not export {wanted}: is it a ferrymail policy?"),
        });
    };
    let mut out = Vec::new();
    for name in std::iter::once("describe").chain(Hook::ALL.iter().map(|h| h.wit_name())) {
        if let Some(index) = component.get_export_index(Some(&interface), name) {
            out.push((name.to_string(), index));
        }
    }
    Ok(out)
}

/// Policy names label metrics and namespace policy state.
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok { Ok(()) } else { Err(format!("invalid policy name {name:?}: use 1-64 letters, digits, '-', '_' or '.'")) }
}
