//! TURN for audio and video calls (SPEC §8): a TURN server on UDP (3478 by default) with
//! TURN-REST credentials. The app reads `HOST:PORT:USERNAME:PASSWORD` from IMAP METADATA
//! (`/shared/vendor/deltachat/turn`): the username is the Unix time the credentials expire, the
//! password base64(HMAC-SHA1(secret, username)) with a secret generated into `data_dir` on
//! first start. Relayed data passes through, never stored.
//!
//! Each account gets its own usernames, so that it can have at most [`MAX_PER_ACCOUNT`]
//! allocations: Delta Chat reads the username as a number (the expiry) and falls back to
//! public servers when it is not one, so the account is in the number itself. The expiry is
//! chosen between 1 and 5 days ahead so that its remainder modulo [`TAG_PERIOD`] is a keyed
//! hash of the account (no address in it, changing every period): the server reads the
//! account's tag off the username, and the password (which the secret signs) vouches for it.
//! Distinct accounts share a tag about once in 345 600: they then share the cap. The tag
//! changes every period while a username lives up to 5 days, so an account that kept its
//! credentials from earlier periods may hold up to 3 tags' worth (12) at once; an app holds
//! the credentials of its last login, and with them 4.
//!
//! Requests without valid credentials are answered (or not) by [`gate`]: stateless nonces,
//! answers at most twice the request's size and rate-limited, so that strangers can neither
//! grow the relay's memory nor use it to amplify traffic.
//!
//! Relayed packets to loopback, private and link-local addresses are dropped (a TURN server
//! must not become a way into the relay's own network) unless `turn_allow_private_peers`.

mod gate;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use tokio::net::UdpSocket;
use turn::allocation::allocation_manager::{Manager, ManagerConfig};
use turn::auth::{AuthHandler, LongTermAuthHandler};
use turn::relay::RelayAddressGenerator;
use turn::server::request::Request;
use webrtc_util::Conn;

use gate::{Admit, Gate};

use crate::serve::Relay;

/// How long handed-out credentials stay valid.
pub const CREDENTIALS_LIFETIME: Duration = Duration::from_secs(5 * 86_400);
/// Allocations at once (each is a UDP socket): enough for many calls, not all the ports.
const MAX_ALLOCATIONS: usize = 4096;
/// Allocations one account may have at once (a call needs one or two per device).
pub const MAX_PER_ACCOUNT: usize = 4;
/// Usernames of one account are equal modulo this (seconds: 4 days, so that an expiry 1 to 5
/// days ahead can always be found), and its tag changes every period.
pub const TAG_PERIOD: u64 = 4 * 86_400;

/// The shared secret of the TURN-REST credentials.
pub struct TurnSecret(String);

impl TurnSecret {
    /// Read `data_dir/turn-secret`, creating it (random, owner-only) on first use.
    pub fn load_or_generate(data_dir: &Path) -> Result<TurnSecret, String> {
        let path = data_dir.join("turn-secret");
        let failed = |e: std::io::Error| format!("{}: {e}", path.display());
        if !path.exists() {
            let mut secret = [0u8; 32];
            rand::Rng::fill_bytes(&mut rand::rng(), &mut secret);
            // Whole or not at all: an interrupted first start must not leave a broken secret.
            crate::disk::write_private(data_dir, "turn-secret", hex::encode(secret).as_bytes()).map_err(failed)?;
        }
        let secret = std::fs::read_to_string(&path).map_err(failed)?.trim().to_string();
        if secret.len() < 32 {
            return Err(format!("{}: too short for a TURN secret", path.display()));
        }
        Ok(TurnSecret(secret))
    }

    /// Credentials of account `account_id` valid for 1 to 5 days from `now_secs`: (username,
    /// password). The username is the expiry, whose remainder modulo [`TAG_PERIOD`] is the
    /// account's tag for this period.
    pub fn credentials(&self, account_id: u64, now_secs: u64) -> (String, String) {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.0.as_bytes());
        let input = format!("turn-account:{account_id}:{}", now_secs / TAG_PERIOD);
        let digest = ring::hmac::sign(&key, input.as_bytes());
        let tag = u64::from_be_bytes(digest.as_ref()[..8].try_into().expect("8 bytes")) % TAG_PERIOD;
        let earliest = now_secs + CREDENTIALS_LIFETIME.as_secs() - TAG_PERIOD + 1;
        let expiry = earliest + (tag + TAG_PERIOD - earliest % TAG_PERIOD) % TAG_PERIOD;
        self.signed(expiry.to_string())
    }

    /// A username with its password.
    fn signed(&self, username: String) -> (String, String) {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, self.0.as_bytes());
        let password = base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, username.as_bytes()));
        (username, password)
    }
}

/// The account tag a username carries.
fn account_tag(username: &str) -> Option<u64> {
    username.parse::<u64>().ok().map(|expiry| expiry % TAG_PERIOD)
}

/// The METADATA value the app reads, for account `account_id`: `HOST:PORT:USERNAME:PASSWORD`
/// (none until TURN is served).
pub fn metadata_value(relay: &Relay, account_id: u64) -> Option<String> {
    let secret = relay.turn_secret.as_ref()?;
    let port = relay.turn_port.load(Ordering::Relaxed);
    if port == 0 {
        return None;
    }
    let config = &relay.config;
    let host = if config.turn_host.is_empty() {
        crate::http::url_host(&config.mail_domain).trim_matches(['[', ']']).to_string()
    } else {
        config.turn_host.clone()
    };
    // The app splits the value at its first three colons: an IPv6 address cannot be told.
    if host.contains(':') {
        return None;
    }
    let (username, password) = secret.credentials(account_id, relay.clock.now_secs());
    Some(format!("{host}:{port}:{username}:{password}"))
}

/// Serve TURN on `socket` until the returned future is dropped.
pub async fn serve(relay: Arc<Relay>, socket: UdpSocket) {
    let Some(secret) = relay.turn_secret.as_ref() else { return };
    let config = &relay.config;
    let Ok(bound) = socket.local_addr() else { return };
    let Some(relay_ip) = config.turn_relay_ip.or_else(|| public_ip(bound.ip())) else {
        return tracing::error!("TURN is off: no address to relay from; set `turn_relay_ip`");
    };
    let mut own = vec![bound.ip(), relay_ip];
    own.retain(|ip| !ip.is_unspecified());
    let current = Arc::new(Mutex::new(None));
    let generator = Relayed {
        bind_ip: bound.ip(),
        relay_ip,
        own,
        allow_private: config.turn_allow_private_peers,
        allocations: Arc::default(),
        per_account: Arc::default(),
        current: current.clone(),
    };
    let manager = Arc::new(Manager::new(ManagerConfig { relay_addr_generator: Box::new(generator), alloc_close_notify: None }));
    let _close = CloseOnDrop(manager.clone());
    let conn: Arc<dyn Conn + Send + Sync> = Arc::new(socket);
    let auth: Arc<dyn AuthHandler + Send + Sync> = Arc::new(LongTermAuthHandler::new(secret.0.clone()));
    let gate = Gate::new(secret.0.as_bytes());
    // The server's nonce table: only ever the one nonce of the request being handled.
    let nonces = Arc::new(tokio::sync::Mutex::new(HashMap::new()));
    // Announced (METADATA) only once it serves.
    relay.turn_port.store(bound.port(), Ordering::Relaxed);
    let _announced = Announced(relay.clone());
    let mut buf = vec![0u8; 1600];
    loop {
        let (n, from) = match conn.recv_from(&mut buf).await {
            Ok(received) => received,
            // ICMP errors surface here: the socket goes on.
            Err(_) => continue,
        };
        match gate.admit(&buf[..n], from, relay.clock.now_secs()) {
            Admit::Drop => {}
            Admit::Reply(answer) => {
                let _ = conn.send_to(&answer, from).await;
            }
            Admit::Pass { nonce, username } => {
                if let Some(nonce) = nonce {
                    nonces.lock().await.insert(nonce, tokio::time::Instant::now());
                }
                // One request at a time: the allocation it may make belongs to this account.
                *current.lock().unwrap_or_else(|e| e.into_inner()) = username.as_deref().and_then(account_tag);
                let mut request = Request {
                    conn: conn.clone(),
                    src_addr: from,
                    buff: buf[..n].to_vec(),
                    allocation_manager: manager.clone(),
                    nonces: nonces.clone(),
                    auth_handler: auth.clone(),
                    realm: gate::REALM.to_string(),
                    channel_bind_timeout: turn::proto::lifetime::DEFAULT_LIFETIME,
                };
                if let Err(e) = request.handle_request().await {
                    tracing::debug!("TURN request: {e}");
                }
                nonces.lock().await.clear();
                *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
    }
}

/// Ends every allocation (and its socket) when TURN stops.
struct CloseOnDrop(Arc<Manager>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let manager = self.0.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = manager.close().await;
            });
        }
    }
}

/// Withdraws the METADATA announcement when TURN stops.
struct Announced(Arc<Relay>);

impl Drop for Announced {
    fn drop(&mut self) {
        self.0.turn_port.store(0, Ordering::Relaxed);
    }
}

/// The address relayed traffic is announced from: the listener's own when it is specific,
/// else the address of the interface with the default route (found without sending anything).
/// A private address found so is used with a warning (behind 1:1 NAT, set `turn_relay_ip`).
fn public_ip(bind_ip: IpAddr) -> Option<IpAddr> {
    if !bind_ip.is_unspecified() {
        return Some(bind_ip);
    }
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| s.connect("192.0.2.1:9").and_then(|_| s.local_addr()));
    let ip = probe.ok()?.ip();
    if crate::net::is_private(ip) {
        tracing::warn!("TURN relays from a private address; behind NAT, set `turn_relay_ip` to the public one");
    }
    Some(ip)
}

/// Allocates relay sockets, each filtering where it may send.
struct Relayed {
    bind_ip: IpAddr,
    relay_ip: IpAddr,
    /// The relay's own addresses: never a peer (no loops, no way to its other services).
    own: Vec<IpAddr>,
    allow_private: bool,
    /// Relay sockets open now, in all and per account tag.
    allocations: Arc<AtomicUsize>,
    per_account: Arc<Mutex<HashMap<u64, usize>>>,
    /// The account tag of the request being handled.
    current: Arc<Mutex<Option<u64>>>,
}

#[async_trait::async_trait]
impl RelayAddressGenerator for Relayed {
    fn validate(&self) -> Result<(), turn::Error> {
        Ok(())
    }

    async fn allocate_conn(&self, _ipv4: bool, port: u16) -> Result<(Arc<dyn Conn + Send + Sync>, SocketAddr), turn::Error> {
        let Some(account) = *self.current.lock().unwrap_or_else(|e| e.into_inner()) else {
            return Err(turn::Error::Other("no account".into()));
        };
        {
            let mut per_account = self.per_account.lock().unwrap_or_else(|e| e.into_inner());
            let held = per_account.entry(account).or_default();
            if *held >= MAX_PER_ACCOUNT {
                return Err(turn::Error::Other("too many allocations for this account".into()));
            }
            if self.allocations.fetch_add(1, Ordering::Relaxed) >= MAX_ALLOCATIONS {
                self.allocations.fetch_sub(1, Ordering::Relaxed);
                if *held == 0 {
                    per_account.remove(&account);
                }
                return Err(turn::Error::Other("too many allocations".into()));
            }
            *held += 1;
        }
        let count = Allocation { total: self.allocations.clone(), per_account: self.per_account.clone(), account };
        let socket = UdpSocket::bind((self.bind_ip, port)).await.map_err(|e| turn::Error::Other(e.to_string()))?;
        let mut announced = socket.local_addr().map_err(|e| turn::Error::Other(e.to_string()))?;
        announced.set_ip(self.relay_ip);
        let filtered = FilteredSocket { socket, own: self.own.clone(), allow_private: self.allow_private, _count: Some(count) };
        Ok((Arc::new(filtered), announced))
    }
}

/// One open allocation, counted (in all and for its account) until its socket goes.
struct Allocation {
    total: Arc<AtomicUsize>,
    per_account: Arc<Mutex<HashMap<u64, usize>>>,
    account: u64,
}

impl Drop for Allocation {
    fn drop(&mut self) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        let mut per_account = self.per_account.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = per_account.get_mut(&self.account) {
            *held -= 1;
            if *held == 0 {
                per_account.remove(&self.account);
            }
        }
    }
}

/// A relay socket that drops packets to addresses inside private networks and to the relay.
struct FilteredSocket {
    socket: UdpSocket,
    own: Vec<IpAddr>,
    allow_private: bool,
    _count: Option<Allocation>,
}

impl FilteredSocket {
    fn may_send_to(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow_private || (!self.own.contains(&ip) && !crate::net::is_private(ip))
    }
}

#[async_trait::async_trait]
impl Conn for FilteredSocket {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        Ok(self.socket.connect(addr).await?)
    }
    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.recv(buf).await?)
    }
    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        let (n, from) = self.socket.recv_from(buf).await?;
        // On a dual-stack socket IPv4 peers arrive IPv4-mapped; permissions name them plainly.
        Ok((n, SocketAddr::new(from.ip().to_canonical(), from.port())))
    }
    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        Ok(self.socket.send(buf).await?)
    }
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        if !self.may_send_to(target.ip()) {
            // Dropped as UDP may drop anything; the sender learns nothing about the network.
            return Ok(buf.len());
        }
        Ok(self.socket.send_to(buf, target).await?)
    }
    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }
    async fn close(&self) -> webrtc_util::Result<()> {
        Ok(())
    }
    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relayed_packets_go_to_public_peers_only_unless_allowed() {
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = peer.local_addr().unwrap();
        let mut buf = [0u8; 16];
        for (allow_private, arrives) in [(false, false), (true, true)] {
            let socket = UdpSocket::bind("127.0.0.2:0").await.unwrap();
            let filtered = FilteredSocket { socket, own: Vec::new(), allow_private, _count: None };
            filtered.send_to(b"x", target).await.unwrap();
            let got = tokio::time::timeout(Duration::from_millis(300), peer.recv_from(&mut buf)).await.is_ok();
            assert_eq!(got, arrives, "allow_private = {allow_private}");
            assert_eq!(filtered.may_send_to("::ffff:127.0.0.1".parse().unwrap()), arrives, "IPv4-mapped alike");
        }
        let socket = UdpSocket::bind("127.0.0.2:0").await.unwrap();
        let own: IpAddr = "192.0.2.7".parse().unwrap();
        let filtered = FilteredSocket { socket, own: vec![own], allow_private: false, _count: None };
        assert!(!filtered.may_send_to(own), "never the relay itself");
        assert!(filtered.may_send_to("192.0.2.8".parse().unwrap()));
    }

    #[test]
    fn credentials_pass_the_turn_servers_own_check() {
        use turn::auth::AuthHandler;
        let secret = TurnSecret("0123456789abcdef0123456789abcdef".into());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let (username, password) = secret.credentials(7, now);
        let handler = LongTermAuthHandler::new(secret.0.clone());
        let addr: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let key = handler.auth_handle(&username, "c.test", addr).unwrap();
        assert_eq!(key, turn::auth::generate_auth_key(&username, "c.test", &password));
        let (expired, _) = secret.credentials(7, 1_000);
        assert!(handler.auth_handle(&expired, "c.test", addr).is_err());
    }

    #[test]
    fn usernames_are_expiries_that_carry_the_account() {
        let secret = TurnSecret("0123456789abcdef0123456789abcdef".into());
        let now = 1_800_000_000;
        for account in 0..200 {
            let (username, _) = secret.credentials(account, now);
            // What Delta Chat requires: a number, the expiry, 1 to 5 days ahead.
            let expiry: i64 = username.parse().unwrap();
            assert!((now as i64 + 86_400..=now as i64 + 5 * 86_400).contains(&expiry), "{expiry}");
            // Later credentials of the same period name the same account.
            let (later, _) = secret.credentials(account, now + 3600);
            assert_eq!(account_tag(&later), account_tag(&username));
        }
        let tags: std::collections::HashSet<_> = (0..200).map(|a| account_tag(&secret.credentials(a, now).0)).collect();
        assert!(tags.len() > 195, "accounts have their own tags");
    }
}
