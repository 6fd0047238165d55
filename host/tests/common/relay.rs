//! A whole relay on loopback for protocol tests: the real listeners, TLS, store and bundle,
//! in this process, on ports the OS picks.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ferrymail::clock::Clock;
use ferrymail::config::Config;
use ferrymail::serve::Relay;

pub const DOMAIN: &str = "_c.test";

/// How to start a test relay.
pub struct Options {
    pub domain: String,
    /// Serve SMTP (25) and HTTPS (443) on this loopback address, as another relay would find
    /// them; the other listeners take any free port there.
    pub ip: Option<Ipv4Addr>,
    /// Appended to the config.
    pub extra: String,
    /// The data of an earlier relay to start again with.
    pub dir: Option<tempfile::TempDir>,
}

impl Default for Options {
    fn default() -> Self {
        Options { domain: DOMAIN.to_string(), ip: None, extra: String::new(), dir: None }
    }
}

pub struct TestRelay {
    pub relay: Arc<Relay>,
    pub domain: String,
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    pub https: SocketAddr,
    pub metrics: SocketAddr,
    pub turn: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    pub clock: Clock,
    _serving: Serving,
    pub dir: tempfile::TempDir,
}

/// The serving task, stopped when dropped.
struct Serving(tokio::task::JoinHandle<()>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl TestRelay {
    /// A relay for `_c.test` with the default bundle; `extra` is appended to its config.
    pub async fn start(extra: &str) -> TestRelay {
        Self::start_with(Options { extra: extra.to_string(), ..Options::default() }).await
    }

    pub async fn start_with(options: Options) -> TestRelay {
        let dir = match options.dir {
            Some(dir) => dir,
            None => tempfile::tempdir().unwrap(),
        };
        let (any, fixed) = match options.ip {
            Some(ip) => (format!("{ip}:0"), Some(ip)),
            None => ("127.0.0.1:0".to_string(), None),
        };
        let (smtp, https) = match fixed {
            Some(ip) => (format!("{ip}:25"), format!("{ip}:443")),
            None => (any.clone(), any.clone()),
        };
        // Test relays deliver to each other on loopback, unless a test says otherwise.
        let private = if options.extra.contains("allow_private_destinations") { "" } else { "allow_private_destinations = true" };
        let text = format!(
            // A busy test machine must not look short of resources to the accounts policy.
            "mail_domain = \"{}\"\ndata_dir = \"{}\"\nmax_load_1m = 1000.0\ndaily_expire = false\n{private}\n{}\n\
             [listen]\nsmtp = \"{smtp}\"\nsubmission = \"{any}\"\nsubmissions = \"{any}\"\n\
             imap = \"{any}\"\nimaps = \"{any}\"\nhttps = \"{https}\"\nmetrics = \"{any}\"\nturn = \"{any}\"\nhttp = \"{any}\"\n",
            options.domain,
            dir.path().join("data").display(),
            options.extra,
        );
        let config = Config::parse(&text).unwrap().config;
        super::seed_compile_cache(&dir.path().join("data/policy-cache"));
        let clock = Clock::default();
        let opened = {
            let clock = clock.clone();
            tokio::task::spawn_blocking(move || Relay::open_with_clock(config, None, clock)).await.unwrap()
        };
        let relay = Arc::new(opened.unwrap());
        let listeners = relay.bind().await.unwrap();
        let address = |l: &tokio::net::TcpListener| l.local_addr().unwrap();
        let (smtp, submission, submissions) = (address(&listeners.smtp), address(&listeners.submission), address(&listeners.submissions));
        let (imap, imaps, https) = (address(&listeners.imap), address(&listeners.imaps), address(&listeners.https));
        let metrics = address(&listeners.metrics);
        let http = listeners.http.as_ref().map(address);
        let turn = listeners.turn.as_ref().map(|s| s.local_addr().unwrap());
        let serving = relay.clone();
        let task = tokio::spawn(async move {
            serving.serve(listeners).await.unwrap();
        });
        TestRelay {
            // As the config means it (a bare IP is its address literal).
            domain: relay.config.mail_domain.clone(),
            relay,
            smtp,
            submission,
            submissions,
            imap,
            imaps,
            https,
            metrics,
            turn,
            http,
            clock,
            _serving: Serving(task),
            dir,
        }
    }

    /// Stop serving and close the store; returns the data, to start again with.
    pub async fn stop(self) -> tempfile::TempDir {
        let TestRelay { relay, dir, _serving, .. } = self;
        drop(_serving);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while Arc::strong_count(&relay) > 1 {
            assert!(std::time::Instant::now() < deadline, "sessions of the stopped relay did not end");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        drop(relay);
        dir
    }

    /// A login-ready address of the default relay (first login creates it).
    pub fn address(local: &str) -> String {
        format!("{local}@{DOMAIN}")
    }

    /// A login-ready address of this relay.
    pub fn address_here(&self, local: &str) -> String {
        format!("{local}@{}", self.domain)
    }
}
