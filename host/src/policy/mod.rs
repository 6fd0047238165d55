//! The policy engine: every rule of the relay is asked of WebAssembly components.
//!
//! Protocol code talks to [`Policies`] only: it hands over plain data (an envelope, a parsed
//! message) and gets a verdict. Each call runs in a fresh sandboxed instance, under a deadline
//! and a memory cap; a failing policy is answered for by its fail mode.
//! [`Policies::reload`] swaps in a new bundle atomically: calls in flight finish on the old one.

mod bindings;
mod builtin;
mod bundle;
mod call;
mod chain;
mod engine;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

pub use bindings::types::{
    AccountRequest, AccountState, Credentials, Direction, DkimResult, Envelope, MailboxUsage, NewAccountRequest,
    NewAccountVerdict, Recipient, Reply, Resources, RetentionDecision, StoredMessage, Verdict,
};
pub use builtin::DEFAULT_BUNDLE;
pub use bundle::{Hook, Origin};
pub use call::{FailureKind, MessageHandle};
pub use chain::{reject_reply, tempfail_reply};

use crate::clock::Clock;
use crate::config::{Config, FailMode};
use crate::message::ParsedMessage;
use crate::message::edit::Edits;
use crate::metrics::Metrics;
use crate::store::Store;
use bundle::Bundle;
use chain::Runtime;
use engine::PolicyEngine;

/// The version of `wit/policy.wit` this host implements.
pub const CONTRACT_VERSION: &str = "1.1.0";

impl std::fmt::Display for Reply {
    /// As the client sees it: `code [enhanced] text`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.enhanced.is_empty() {
            true => write!(f, "{} {}", self.code, self.text),
            false => write!(f, "{} {} {}", self.code, self.enhanced, self.text),
        }
    }
}

/// The host services policies use: their state store, the clock, the counters.
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
}

/// The chain's answer to a message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageDecision {
    pub verdict: Verdict,
    /// Edits for every copy.
    pub edits: Edits,
    /// Further edits for copies stored in local mailboxes.
    pub delivery_edits: Edits,
    /// A replacement envelope sender ("" = null sender).
    pub mail_from: Option<String>,
}

impl Default for MessageDecision {
    fn default() -> Self {
        MessageDecision { verdict: Verdict::Accept, edits: Edits::default(), delivery_edits: Edits::default(), mail_from: None }
    }
}

/// A loaded policy, as `policy list` shows it.
#[derive(Debug, Clone)]
pub struct PolicySummary {
    pub name: String,
    pub origin: Origin,
    pub hooks: Vec<Hook>,
    pub fail_mode: FailMode,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Engine(String),
    #[error("bundle refused, the previous one keeps serving: {0}")]
    Refused(String),
    #[error("{0}")]
    Load(String),
}

/// The relay's policy bundle: cheap to clone, safe to share between sessions.
#[derive(Clone)]
pub struct Policies {
    inner: Arc<Inner>,
}

struct Inner {
    engine: PolicyEngine,
    services: Services,
    bundle: ArcSwap<Bundle>,
    /// The config file a reload reads again (None: reload keeps the config it has).
    config_path: Option<PathBuf>,
    config: std::sync::Mutex<Config>,
    generation: AtomicU64,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl Policies {
    /// Start the engine and load the bundle the config names. Blocking: compiles components
    /// unless they are in the cache (`data_dir/policy-cache`).
    pub fn load(config: &Config, config_path: Option<&Path>, services: Services, cache_dir: Option<PathBuf>) -> Result<Policies, PolicyError> {
        let engine = PolicyEngine::new(&config.policy_engine, cache_dir).map_err(PolicyError::Engine)?;
        let bundle = Bundle::load(&engine, &services, config, 1).map_err(PolicyError::Load)?;
        Ok(Policies {
            inner: Arc::new(Inner {
                engine,
                services,
                bundle: ArcSwap::from_pointee(bundle),
                config_path: config_path.map(Path::to_path_buf),
                config: std::sync::Mutex::new(config.clone()),
                generation: AtomicU64::new(1),
                reloading: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Run `work` against the current bundle, within the call limit.
    ///
    /// The calls run right here, on the thread of the task that asks: a typical call takes
    /// ~15 µs, less than handing it to another thread costs (~35 µs per hand-off, measured
    /// with benches/policy_chain.rs), and the per-call deadline bounds the worst case.
    async fn run<R>(&self, work: impl FnOnce(&Runtime<'_>, &Bundle) -> R) -> R {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self.inner.engine.permits.acquire().await.ok();
        // Held for the whole call: a reload in between does not affect it.
        let bundle = self.inner.bundle.load_full();
        // Wall time on this thread: the calls never await, so it is their cost (plus any
        // preemption on a busy machine). Operators and benches/reference read it as the
        // policies' share of the relay's CPU time.
        let started = std::time::Instant::now();
        let result = work(&Runtime { engine: &self.inner.engine, services: &self.inner.services }, &bundle);
        let spent = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.inner.services.metrics.add("ferrymail_policy_call_microseconds_total", &[], spent);
        result
    }

    /// May a first login create this account? `Accept` creates it.
    pub async fn create_account(&self, request: AccountRequest) -> Verdict {
        self.run(move |rt, bundle| rt.create_account(bundle, &request)).await
    }

    /// Credentials for `POST /new`; `Accept` means no policy offered any.
    pub async fn new_account(&self, request: NewAccountRequest) -> NewAccountVerdict {
        self.run(move |rt, bundle| rt.new_account(bundle, &request)).await
    }

    pub async fn mail_from(&self, envelope: Envelope) -> Verdict {
        self.run(move |rt, bundle| rt.mail_from(bundle, &envelope)).await
    }

    pub async fn rcpt_to(&self, envelope: Envelope, recipient: Recipient) -> Verdict {
        self.run(move |rt, bundle| rt.rcpt_to(bundle, &envelope, &recipient)).await
    }

    pub async fn check_message(&self, envelope: Envelope, message: Arc<ParsedMessage>, dkim: Vec<DkimResult>) -> MessageDecision {
        self.run(move |rt, bundle| rt.check_message(bundle, &envelope, &message, &dkim)).await
    }

    /// One batch of an account's messages (oldest first) during a retention run.
    pub async fn retention(&self, now: u64, account: AccountState, batch: Vec<StoredMessage>) -> RetentionDecision {
        self.run(move |rt, bundle| rt.retention(bundle, now, &account, &batch)).await
    }

    /// Load the bundle again (re-reading the config file) and swap it in. A bundle that fails
    /// to load is refused and the current one keeps serving.
    pub async fn reload(&self) -> Result<Vec<PolicySummary>, PolicyError> {
        let _one_at_a_time = self.inner.reloading.lock().await;
        let inner = self.inner.clone();
        let loaded = tokio::task::spawn_blocking(move || -> Result<(Bundle, Config), String> {
            let config = match &inner.config_path {
                Some(path) => {
                    let loaded = Config::load(path).map_err(|e| e.to_string())?;
                    loaded.config
                }
                None => inner.config.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            };
            let generation = inner.generation.load(Ordering::SeqCst) + 1;
            let bundle = Bundle::load(&inner.engine, &inner.services, &config, generation)?;
            Ok((bundle, config))
        })
        .await
        .map_err(|e| PolicyError::Refused(format!("reload task failed: {e}")))?;
        match loaded {
            Ok((bundle, config)) => {
                let generation = bundle.generation;
                self.inner.bundle.store(Arc::new(bundle));
                self.inner.generation.store(generation, Ordering::SeqCst);
                *self.inner.config.lock().unwrap_or_else(|e| e.into_inner()) = config;
                self.inner.services.metrics.inc("ferrymail_policy_reloads_total", &[("result", "ok")]);
                tracing::info!(generation, "policy bundle reloaded");
                Ok(self.summary())
            }
            Err(e) => {
                self.inner.services.metrics.inc("ferrymail_policy_reloads_total", &[("result", "refused")]);
                tracing::error!("policy bundle refused, the previous one keeps serving: {e}");
                Err(PolicyError::Refused(e))
            }
        }
    }

    /// Increases with every successful reload.
    pub fn generation(&self) -> u64 {
        self.inner.bundle.load().generation
    }

    /// The loaded policies, in chain order.
    pub fn summary(&self) -> Vec<PolicySummary> {
        self.inner
            .bundle
            .load()
            .policies
            .iter()
            .map(|p| PolicySummary {
                name: p.meta.name.clone(),
                origin: p.origin.clone(),
                hooks: p.hooks().collect(),
                fail_mode: p.fail_mode,
                sha256: p.sha256.clone(),
            })
            .collect()
    }

    /// The component files of the current bundle (what a file watcher watches).
    pub fn files(&self) -> Vec<PathBuf> {
        self.summary()
            .into_iter()
            .filter_map(|p| match p.origin {
                Origin::File(path) => Some(path),
                Origin::Builtin(_) => None,
            })
            .collect()
    }

    pub fn services(&self) -> &Services {
        &self.inner.services
    }
}
