//! `ferrymail serve`: open the store, load the policy bundle and the certificate, bind the
//! listeners and serve — reloading the bundle on request (control socket), on SIGHUP, and when
//! a policy file changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::Config;
use crate::control;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::push::{self, Push};
use crate::report::StorageReport;
use crate::policy::{Policies, PolicyError, Services};
use crate::dkim::{Dkim, DkimError};
use crate::dns::Dns;
use crate::smtp::outbound::{self, Outbound};
use crate::{http, imap, retention, smtp};
use crate::store::{Store, StoreError};
use crate::tls::{Tls, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("{0}")]
    Dkim(#[from] DkimError),
    #[error("{0}")]
    Io(String),
}

/// A relay's long-lived parts, shared by every session.
pub struct Relay {
    pub config: Config,
    pub store: Store,
    pub policies: Policies,
    pub auth: Authenticator,
    pub tls: Arc<Tls>,
    /// Getting and renewing the certificate, when it comes from ACME.
    pub acme: Option<Arc<crate::acme::Acme>>,
    pub dns: Dns,
    pub dkim: Dkim,
    pub outbound: Outbound,
    pub notifier: Notifier,
    pub push: Push,
    pub retention: retention::Retention,
    pub realtime: http::Realtime,
    /// The TURN-REST secret, when this relay serves TURN.
    pub turn_secret: Option<crate::turn::TurnSecret>,
    /// The TURN port being served (the configured one may be 0: any).
    pub turn_port: std::sync::atomic::AtomicU16,
    /// The rate limits of `/new`.
    pub new_accounts_rate: http::RateLimit,
    /// Message bytes held in memory, all sessions together.
    pub in_flight: crate::inflight::InFlight,
    /// Room on the disk for new mail, and the reserve for deletions.
    pub disk: Arc<crate::disk::Disk>,
    report_cache: std::sync::Mutex<Option<(std::time::Instant, Arc<StorageReport>)>>,
    started_millis: u64,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

impl Relay {
    /// Open the database, load the bundle and the certificate. Blocking.
    pub fn open(config: Config, config_path: Option<&Path>) -> Result<Relay, StartError> {
        Self::open_with_clock(config, config_path, Clock::default())
    }

    /// The same with a given clock (tests move it).
    pub fn open_with_clock(config: Config, config_path: Option<&Path>, clock: Clock) -> Result<Relay, StartError> {
        create_private_dir(&config.data_dir)?;
        let store = Store::open(&config.data_dir.join("db"))?;
        let metrics = Arc::new(Metrics::default());
        let services = Services { store: store.clone(), clock: clock.clone(), metrics: metrics.clone() };
        let cache = config.data_dir.join("policy-cache");
        let policies = Policies::load(&config, config_path, services, Some(cache))?;
        let tls = Arc::new(Tls::load(&config)?);
        let dns = Dns::new(config.dns_resolver).map_err(StartError::Io)?;
        let acme = crate::acme::Acme::new(&config, tls.clone(), dns.clone(), metrics.clone()).map_err(StartError::Io)?;
        let dkim = Dkim::load_or_generate(&config.data_dir.join("dkim"), &config.mail_domain, &config.dkim_selector, &dns)?;
        let realtime = http::Realtime::new(config.max_realtime_connections as usize);
        let turn_secret = match config.serve_turn {
            true => Some(crate::turn::TurnSecret::load_or_generate(&config.data_dir).map_err(StartError::Io)?),
            false => None,
        };
        let auth = Authenticator::new(store.clone(), policies.clone(), clock.clone(), &config);
        let in_flight = crate::inflight::InFlight::new(config.max_bytes_in_flight.0, config.max_message_size.0);
        let disk = Arc::new(crate::disk::Disk::new(&config.data_dir, config.max_message_size.0));
        Ok(Relay {
            config,
            store,
            policies,
            auth,
            tls,
            acme,
            dns,
            dkim,
            outbound: Outbound::default(),
            notifier: Notifier::default(),
            push: Push::default(),
            retention: Default::default(),
            realtime,
            turn_secret,
            turn_port: Default::default(),
            new_accounts_rate: http::RateLimit::default(),
            in_flight,
            disk,
            report_cache: Default::default(),
            started_millis: clock.now_millis(),
            metrics,
            clock,
        })
    }

    /// Bind every listener. Fails with the address that could not be bound.
    pub async fn bind(&self) -> Result<Listeners, StartError> {
        let listen = &self.config.listen;
        let bind = |addr: std::net::SocketAddr| async move {
            TcpListener::bind(addr).await.map_err(|e| StartError::Io(format!("cannot listen on {addr}: {e}")))
        };
        Ok(Listeners {
            smtp: bind(listen.smtp).await?,
            submission: bind(listen.submission).await?,
            submissions: bind(listen.submissions).await?,
            imap: bind(listen.imap).await?,
            imaps: bind(listen.imaps).await?,
            https: bind(listen.https).await?,
            metrics: bind(listen.metrics).await?,
            http: match self.config.serve_http {
                true => Some(bind(listen.http).await?),
                false => None,
            },
            turn: match self.config.serve_turn {
                true => Some(
                    tokio::net::UdpSocket::bind(listen.turn)
                        .await
                        .map_err(|e| StartError::Io(format!("cannot listen on UDP {}: {e}", listen.turn)))?,
                ),
                false => None,
            },
        })
    }

    /// When this relay started, for `ferrymail status`.
    pub fn started_at(&self) -> String {
        chrono::DateTime::from_timestamp_millis(self.started_millis as i64)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_default()
    }

    /// The storage report, collected at most every five minutes (it walks every message).
    pub async fn storage_report(&self) -> Result<Arc<StorageReport>, StoreError> {
        const FRESH: Duration = Duration::from_secs(300);
        if let Some((at, report)) = self.report_cache.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && at.elapsed() < FRESH
        {
            return Ok(report.clone());
        }
        let today = self.clock.today();
        let report = Arc::new(self.store.run(move |s| StorageReport::collect(s, today)).await?);
        *self.report_cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((std::time::Instant::now(), report.clone()));
        Ok(report)
    }

    /// Serve on `listeners` (and the control socket) until the returned future is dropped.
    pub async fn serve(self: Arc<Self>, listeners: Listeners) -> Result<(), StartError> {
        let socket = control::socket_path(&self.config.data_dir);
        let control = control::bind(&socket).await.map_err(|e| StartError::Io(format!("control socket: {e}")))?;
        let _control = AbortOnDrop(tokio::spawn(control::serve(control, self.clone())));
        let _sighup = AbortOnDrop(spawn_sighup_reload(self.policies.clone())?);
        let _watch = self
            .config
            .policy_engine
            .watch
            .then(|| AbortOnDrop(tokio::spawn(watch_policy_files(self.policies.clone(), Duration::from_secs(1)))));
        let _certs = AbortOnDrop(tokio::spawn(watch_certificate(self.clone())));
        let _acme = self.acme.clone().map(|acme| AbortOnDrop(tokio::spawn(acme.run())));
        let smtp_limit = self.config.max_smtp_connections as usize;
        let _smtp = [
            (listeners.smtp, smtp::Kind::Mx),
            (listeners.submission, smtp::Kind::Submission),
            (listeners.submissions, smtp::Kind::Submissions),
        ]
        .map(|(listener, kind)| AbortOnDrop(tokio::spawn(smtp::serve(self.clone(), listener, kind, smtp_limit))));
        let _https = AbortOnDrop(tokio::spawn(http::serve(self.clone(), listeners.https)));
        let _metrics = AbortOnDrop(tokio::spawn(http::serve_metrics(self.clone(), listeners.metrics)));
        let _http = listeners.http.map(|listener| AbortOnDrop(tokio::spawn(http::serve_plain(self.clone(), listener))));
        let _turn = listeners.turn.map(|socket| AbortOnDrop(tokio::spawn(crate::turn::serve(self.clone(), socket))));
        let _outbound = AbortOnDrop(tokio::spawn(outbound::run(self.clone())));
        let _push = AbortOnDrop(tokio::spawn(push::run(self.clone())));
        let _retention = AbortOnDrop(tokio::spawn(retention::daily(self.clone())));
        let _disk = AbortOnDrop(tokio::spawn(self.disk.clone().run(self.store.clone())));
        let imap_limit = self.config.max_imap_connections as usize;
        let _imap = [(listeners.imap, imap::Kind::Imap), (listeners.imaps, imap::Kind::Imaps)]
            .map(|(listener, kind)| AbortOnDrop(tokio::spawn(imap::serve(self.clone(), listener, kind, imap_limit))));
        for policy in self.policies.summary() {
            let hooks: Vec<&str> = policy.hooks.iter().map(|h| h.wit_name()).collect();
            tracing::info!(policy = %policy.name, origin = %policy.origin, hooks = %hooks.join(","), "policy loaded");
        }
        tracing::info!(domain = %self.config.mail_domain, data_dir = %self.config.data_dir.display(), "ferrymail is running");
        std::future::pending::<()>().await;
        Ok(())
    }

    /// Serve until SIGINT or SIGTERM.
    pub async fn run(self) -> Result<(), StartError> {
        let listeners = self.bind().await?;
        let socket = control::socket_path(&self.config.data_dir);
        let relay = Arc::new(self);
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| StartError::Io(e.to_string()))?;
        tokio::select! {
            result = relay.serve(listeners) => result?,
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutting down");
        let _ = std::fs::remove_file(&socket);
        Ok(())
    }
}

/// The relay's listening sockets, bound before serving starts (tests bind port 0).
pub struct Listeners {
    pub smtp: TcpListener,
    pub submission: TcpListener,
    pub submissions: TcpListener,
    pub imap: TcpListener,
    pub imaps: TcpListener,
    pub https: TcpListener,
    pub metrics: TcpListener,
    pub http: Option<TcpListener>,
    pub turn: Option<tokio::net::UdpSocket>,
}

/// A background task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Pick up renewed certificate files.
async fn watch_certificate(relay: Arc<Relay>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        match relay.tls.reload_if_changed() {
            Ok(true) => tracing::info!("TLS certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!("{e}; the previous certificate keeps serving"),
        }
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

fn spawn_sighup_reload(policies: Policies) -> Result<tokio::task::JoinHandle<()>, StartError> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| StartError::Io(e.to_string()))?;
    Ok(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the policy bundle");
            // Success and refusal are both logged by reload().
            let _ = policies.reload().await;
        }
    }))
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
