//! The wasmtime side: one engine for the relay's lifetime, a pooling allocator sized for the
//! calls that may run at once, an epoch ticker for deadlines, and a disk cache of compiled
//! components so that a restart does not compile again.

use std::hash::Hasher;
use std::path::PathBuf;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::CONTRACT_VERSION;
use super::bindings::Policy as PolicyWorld;
use super::call::CallState;
use crate::config::PolicyEngineConfig;

/// How often the deadline clock ticks: the granularity of per-call deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Instances kept free for loading bundles while calls run.
const LOAD_SLACK: u32 = 8;
/// Memory (and table) bytes per pool slot that stay resident between calls.
const KEEP_RESIDENT: usize = 2 << 20;

pub(crate) struct PolicyEngine {
    pub engine: wasmtime::Engine,
    linker: Linker<CallState>,
    /// Epoch ticks a call may run.
    pub deadline_ticks: u64,
    pub memory_limit: usize,
    pub settings: PolicyEngineConfig,
    cache_dir: Option<PathBuf>,
    /// Bounds the calls running at once to what the instance pool holds.
    pub permits: tokio::sync::Semaphore,
}

impl PolicyEngine {
    pub fn new(settings: &PolicyEngineConfig, cache_dir: Option<PathBuf>) -> Result<PolicyEngine, String> {
        let slots = settings.max_concurrent_calls + LOAD_SLACK;
        let memory_limit = usize::try_from(settings.memory_limit.0).map_err(|_| "memory_limit too large")?;
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(slots)
            // A wasm32-wasip2 guest is one core module plus a few adapter shims.
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 4)
            .max_memory_size(memory_limit);
        // Every call gets a fresh instance, so resetting a slot's memory is on the hot path.
        // Keeping the touched pages resident and resetting only those (found with Linux's
        // PAGEMAP_SCAN) instead of madvise-and-fault-again halves the cost of a call
        // (measured with benches/policy_chain.rs: ~31 -> ~15 µs per call).
        pool.linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);

        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .max_wasm_stack(512 * 1024)
            .cranelift_opt_level(OptLevel::Speed)
            // Reserve no more address space per memory than a guest may use.
            .memory_reservation(memory_limit as u64)
            .memory_reservation_for_growth(0)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = wasmtime::Engine::new(&config).map_err(|e| format!("cannot start the policy engine: {e}"))?;

        let mut linker = Linker::new(&engine);
        PolicyWorld::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |state| state)
            .map_err(|e| format!("cannot link the host functions: {e}"))?;

        start_epoch_ticker(&engine);
        let tick = EPOCH_TICK.as_millis() as u64;
        Ok(PolicyEngine {
            engine,
            linker,
            // +1: the tick in progress when a call starts may be nearly over.
            deadline_ticks: settings.deadline_ms.div_ceil(tick) + 1,
            memory_limit,
            settings: settings.clone(),
            cache_dir,
            permits: tokio::sync::Semaphore::new(settings.max_concurrent_calls as usize),
        })
    }

    /// Compile a component, or load it from the cache when this exact file was compiled
    /// before by this exact engine.
    pub fn component(&self, wasm: &[u8]) -> Result<Component, String> {
        let key = self.cache_key(wasm);
        if let Some(path) = self.cache_dir.as_ref().map(|d| d.join(format!("{key}.cwasm")))
            && path.is_file()
        {
            // SAFETY: deserialising runs native code from the file. These files are written
            // only by `precompile_component` below, into the relay's own data_dir, under a name
            // that binds the wasm's hash and this engine's configuration.
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!("ignoring unusable compiled policy {}: {e}", path.display());
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let compiled = self.engine.precompile_component(wasm).map_err(|e| format!("not a valid component: {e:#}"))?;
        if let Some(dir) = &self.cache_dir {
            store_in_cache(dir, &key, &compiled);
        }
        // SAFETY: these bytes were produced just above by this engine.
        unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(|e| format!("cannot load compiled policy: {e}"))
    }

    /// Check a component's imports against the contract and link it. WASI imports (Rust's
    /// std asks for some) trap if called: policies have no files, sockets or environment.
    pub fn link(&self, component: &Component) -> Result<InstancePre<CallState>, String> {
        let mut guest_version = None;
        for (name, _) in component.component_type().imports(&self.engine) {
            if let Some(rest) = name.strip_prefix("chatmail:policy/") {
                let version = rest.split_once('@').map(|(_, v)| v).unwrap_or("");
                if !compatible(version, CONTRACT_VERSION) {
                    return Err(format!(
                        "built against contract chatmail:policy@{version}, but this relay speaks chatmail:policy@{CONTRACT_VERSION} \
                         (it loads guests of {})",
                        loads(CONTRACT_VERSION)
                    ));
                }
                guest_version = Some(version.to_string());
            } else if !name.starts_with("wasi:") {
                return Err(format!("imports `{name}`, which is not part of the policy contract"));
            }
        }
        let mut linker = self.linker.clone();
        self.stub_wasi(&mut linker, component).map_err(|e| format!("cannot link: {e}"))?;
        linker.instantiate_pre(component).map_err(|e| match guest_version {
            // A guest of a newer minor version loads as long as it uses nothing newer.
            Some(version) if newer(&version, CONTRACT_VERSION) => format!(
                "built against contract chatmail:policy@{version}, newer than this relay's chatmail:policy@{CONTRACT_VERSION}, \
                 and uses what {CONTRACT_VERSION} lacks: {e:#}"
            ),
            _ => format!("cannot link: {e:#}"),
        })
    }

    /// Define the component's WASI imports as functions that trap. Only those: the contract's
    /// own imports must reach the linker's definitions, which match a guest of an older minor
    /// version by semver (wasmtime's `define_unknown_imports_as_traps` would shadow them).
    fn stub_wasi(&self, linker: &mut Linker<CallState>, component: &Component) -> wasmtime::Result<()> {
        use wasmtime::component::types::ComponentItem;
        use wasmtime::component::ResourceType;
        for (name, item) in component.component_type().imports(&self.engine) {
            let ComponentItem::ComponentInstance(instance) = item.ty else { continue };
            if !name.starts_with("wasi:") {
                continue;
            }
            let mut stub = linker.instance(name)?;
            for (export, item) in instance.exports(&self.engine) {
                let qualified = format!("{name}#{export}");
                match item.ty {
                    ComponentItem::ComponentFunc(_) => stub.func_new(export, move |_, _, _, _| {
                        wasmtime::bail!("`{qualified}`: policies have no files, sockets or environment")
                    })?,
                    ComponentItem::Resource(_) => stub.resource(export, ResourceType::host::<()>(), |_, _| Ok(()))?,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    fn cache_key(&self, wasm: &[u8]) -> String {
        let mut engine_hash = Sha256Hasher(Sha256::new());
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut engine_hash);
        let mut digest = Sha256::new();
        digest.update(wasm);
        digest.update(engine_hash.0.finalize());
        hex::encode(&digest.finalize()[..20])
    }
}

fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut it = version.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// Semver compatibility as the component model sees it: same major, or for 0.x the same minor.
fn compatible(guest: &str, host: &str) -> bool {
    match (major_minor(guest), major_minor(host)) {
        (Some((0, g_minor)), Some((0, h_minor))) => g_minor == h_minor,
        (Some((g_major, _)), Some((h_major, _))) => g_major == h_major,
        _ => false,
    }
}

/// Whether `guest` is a later minor version than `host`.
fn newer(guest: &str, host: &str) -> bool {
    matches!((major_minor(guest), major_minor(host)), (Some(g), Some(h)) if g > h)
}

/// The versions a host of `version` loads guests of, for messages: "1.x" or "0.3.x".
fn loads(version: &str) -> String {
    match major_minor(version) {
        Some((0, minor)) => format!("0.{minor}.x"),
        Some((major, _)) => format!("{major}.x"),
        None => version.to_string(),
    }
}

fn store_in_cache(dir: &std::path::Path, key: &str, compiled: &[u8]) {
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, compiled)?;
        std::fs::rename(&tmp, dir.join(format!("{key}.cwasm")))
    };
    if let Err(e) = write() {
        tracing::warn!("cannot cache a compiled policy in {}: {e}", dir.display());
    }
}

/// Advances the engine's epoch every tick for as long as the engine lives.
fn start_epoch_ticker(engine: &wasmtime::Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new().name("policy-deadline".into()).spawn(move || {
        loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        }
    });
    if let Err(e) = spawned {
        tracing::error!("cannot start the policy deadline clock: {e}");
    }
}

/// Feeds `Hash` output into SHA-256: a stable digest of the engine's compatibility hash.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::{compatible, loads, newer};

    #[test]
    fn contract_versions() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(compatible("0.1.0", "0.1.3"));
        assert!(!compatible("0.2.0", "0.1.0"));
        assert!(compatible("1.0.0", "1.4.0"));
        assert!(!compatible("2.0.0", "1.4.0"));
        assert!(!compatible("", "0.1.0"));
        assert!(newer("1.2.0", "1.1.0") && !newer("1.1.0", "1.1.0") && !newer("1.0.0", "1.1.0"));
        assert_eq!((loads("1.1.0").as_str(), loads("0.3.2").as_str()), ("1.x", "0.3.x"));
    }
}
