//! `ferrymail serve`: open the store, load the policy bundle, and keep them serving —
//! reloading the bundle on request (control socket), on SIGHUP, and when a policy file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::clock::Clock;
use crate::config::Config;
use crate::control;
use crate::metrics::Metrics;
use crate::policy::{Policies, PolicyError, Services};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Io(String),
}

/// A relay's long-lived parts.
pub struct Relay {
    pub config: Config,
    pub store: Store,
    pub policies: Policies,
}

impl Relay {
    /// Open the database and load the bundle. Blocking.
    pub fn open(config: Config, config_path: Option<&Path>) -> Result<Relay, StartError> {
        create_private_dir(&config.data_dir)?;
        let store = Store::open(&config.data_dir.join("db"))?;
        let services = Services { store: store.clone(), clock: Clock::default(), metrics: Arc::new(Metrics::default()) };
        let cache = config.data_dir.join("policy-cache");
        let policies = Policies::load(&config, config_path, services, Some(cache))?;
        Ok(Relay { config, store, policies })
    }

    /// Serve until SIGINT or SIGTERM.
    pub async fn run(self) -> Result<(), StartError> {
        let socket = control::socket_path(&self.config.data_dir);
        let listener = control::bind(&socket).await.map_err(|e| StartError::Io(format!("control socket: {e}")))?;
        tokio::spawn(control::serve(listener, self.policies.clone()));
        spawn_sighup_reload(self.policies.clone())?;
        if self.config.policy_engine.watch {
            tokio::spawn(watch_policy_files(self.policies.clone(), Duration::from_secs(1)));
        }
        for policy in self.policies.summary() {
            let hooks: Vec<&str> = policy.hooks.iter().map(|h| h.wit_name()).collect();
            tracing::info!(policy = %policy.name, origin = %policy.origin, hooks = %hooks.join(","), "policy loaded");
        }
        tracing::info!(domain = %self.config.mail_domain, data_dir = %self.config.data_dir.display(), "ferrymail is running");

        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| StartError::Io(e.to_string()))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = std::fs::remove_file(&socket);
        Ok(())
    }
}

/// The data dir holds accounts and mail: readable by the relay's user only.
fn create_private_dir(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let failed = |e: std::io::Error| StartError::Io(format!("data_dir {}: {e}", dir.display()));
    if !dir.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(failed)?;
    }
    let mode = std::fs::metadata(dir).map_err(failed)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!("data_dir {} is accessible to other users (mode {:o})", dir.display(), mode & 0o777);
    }
    Ok(())
}

fn spawn_sighup_reload(policies: Policies) -> Result<(), StartError> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| StartError::Io(e.to_string()))?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy bundle");
            // Success and refusal are both logged by reload().
            let _ = policies.reload().await;
        }
    });
    Ok(())
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(files: &[PathBuf]) -> Stamp {
    files.iter().map(|f| std::fs::metadata(f).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}

/// Reload when a policy file changes. A change must hold still for one interval first, so a
/// file being copied in is not loaded half-written. Changes from the moment of this call on
/// are noticed (the files are looked at before the future is first polled).
pub fn watch_policy_files(policies: Policies, interval: Duration) -> impl std::future::Future<Output = ()> {
    let mut applied = stamp(&policies.files());
    async move {
        let mut pending: Option<Stamp> = None;
        loop {
            tokio::time::sleep(interval).await;
            let now = stamp(&policies.files());
            if now == applied {
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&now) {
                pending = Some(now);
                continue;
            }
            tracing::info!("a policy file changed: reloading the policy bundle");
            let _ = policies.reload().await;
            applied = stamp(&policies.files());
            pending = None;
        }
    }
}
