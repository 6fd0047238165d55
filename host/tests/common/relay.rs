//! A whole relay on loopback for protocol tests: the real listeners, TLS, store and bundle,
//! in this process, on ports the OS picks.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use ferrymail::clock::Clock;
use ferrymail::config::Config;
use ferrymail::serve::Relay;

pub const DOMAIN: &str = "_c.test";

pub struct TestRelay {
    pub relay: Arc<Relay>,
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    pub clock: Clock,
    task: tokio::task::JoinHandle<()>,
    pub dir: tempfile::TempDir,
}

impl TestRelay {
    /// A relay for `_c.test` with the default bundle; `extra` is appended to its config.
    pub async fn start(extra: &str) -> TestRelay {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            // A busy test machine must not look short of resources to the accounts policy.
            "mail_domain = \"{DOMAIN}\"\ndata_dir = \"{}\"\nmax_load_1m = 1000.0\n{extra}\n\
             [listen]\nsmtp = \"127.0.0.1:0\"\nsubmission = \"127.0.0.1:0\"\nsubmissions = \"127.0.0.1:0\"\n\
             imap = \"127.0.0.1:0\"\nimaps = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\n",
            dir.path().join("data").display()
        );
        let config = Config::parse(&text).unwrap().config;
        seed_compile_cache(&config, &dir.path().join("data/policy-cache"));
        let clock = Clock::default();
        let opened = {
            let clock = clock.clone();
            tokio::task::spawn_blocking(move || Relay::open_with_clock(config, None, clock)).await.unwrap()
        };
        let relay = Arc::new(opened.unwrap());
        let listeners = relay.bind().await.unwrap();
        let (smtp, submission, submissions) = (
            listeners.smtp.local_addr().unwrap(),
            listeners.submission.local_addr().unwrap(),
            listeners.submissions.local_addr().unwrap(),
        );
        let (imap, imaps) = (listeners.imap.local_addr().unwrap(), listeners.imaps.local_addr().unwrap());
        let serving = relay.clone();
        let task = tokio::spawn(async move {
            serving.serve(listeners).await.unwrap();
        });
        TestRelay { relay, smtp, submission, submissions, imap, imaps, clock, task, dir }
    }

    /// A login-ready address of this relay (first login creates it).
    pub fn address(local: &str) -> String {
        format!("{local}@{DOMAIN}")
    }
}

impl Drop for TestRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Compiling the bundle in a debug build takes seconds: share the compiled components.
fn seed_compile_cache(config: &Config, cache: &Path) {
    let shared = super::compile_cache();
    if std::fs::read_dir(&shared).map(|d| d.count()).unwrap_or(0) < ferrymail::policy::DEFAULT_BUNDLE.len() {
        drop(super::policies(config));
    }
    std::fs::create_dir_all(cache).unwrap();
    for entry in std::fs::read_dir(&shared).unwrap().flatten() {
        let _ = std::fs::copy(entry.path(), cache.join(entry.file_name()));
    }
}
