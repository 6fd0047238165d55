//! One hook call in one policy: a fresh store and instance (from the pool), a deadline and
//! a memory cap, the host functions the guest may use, and a verdict or a classified failure.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rand::Rng;
use wasmtime::component::{ComponentExportIndex, ComponentNamedList, Lift, Lower, Resource, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder, Trap};

use super::Services;
use super::bindings::{host, kv, message, types};
use super::bundle::LoadedPolicy;
use super::engine::PolicyEngine;
use crate::message::ParsedMessage;

/// The message resource handed to guests: the host's parsed view, shared.
pub struct MessageHandle(pub Arc<ParsedMessage>);

/// A policy's identity and settings, shared by all its calls.
#[derive(Debug)]
pub(crate) struct PolicyMeta {
    pub name: String,
    pub config_json: String,
    /// The names this policy has counted (`host.count`), to bound the metrics it can create.
    events: Mutex<BTreeSet<String>>,
    too_many_events: AtomicBool,
}

impl PolicyMeta {
    pub fn new(name: String, config_json: String) -> PolicyMeta {
        PolicyMeta { name, config_json, events: Default::default(), too_many_events: AtomicBool::new(false) }
    }
}

/// Everything one call's store holds.
pub(crate) struct CallState {
    pub table: ResourceTable,
    limits: StoreLimits,
    policy: Arc<PolicyMeta>,
    services: Services,
    kv_limits: crate::store::KvLimits,
    /// Log lines this call may still write.
    log_lines_left: u32,
}

/// Why a call produced no usable answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (panic, unreachable, a host function refused).
    Trap,
    /// The call ran past its deadline.
    Deadline,
    /// The guest tried to grow its memory past the limit.
    Memory,
    /// The answer broke the contract (a 2xx reject, a CR in a reply, an unknown handle...).
    Malformed,
    /// No instance could be made (pool exhausted, start function trapped).
    Instantiate,
}

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Deadline => "deadline",
            FailureKind::Memory => "memory",
            FailureKind::Malformed => "malformed",
            FailureKind::Instantiate => "instantiate",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    pub detail: String,
}

impl Failure {
    pub fn malformed(detail: impl Into<String>) -> Failure {
        Failure { kind: FailureKind::Malformed, detail: detail.into() }
    }

    fn from_wasmtime(err: wasmtime::Error, during_instantiation: bool) -> Failure {
        let full = format!("{err:?}");
        let kind = match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => FailureKind::Deadline,
            _ if full.contains("forcing trap when growing memory") => FailureKind::Memory,
            _ if during_instantiation => FailureKind::Instantiate,
            _ => FailureKind::Trap,
        };
        // The first lines name the trap and where it happened; enough for a log line.
        let detail: Vec<&str> = full.lines().take(6).collect();
        Failure { kind, detail: detail.join(" | ") }
    }
}

/// Call one exported hook of `policy` in a fresh instance. `params` builds the arguments
/// inside the new store (so that resources can be placed in its table).
pub(crate) fn call<P, R>(
    engine: &PolicyEngine,
    services: &Services,
    policy: &LoadedPolicy,
    export: &ComponentExportIndex,
    params: impl FnOnce(&mut CallState) -> wasmtime::Result<P>,
) -> Result<R, Failure>
where
    P: ComponentNamedList + Lower + Send + Sync,
    R: ComponentNamedList + Lift + Send + Sync,
{
    let state = CallState {
        table: ResourceTable::new(),
        limits: StoreLimitsBuilder::new().memory_size(engine.memory_limit).trap_on_grow_failure(true).build(),
        policy: policy.meta.clone(),
        services: services.clone(),
        kv_limits: crate::store::KvLimits {
            entries: engine.settings.kv_max_entries,
            bytes: engine.settings.kv_max_bytes.0,
        },
        log_lines_left: engine.settings.max_log_lines.saturating_add(1),
    };
    let mut store = wasmtime::Store::new(&engine.engine, state);
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(engine.deadline_ticks);

    let instance = policy.pre.instantiate(&mut store).map_err(|e| Failure::from_wasmtime(e, true))?;
    let func = instance
        .get_typed_func::<P, R>(&mut store, export)
        .map_err(|e| Failure::malformed(format!("hook has the wrong type: {e}")))?;
    let params = params(store.data_mut()).map_err(|e| Failure::from_wasmtime(e, false))?;
    func.call(&mut store, params).map_err(|e| Failure::from_wasmtime(e, false))
}

/// A message placed in a call's resource table, passed to the guest as a borrow.
pub(crate) fn lend_message(state: &mut CallState, message: &Arc<ParsedMessage>) -> wasmtime::Result<Resource<MessageHandle>> {
    let owned = state.table.push(MessageHandle(message.clone()))?;
    Ok(Resource::new_borrow(owned.rep()))
}

const MAX_KV_KEY: usize = 1024;
const MAX_KV_VALUE: usize = 64 * 1024;
const MAX_RANDOM: u32 = 4096;
const MAX_LOG_LINE: usize = 2000;
const MAX_EVENT_NAME: usize = 64;
const MAX_EVENTS_PER_POLICY: usize = 32;

impl types::Host for CallState {}

impl host::Host for CallState {
    fn now_millis(&mut self) -> wasmtime::Result<u64> {
        Ok(self.services.clock.now_millis())
    }

    fn log(&mut self, level: host::Level, text: String) -> wasmtime::Result<()> {
        // Bounded lines, a bounded number per call: a policy must not be able to forge or
        // flood log records.
        let policy = self.policy.name.as_str();
        // One more than the limit stands for the warning, said once.
        match self.log_lines_left {
            0 => return Ok(()),
            1 => {
                self.log_lines_left = 0;
                tracing::warn!(target: "ferrymail::policy", policy, "more log lines than a call may write: the rest of this call's are dropped");
                return Ok(());
            }
            _ => self.log_lines_left -= 1,
        }
        let text: String = text.chars().filter(|c| !c.is_control()).take(MAX_LOG_LINE).collect();
        match level {
            host::Level::Error => tracing::error!(target: "ferrymail::policy", policy, "{text}"),
            host::Level::Warn => tracing::warn!(target: "ferrymail::policy", policy, "{text}"),
            host::Level::Info => tracing::info!(target: "ferrymail::policy", policy, "{text}"),
            host::Level::Debug => tracing::debug!(target: "ferrymail::policy", policy, "{text}"),
        }
        Ok(())
    }

    fn random_bytes(&mut self, len: u32) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM {
            wasmtime::bail!("random-bytes: at most {MAX_RANDOM} bytes per call");
        }
        let mut bytes = vec![0u8; len as usize];
        rand::rng().fill_bytes(&mut bytes);
        Ok(bytes)
    }

    fn config(&mut self) -> wasmtime::Result<String> {
        Ok(self.policy.config_json.clone())
    }

    fn account(&mut self, address: String) -> wasmtime::Result<Option<host::AccountInfo>> {
        // Only this relay's accounts are in the store: other domains find none.
        let account = self.services.store.account(&address.to_ascii_lowercase())?;
        Ok(account.map(|a| host::AccountInfo {
            created_day: a.created_day,
            last_login_day: a.last_login_day,
            used_bytes: a.used_bytes,
            messages: a.messages,
        }))
    }

    fn count(&mut self, name: String, delta: u64) -> wasmtime::Result<()> {
        let valid = !name.is_empty()
            && name.len() <= MAX_EVENT_NAME
            && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
        if !valid {
            wasmtime::bail!("count: `{name}` is not a counter name (1-{MAX_EVENT_NAME} of a-z, 0-9, '_', '-')");
        }
        {
            let mut events = self.policy.events.lock().unwrap_or_else(|e| e.into_inner());
            if !events.contains(&name) && events.len() >= MAX_EVENTS_PER_POLICY {
                // A counter is never worth failing a call over: drop it, and say so once.
                if !self.policy.too_many_events.swap(true, Ordering::Relaxed) {
                    tracing::warn!(policy = %self.policy.name, "count: more than {MAX_EVENTS_PER_POLICY} counter names; `{name}` and later new ones are not counted");
                }
                return Ok(());
            }
            events.insert(name.clone());
        }
        let labels = [("policy", self.policy.name.as_str()), ("event", name.as_str())];
        self.services.metrics.add("ferrymail_policy_events_total", &labels, delta);
        Ok(())
    }
}

impl CallState {
    fn check_kv(key: &str, value: Option<&[u8]>) -> wasmtime::Result<()> {
        if key.len() > MAX_KV_KEY {
            wasmtime::bail!("kv: keys are at most {MAX_KV_KEY} bytes");
        }
        if value.is_some_and(|v| v.len() > MAX_KV_VALUE) {
            wasmtime::bail!("kv: values are at most {MAX_KV_VALUE} bytes");
        }
        Ok(())
    }

    fn expiry(&self, ttl_seconds: Option<u64>) -> Option<u64> {
        ttl_seconds.map(|ttl| self.services.clock.now_millis().saturating_add(ttl.saturating_mul(1000)))
    }
}

fn entry(e: crate::store::KvEntry) -> kv::Entry {
    kv::Entry { value: e.value, version: e.version }
}

impl kv::Host for CallState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<kv::Entry>> {
        Self::check_kv(&key, None)?;
        let now = self.services.clock.now_millis();
        Ok(self.services.store.kv_get(&self.policy.name, &key, now)?.map(entry))
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_seconds: Option<u64>) -> wasmtime::Result<()> {
        Self::check_kv(&key, Some(&value))?;
        let (expires, now) = (self.expiry(ttl_seconds), self.services.clock.now_millis());
        self.services.store.kv_set(&self.policy.name, &key, &value, expires, now, self.kv_limits)?;
        Ok(())
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        Self::check_kv(&key, None)?;
        self.services.store.kv_delete(&self.policy.name, &key)?;
        Ok(())
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<u64>,
        value: Vec<u8>,
        ttl_seconds: Option<u64>,
    ) -> wasmtime::Result<Result<u64, Option<kv::Entry>>> {
        Self::check_kv(&key, Some(&value))?;
        let now = self.services.clock.now_millis();
        let expires = self.expiry(ttl_seconds);
        let result = self.services.store.kv_compare_and_swap(&self.policy.name, &key, expected, &value, expires, now, self.kv_limits)?;
        Ok(result.map_err(|current| current.map(entry)))
    }
}

impl message::Host for CallState {}

impl message::HostMessage for CallState {
    fn size(&mut self, m: Resource<MessageHandle>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&m)?.0.size())
    }

    fn headers(&mut self, m: Resource<MessageHandle>) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.table.get(&m)?.0.fields().iter().map(|f| (f.name.clone(), f.value.clone())).collect())
    }

    fn header(&mut self, m: Resource<MessageHandle>, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&m)?.0.header(&name).map(str::to_string))
    }

    fn addresses(&mut self, m: Resource<MessageHandle>, name: String) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&m)?.0.addresses(&name))
    }

    fn parts(&mut self, m: Resource<MessageHandle>) -> wasmtime::Result<Vec<message::Part>> {
        let msg = &self.table.get(&m)?.0;
        Ok(msg
            .parts()
            .iter()
            .enumerate()
            .map(|(i, p)| message::Part {
                index: i as u32,
                parent: p.parent,
                content_type: p.content_type.clone(),
                children: p.children.clone(),
                body_size: msg.body(i as u32).map_or(0, |b| b.len() as u64),
            })
            .collect())
    }

    fn part_header(&mut self, m: Resource<MessageHandle>, part: u32, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&m)?.0.part_header(part, &name).map(str::to_string))
    }

    fn body(&mut self, m: Resource<MessageHandle>, part: u32, max_bytes: u64) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.table.get(&m)?.0.body_prefix(part, max_bytes).map(<[u8]>::to_vec))
    }

    fn armor(&mut self, m: Resource<MessageHandle>, part: u32) -> wasmtime::Result<Result<message::Armored, String>> {
        let msg = &self.table.get(&m)?.0;
        Ok(msg.armor(part).map(|a| message::Armored {
            headers: a.headers.clone(),
            packets: a
                .packets
                .iter()
                .map(|p| message::Packet { tag: p.tag, legacy_format: p.legacy_format, length: p.length, partial: p.partial })
                .collect(),
            error: a.error.clone(),
        }))
    }

    fn drop(&mut self, m: Resource<MessageHandle>) -> wasmtime::Result<()> {
        self.table.delete(m)?;
        Ok(())
    }
}
