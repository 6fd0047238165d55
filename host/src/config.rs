//! The relay's configuration: one TOML file.
//!
//! chatmail.ini's `[params]` keys sit at the top level under their own names and with
//! chatmail's defaults, so an operator's numbers carry over unchanged. Every policy sees
//! these settings (see [`Config::policy_params`]) overlaid with its own `[policy.config]`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The app releases announced by default (METADATA `appversions`), in the format and with the
/// values the reference relay ships; to be kept current with the app's releases. An operator
/// may set `app_versions` instead.
pub const DEFAULT_APP_VERSIONS: &str = include_str!("appversions.json");

/// Settings of a chatmail relay. Field names are a contract with operators: do not rename.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// The relay's mail domain. A leading `_` (or an IP literal) means self-signed TLS.
    pub mail_domain: String,
    pub max_user_send_per_minute: u64,
    pub max_user_send_burst_size: u64,
    pub max_mailbox_size: ByteSize,
    pub max_message_size: ByteSize,
    /// Days after which every message is deleted.
    pub delete_mails_after: u64,
    /// Days after which large messages already seen are deleted.
    pub delete_large_after: u64,
    /// Days without login after which an account is deleted.
    pub delete_inactive_users_after: u64,
    /// Run retention daily in the relay; false leaves it to `ferrymail expire` (e.g. from cron).
    pub daily_expire: bool,
    pub username_min_length: u64,
    pub username_max_length: u64,
    pub password_min_length: u64,
    /// Senders allowed to send cleartext (space-separated, as in chatmail.ini).
    pub passthrough_senders: WordList,
    /// Recipients (or `@domain`s) that may receive cleartext.
    pub passthrough_recipients: WordList,
    /// The operator's kill switch: false refuses every new account.
    pub accept_new_accounts: bool,
    /// No new accounts while the 1-minute load average is above this.
    pub max_load_1m: f64,
    /// No new accounts while less memory than this is available.
    pub min_available_memory: ByteSize,
    /// No new accounts while less disk than this is free under `data_dir`.
    pub min_free_disk_space: ByteSize,
    pub privacy_mail: String,
    pub privacy_postal: String,
    pub privacy_pdo: String,
    pub privacy_supervisor: String,

    /// Message bytes held in memory at once, all sessions together (SMTP DATA, /mxdeliv,
    /// IMAP APPEND); beyond it new ones hear "try again later". 0: a quarter of the
    /// machine's memory (at least two messages of `max_message_size`).
    pub max_bytes_in_flight: ByteSize,
    /// Connections served at once per SMTP port; more are turned away with `421`.
    pub max_smtp_connections: u64,
    /// Connections served at once per IMAP port.
    pub max_imap_connections: u64,
    /// HTTPS connections served at once (relays delivering over /mxdeliv, web pages).
    pub max_https_connections: u64,
    /// DKIM selector: the key is published at `<selector>._domainkey.<mail_domain>`.
    pub dkim_selector: String,
    /// A DNS server (`IP:port`) for delivery lookups; empty means the system's resolver.
    pub dns_resolver: Option<SocketAddr>,
    /// Take mail from other relays over HTTPS (`POST /mxdeliv`).
    pub accept_mxdeliv: bool,
    /// Deliver to other relays over HTTPS first, SMTP when they do not take it.
    pub try_mxdeliv: bool,
    /// Ports of other servers: SMTP (25) and HTTPS (443).
    pub outbound_smtp_port: u16,
    pub outbound_https_port: u16,
    /// Deliveries to one destination domain at once.
    pub max_outbound_per_destination: u64,
    /// Recipients at one destination domain that may wait in the queue; more get `421`.
    pub max_queue_per_destination: u64,
    /// Deliver to mail hosts at loopback, private and reserved addresses too (test setups
    /// only: otherwise anyone could make the relay connect into its own network).
    pub allow_private_destinations: bool,
    /// `/shared/comment` of IMAP METADATA: a line about this relay for the app's users.
    pub metadata_comment: String,
    /// `/shared/vendor/deltachat/appversions` of IMAP METADATA: the newest app releases, one
    /// line of JSON (by default [`DEFAULT_APP_VERSIONS`]), or empty for none.
    pub app_versions: String,
    /// Serve the realtime relay (iroh) at `/relay` on the HTTPS port.
    pub serve_iroh_relay: bool,
    /// Listen on `listen.http` (80): redirects, the realtime probe and ACME HTTP-01; off when
    /// another program (a web server) has it.
    pub serve_http: bool,
    /// The realtime relay the apps are told about (METADATA `irohrelay`); empty means this
    /// relay's own (`https://<mail_domain>`) when it serves one with a real certificate, else
    /// none. An `http://` URL also serves the relay on the plain HTTP port.
    pub iroh_relay: String,
    /// Realtime relay connections at once.
    pub max_realtime_connections: u64,
    /// Serve TURN (UDP, `listen.turn`) for the apps' calls.
    pub serve_turn: bool,
    /// The host name the apps are told to reach TURN at; empty means the mail domain.
    pub turn_host: String,
    /// The public address relayed traffic comes from; unset: the TURN listener's address, or
    /// (listening on all) the address of the interface with the default route.
    pub turn_relay_ip: Option<std::net::IpAddr>,
    /// Relay to loopback and private addresses too (test setups only).
    pub turn_allow_private_peers: bool,
    /// Where push notifications are posted (the device token as the body); empty: no push.
    pub notification_url: String,

    /// Where the relay keeps its database, keys and caches.
    pub data_dir: PathBuf,
    /// The TLS certificate chain (PEM) and its key; read again when they change. Without
    /// them a `_` domain gets a self-signed certificate generated into `data_dir/tls/`.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Without certificate files, a real domain gets its certificate by ACME (RFC 8555) into
    /// `data_dir/acme/`, renewed at two thirds of its lifetime; false: files only.
    pub acme: bool,
    /// The CA's ACME directory (Let's Encrypt production by default).
    pub acme_directory: String,
    /// A contact address the CA may write to about the certificate (optional).
    pub acme_email: String,
    /// `tls-alpn-01` (on the HTTPS port), `http-01` (on the plain HTTP port), or empty: the
    /// first the relay serves, the other after a failed attempt.
    pub acme_challenge: String,
    /// A PEM root that the ACME directory's own HTTPS certificate may chain to, besides the
    /// public roots (a private CA, a test CA).
    pub acme_ca_root: Option<PathBuf>,
    /// Seconds before the first retry of a failed attempt; each failure doubles it, up to 6 hours.
    pub acme_retry: u64,
    pub listen: Listen,
    pub timeouts: Timeouts,
    pub policy_engine: PolicyEngineConfig,
    /// The policy bundle, in chain order. Empty means the built-in default bundle.
    pub policy: Vec<PolicyEntry>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mail_domain: String::new(),
            max_user_send_per_minute: 60,
            max_user_send_burst_size: 10,
            max_mailbox_size: ByteSize(500 * MIB),
            max_message_size: ByteSize(31_457_280),
            delete_mails_after: 20,
            delete_large_after: 7,
            delete_inactive_users_after: 90,
            daily_expire: true,
            username_min_length: 9,
            username_max_length: 9,
            password_min_length: 9,
            passthrough_senders: WordList::default(),
            passthrough_recipients: WordList::default(),
            accept_new_accounts: true,
            max_load_1m: 5.0,
            min_available_memory: ByteSize(200 * MIB),
            min_free_disk_space: ByteSize(1024 * MIB),
            privacy_mail: String::new(),
            privacy_postal: String::new(),
            privacy_pdo: String::new(),
            privacy_supervisor: String::new(),
            max_bytes_in_flight: ByteSize(0),
            max_smtp_connections: 1000,
            max_imap_connections: 100_000,
            max_https_connections: 1000,
            dkim_selector: "opendkim".to_string(),
            dns_resolver: None,
            accept_mxdeliv: true,
            try_mxdeliv: true,
            outbound_smtp_port: 25,
            outbound_https_port: 443,
            max_outbound_per_destination: 4,
            max_queue_per_destination: 10_000,
            allow_private_destinations: false,
            metadata_comment: String::new(),
            app_versions: DEFAULT_APP_VERSIONS.trim().to_string(),
            serve_iroh_relay: true,
            serve_http: true,
            iroh_relay: String::new(),
            max_realtime_connections: 10_000,
            serve_turn: true,
            turn_host: String::new(),
            turn_relay_ip: None,
            turn_allow_private_peers: false,
            notification_url: "https://notifications.delta.chat/notify".to_string(),
            data_dir: PathBuf::from("/var/lib/ferrymail"),
            tls_cert_file: None,
            tls_key_file: None,
            acme: true,
            acme_directory: "https://acme-v02.api.letsencrypt.org/directory".to_string(),
            acme_email: String::new(),
            acme_challenge: String::new(),
            acme_ca_root: None,
            acme_retry: 60,
            listen: Listen::default(),
            timeouts: Timeouts::default(),
            policy_engine: PolicyEngineConfig::default(),
            policy: Vec::new(),
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Socket addresses of the relay's listeners.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Listen {
    pub smtp: SocketAddr,
    pub submission: SocketAddr,
    pub submissions: SocketAddr,
    pub imap: SocketAddr,
    pub imaps: SocketAddr,
    pub https: SocketAddr,
    /// Prometheus metrics (plain HTTP, `GET /metrics`): keep it on loopback or a private network.
    pub metrics: SocketAddr,
    /// TURN, UDP.
    pub turn: SocketAddr,
    /// Plain HTTP (when `serve_http`): redirects to HTTPS, and the realtime relay's probes (and
    /// the relay, for apps told an `http://` relay URL).
    pub http: SocketAddr,
}

impl Default for Listen {
    fn default() -> Self {
        let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
        Listen {
            smtp: any(25),
            submission: any(587),
            submissions: any(465),
            imap: any(143),
            imaps: any(993),
            https: any(443),
            metrics: SocketAddr::from(([127, 0, 0, 1], 9745)),
            turn: any(3478),
            http: any(80),
        }
    }
}

/// How long the relay waits for a client, in seconds: every connection has a deadline at
/// every step, so that idle or stalled clients give their slot back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Timeouts {
    /// From accepting a connection to a successful login (IMAP, SMTP submission), TLS
    /// handshake included.
    pub login: u64,
    /// Waiting for the next SMTP command or more of a message (RFC 5321 asks for 5 minutes).
    pub smtp: u64,
    /// IMAP after login: between commands, and the longest IDLE (RFC 3501's 30 minutes;
    /// clients re-issue IDLE within 29).
    pub imap: u64,
    /// An HTTPS connection without a request in progress, and a request body that stops
    /// arriving.
    pub https_idle: u64,
    /// A write the client does not take: after this long without progress the connection ends.
    pub write: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { login: 60, smtp: 300, imap: 1800, https_idle: 60, write: 60 }
    }
}

impl Timeouts {
    pub fn login(&self) -> Duration {
        Duration::from_secs(self.login)
    }
    pub fn smtp(&self) -> Duration {
        Duration::from_secs(self.smtp)
    }
    pub fn imap(&self) -> Duration {
        Duration::from_secs(self.imap)
    }
    pub fn https_idle(&self) -> Duration {
        Duration::from_secs(self.https_idle)
    }
    pub fn write(&self) -> Duration {
        Duration::from_secs(self.write)
    }
}

/// How the policy engine runs guests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyEngineConfig {
    /// Wall-clock budget of one hook call in one policy, in milliseconds.
    pub deadline_ms: u64,
    /// Linear memory a guest may grow to.
    pub memory_limit: ByteSize,
    /// Hook calls running at once; more wait. Also sizes the instance pool.
    pub max_concurrent_calls: u32,
    /// Default answer when a policy fails (trap, deadline, bad output).
    pub fail_mode: FailMode,
    /// Reload the bundle when one of its `.wasm` files changes.
    pub watch: bool,
    /// Entries one policy may keep in its key-value store; a write beyond fails the call.
    pub kv_max_entries: u64,
    /// Bytes (keys and values) one policy may keep in its key-value store.
    pub kv_max_bytes: ByteSize,
    /// Log lines one hook call may write; the rest are dropped (with one line saying so).
    pub max_log_lines: u32,
}

impl Default for PolicyEngineConfig {
    fn default() -> Self {
        PolicyEngineConfig {
            deadline_ms: 100,
            memory_limit: ByteSize(64 * MIB),
            max_concurrent_calls: 64,
            fail_mode: FailMode::Tempfail,
            watch: true,
            kv_max_entries: 1_000_000,
            kv_max_bytes: ByteSize(256 * MIB),
            max_log_lines: 32,
        }
    }
}

/// What a failing policy's verdict becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Temporary failure `451 4.3.0`: the client retries later (the default).
    Tempfail,
    /// Permanent failure `554 5.3.0`.
    Reject,
    /// As if the policy had accepted ("fail open").
    Accept,
}

/// One policy of the bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyEntry {
    /// Name in logs and metrics; defaults to the name the policy gives itself.
    #[serde(default)]
    pub name: Option<String>,
    /// A component file (relative paths are relative to the config file).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// One of the built-in policies: accounts, encryption, ratelimit, privacy, retention.
    #[serde(default)]
    pub builtin: Option<String>,
    /// Overrides `policy_engine.fail_mode` for this policy.
    #[serde(default)]
    pub fail_mode: Option<FailMode>,
    /// This policy's own settings, overlaid on the top-level ones.
    #[serde(default)]
    pub config: toml::Table,
}

/// A byte count written as a number or with a K/M/G suffix (powers of 1024), as chatmail.ini does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => text.split_at(i),
            None => (text, ""),
        };
        let factor = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1024,
            "M" | "MB" | "MIB" => MIB,
            "G" | "GB" | "GIB" => 1024 * MIB,
            "T" | "TB" | "TIB" => 1024 * 1024 * MIB,
            _ => return Err(format!("`{text}` is not a size (examples: 31457280, 500M, 1G)")),
        };
        let n: u64 = digits.parse().map_err(|_| format!("`{text}` is not a size (examples: 31457280, 500M, 1G)"))?;
        n.checked_mul(factor).map(ByteSize).ok_or_else(|| format!("`{text}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A list written either as a TOML array or as one space-separated string (chatmail.ini style).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct WordList(pub Vec<String>);

impl<'de> Deserialize<'de> for WordList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            List(Vec<String>),
        }
        Ok(WordList(match Raw::deserialize(deserializer)? {
            Raw::Text(text) => text.split_whitespace().map(str::to_string).collect(),
            Raw::List(list) => list,
        }))
    }
}

/// A config file, loaded: the settings plus what was noticed while reading them.
pub struct Loaded {
    pub config: Config,
    /// Keys that mean nothing to ferrymail (reported, not fatal: chatmail.ini has extras).
    pub unknown_keys: Vec<String>,
}

impl Config {
    /// Read and check a config file. Relative paths in it are taken relative to its folder.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let is_ini = path.extension().is_some_and(|e| e == "ini")
            || text.trim_start_matches('\u{feff}').lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with(['#', ';'])).is_some_and(|l| l.starts_with("[params]"));
        let parsed = if is_ini { Config::parse_ini(&text) } else { Config::parse(&text) };
        let mut loaded = parsed.map_err(|message| ConfigError::Invalid { path: path.to_path_buf(), message })?;
        let base = path.parent().unwrap_or(Path::new("."));
        loaded.config.resolve_relative_paths(base);
        Ok(loaded)
    }

    /// Parse config text: a bad value is an error naming its key; unknown keys are collected.
    pub fn parse(text: &str) -> Result<Loaded, String> {
        let mut unknown_keys = Vec::new();
        let deserializer = toml::de::Deserializer::parse(text).map_err(|e| e.to_string())?;
        let mut note_unknown = |path: serde_ignored::Path<'_>| unknown_keys.push(path.to_string());
        let ignored = serde_ignored::Deserializer::new(deserializer, &mut note_unknown);
        let mut config: Config = serde_path_to_error::deserialize(ignored).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner().to_string();
            // toml's message already shows the offending line; lead with the key's name.
            format!("bad value for `{key}`: {}", inner.trim_end())
        })?;
        config.mail_domain = address_domain(&config.mail_domain);
        config.validate()?;
        unknown_keys.sort();
        Ok(Loaded { config, unknown_keys })
    }

    /// Read a chatmail relay's `chatmail.ini`: the `[params]` keys, under their own names
    /// (Python configparser syntax: `key = value`, indented continuation lines, `#`/`;` comments).
    pub fn parse_ini(text: &str) -> Result<Loaded, String> {
        Config::parse(&ini_to_toml(text)?)
    }

    fn validate(&self) -> Result<(), String> {
        if !self.app_versions.is_empty() && serde_json::from_str::<serde_json::Value>(&self.app_versions).is_err() {
            return Err("`app_versions` is not JSON".into());
        }
        if self.username_min_length > self.username_max_length {
            return Err("`username_min_length` is greater than `username_max_length`".into());
        }
        match self.acme_challenge.as_str() {
            "" | "tls-alpn-01" => {}
            "http-01" if self.serve_http => {}
            "http-01" => return Err("`acme_challenge = \"http-01\"` needs `serve_http = true`".into()),
            other => return Err(format!("`acme_challenge` is `tls-alpn-01`, `http-01` or empty, not `{other}`")),
        }
        if self.acme_retry == 0 {
            return Err("`acme_retry` must be at least 1 (seconds)".into());
        }
        if self.policy_engine.deadline_ms == 0 {
            return Err("`policy_engine.deadline_ms` must be at least 1".into());
        }
        let t = &self.timeouts;
        if [t.login, t.smtp, t.imap, t.https_idle, t.write].contains(&0) {
            return Err("every `timeouts.*` value must be at least 1 (second)".into());
        }
        if self.policy_engine.max_concurrent_calls == 0 {
            return Err("`policy_engine.max_concurrent_calls` must be at least 1".into());
        }
        if !self.notification_url.is_empty() {
            crate::push::check_url(&self.notification_url).map_err(|e| format!("bad value for `notification_url`: {e}"))?;
        }
        for (i, entry) in self.policy.iter().enumerate() {
            if entry.path.is_some() == entry.builtin.is_some() {
                return Err(format!("`policy[{i}]` needs exactly one of `path` and `builtin`"));
            }
        }
        Ok(())
    }

    fn resolve_relative_paths(&mut self, base: &Path) {
        if self.data_dir.is_relative() {
            self.data_dir = base.join(&self.data_dir);
        }
        for file in [&mut self.tls_cert_file, &mut self.tls_key_file].into_iter().flatten() {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        for entry in &mut self.policy {
            if let Some(path) = &entry.path
                && path.is_relative()
            {
                entry.path = Some(base.join(path));
            }
        }
    }

    /// The settings every policy sees, as a JSON object: the chatmail parameters only
    /// (no paths, listeners or policy list).
    pub fn policy_params(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut value = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        for key in ["data_dir", "tls_cert_file", "tls_key_file", "acme_ca_root", "listen", "timeouts", "policy_engine", "policy"] {
            value.remove(key);
        }
        value
    }

    /// The realtime relay to announce, if any.
    pub fn iroh_relay_url(&self) -> Option<String> {
        if !self.iroh_relay.is_empty() {
            return Some(self.iroh_relay.clone());
        }
        // iroh's client trusts public CAs only: a self-signed relay would only break realtime
        // (the apps fall back to their default relays when none is announced).
        (self.serve_iroh_relay && !self.is_self_signed()).then(|| format!("https://{}", crate::http::url_host(&self.mail_domain)))
    }

    /// Whether an address belongs to this relay's domain.
    pub fn is_local(&self, address: &str) -> bool {
        address.rsplit_once('@').is_some_and(|(_, domain)| domain.eq_ignore_ascii_case(&self.mail_domain))
    }

    /// Self-signed TLS: a domain starting with `_` or an IP literal.
    pub fn is_self_signed(&self) -> bool {
        self.mail_domain.starts_with('_') || self.ip_literal().is_some()
    }

    /// The relay's address when its mail domain is an address literal (`[192.0.2.1]`).
    pub fn ip_literal(&self) -> Option<std::net::IpAddr> {
        crate::dns::ip_literal(&self.mail_domain)
    }
}

/// A mail domain as addresses carry it: a bare IP address (as chatmail.ini writes an IPv4
/// relay) becomes the address literal `[192.0.2.1]` (`[IPv6:2001:db8::1]`), RFC 5321 §4.1.3.
fn address_domain(domain: &str) -> String {
    match domain.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => format!("[{ip}]"),
        Ok(std::net::IpAddr::V6(ip)) => format!("[IPv6:{ip}]"),
        Err(_) => domain.to_string(),
    }
}

/// chatmail.ini's `[params]` as TOML text, each value typed like the key's default.
pub fn ini_to_toml(text: &str) -> Result<String, String> {
    let defaults = serde_json::to_value(Config::default()).map_err(|e| e.to_string())?;
    let mut params: Vec<(String, String)> = Vec::new();
    let mut section = String::new();
    for (number, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let continuation = line.starts_with([' ', '\t']);
        if !continuation && trimmed.starts_with('[') {
            let Some(end) = trimmed.find(']') else { return Err(format!("line {}: unclosed section header", number + 1)) };
            section = trimmed[1..end].trim().to_string();
            continue;
        }
        if section != "params" {
            continue;
        }
        if continuation {
            // A continuation of the previous value (e.g. a postal address over several lines).
            let (_, value) = params.last_mut().ok_or(format!("line {}: continuation without a key", number + 1))?;
            if !value.is_empty() {
                value.push('\n');
            }
            value.push_str(trimmed);
            continue;
        }
        let (key, value) = trimmed
            .split_once(['=', ':'])
            .ok_or(format!("line {}: expected `key = value`", number + 1))?;
        params.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut table = toml::Table::new();
    for (key, value) in params {
        let typed = match defaults.get(&key) {
            Some(serde_json::Value::Bool(_)) => match value.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => toml::Value::Boolean(true),
                "false" | "no" | "off" | "0" => toml::Value::Boolean(false),
                _ => return Err(format!("bad value for `{key}`: `{value}` is not true or false")),
            },
            Some(serde_json::Value::Number(n)) if n.is_f64() => {
                toml::Value::Float(value.parse().map_err(|_| format!("bad value for `{key}`: `{value}` is not a number"))?)
            }
            // Sizes (`500M`) stay text; plain numbers become integers.
            Some(serde_json::Value::Number(_)) => match value.parse::<i64>() {
                Ok(n) => toml::Value::Integer(n),
                Err(_) => toml::Value::String(value),
            },
            _ => toml::Value::String(value),
        };
        table.insert(key, typed);
    }
    toml::to_string(&table).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_realtime_relay_announced() {
        let config = |text: &str| Config::parse(text).unwrap().config.iroh_relay_url();
        assert_eq!(config("mail_domain = \"c.org\""), Some("https://c.org".into()));
        assert_eq!(config("mail_domain = \"_c.test\""), None, "self-signed: the apps' default relays");
        assert_eq!(config("mail_domain = \"c.org\"\nserve_iroh_relay = false"), None);
        assert_eq!(config("mail_domain = \"c.org\"\niroh_relay = \"https://r.org\""), Some("https://r.org".into()));
    }

    #[test]
    fn chatmail_ini_is_read() {
        let ini = "[params]\nmail_domain = chat.example.org\nmax_user_send_per_minute = 80\nmax_mailbox_size = 100M\n\
                   passthrough_recipients = echo@example.org @partner.org\nprivacy_postal =\n    Jane Doe\n    Main Street 1\n\
                   # a comment\nfiltermail_smtp_port = 10080\naccept_new_accounts = no\nmax_load_1m = 3\n\
                   [other]\nmail_domain = ignored.org\n[params] # again\nmetadata_comment = first\n  [not a section]\n";
        let loaded = Config::parse_ini(ini).unwrap();
        let c = loaded.config;
        assert_eq!(c.mail_domain, "chat.example.org");
        assert_eq!(c.max_user_send_per_minute, 80);
        assert_eq!(c.max_mailbox_size, ByteSize(100 * MIB));
        assert_eq!(c.passthrough_recipients.0, ["echo@example.org", "@partner.org"]);
        assert_eq!(c.privacy_postal, "Jane Doe\nMain Street 1");
        assert!(!c.accept_new_accounts);
        assert_eq!(c.max_load_1m, 3.0);
        assert_eq!(loaded.unknown_keys, ["filtermail_smtp_port"]);
        assert_eq!(c.metadata_comment, "first\n[not a section]", "an indented line continues the value");
        let err = Config::parse_ini("[params]\nmax_user_send_per_minute = many\n").err().unwrap();
        assert!(err.contains("max_user_send_per_minute"), "{err}");
    }

    #[test]
    fn defaults_are_chatmails() {
        let loaded = Config::parse("mail_domain = \"c.example.org\"").unwrap();
        let c = loaded.config;
        assert_eq!(c.max_user_send_per_minute, 60);
        assert_eq!(c.max_user_send_burst_size, 10);
        assert_eq!(c.max_mailbox_size, ByteSize(500 * MIB));
        assert_eq!(c.max_message_size, ByteSize(31_457_280));
        assert_eq!((c.delete_mails_after, c.delete_large_after, c.delete_inactive_users_after), (20, 7, 90));
        assert_eq!((c.username_min_length, c.username_max_length, c.password_min_length), (9, 9, 9));
        assert_eq!(c.listen.smtp.port(), 25);
        assert_eq!(c.listen.submission.port(), 587);
        assert_eq!(c.listen.submissions.port(), 465);
        assert_eq!(c.listen.imap.port(), 143);
        assert_eq!(c.listen.imaps.port(), 993);
        assert_eq!(c.listen.https.port(), 443);
        assert!(c.policy.is_empty());
        assert!(loaded.unknown_keys.is_empty());
    }

    #[test]
    fn sizes_and_lists_in_chatmail_ini_style() {
        let c = Config::parse(
            "max_mailbox_size = \"1G\"\nmin_available_memory = \"200M\"\npassthrough_recipients = \"echo@x.org @y.org\"",
        )
        .unwrap()
        .config;
        assert_eq!(c.max_mailbox_size, ByteSize(1024 * MIB));
        assert_eq!(c.min_available_memory, ByteSize(200 * MIB));
        assert_eq!(c.passthrough_recipients.0, ["echo@x.org", "@y.org"]);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = Config::parse("max_user_send_per_minute = \"lots\"").err().unwrap();
        assert!(err.contains("`max_user_send_per_minute`"), "{err}");
        let err = Config::parse("[listen]\nsmtp = \"not an address\"").err().unwrap();
        assert!(err.contains("`listen.smtp`"), "{err}");
        let err = Config::parse("max_mailbox_size = \"12 parsecs\"").err().unwrap();
        assert!(err.contains("`max_mailbox_size`"), "{err}");
    }

    #[test]
    fn unknown_keys_are_reported() {
        let loaded = Config::parse("mail_domian = \"x\"\n[listen]\nsmpt = \"127.0.0.1:25\"").unwrap();
        assert_eq!(loaded.unknown_keys, ["listen.smpt", "mail_domian"]);
    }

    #[test]
    fn policy_entries() {
        let c = Config::parse(
            "[[policy]]\nbuiltin = \"accounts\"\n[[policy]]\npath = \"x.wasm\"\nfail_mode = \"accept\"\n[policy.config]\nlimit = 3",
        )
        .unwrap()
        .config;
        assert_eq!(c.policy.len(), 2);
        assert_eq!(c.policy[1].fail_mode, Some(FailMode::Accept));
        assert_eq!(c.policy[1].config.get("limit").and_then(|v| v.as_integer()), Some(3));
        assert!(Config::parse("[[policy]]\nname = \"x\"").is_err(), "neither path nor builtin");
    }

    #[test]
    fn the_example_configs_are_valid_and_complete() {
        for text in [include_str!("../../examples/ferrymail.toml"), include_str!("../../examples/local.toml")] {
            let loaded = Config::parse(text).unwrap();
            assert!(loaded.unknown_keys.is_empty(), "{:?}", loaded.unknown_keys);
        }
        // Every key is documented (optional ones commented out)...
        let example = include_str!("../../examples/ferrymail.toml");
        let defaults = serde_json::to_value(Config::default()).unwrap();
        let mut keys: Vec<&String> = defaults.as_object().unwrap().keys().filter(|k| *k != "policy").collect();
        for section in ["listen", "timeouts", "policy_engine"] {
            keys.retain(|k| *k != section);
            keys.extend(defaults[section].as_object().unwrap().keys());
        }
        for key in keys {
            let documented = example.lines().any(|l| l.trim_start_matches("# ").starts_with(&format!("{key} =")));
            assert!(documented, "examples/ferrymail.toml does not document `{key}`");
        }
        // ...at its default.
        let documented = Config::parse(example).unwrap().config;
        let mut defaults = Config::default();
        defaults.mail_domain = documented.mail_domain.clone();
        assert_eq!(serde_json::to_value(&documented).unwrap(), serde_json::to_value(&defaults).unwrap());
    }

    #[test]
    fn a_bare_ip_domain_means_its_address_literal() {
        for (written, meant) in [
            ("127.0.0.5", "[127.0.0.5]"),
            ("[127.0.0.5]", "[127.0.0.5]"),
            ("2001:db8::1", "[IPv6:2001:db8::1]"),
            ("c.example.org", "c.example.org"),
        ] {
            let config = Config::parse(&format!("mail_domain = \"{written}\"")).unwrap().config;
            assert_eq!(config.mail_domain, meant);
            assert_eq!(config.is_self_signed(), written != "c.example.org");
        }
        let ini = Config::parse_ini("[params]\nmail_domain = 203.0.113.5\n").unwrap().config;
        assert_eq!(ini.mail_domain, "[203.0.113.5]");
        assert!(ini.is_local("bob@[203.0.113.5]") && !ini.is_local("bob@203.0.113.5"));
    }

    #[test]
    fn policy_params_hold_only_chatmail_settings() {
        let params = Config::parse("mail_domain = \"x.org\"").unwrap().config.policy_params();
        assert_eq!(params["mail_domain"], "x.org");
        assert_eq!(params["max_mailbox_size"], 500 * MIB);
        assert!(!params.contains_key("data_dir") && !params.contains_key("policy"));
    }
}
