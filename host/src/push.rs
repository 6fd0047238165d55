//! Push notifications (SPEC §6). The app registers device tokens with
//! `SETMETADATA INBOX (/private/devicetoken "...")`, several per account, each forgotten 90 days
//! after it was last set. When a message reaches an account from someone else, every token of
//! the account is queued (in the database, so the queue survives restarts) and posted to
//! `notification_url`, the raw token as the body: 2xx is done, 410 forgets the token, anything
//! else is tried again after 8, 64, 512 and 4096 seconds (five attempts in all); a notification
//! still queued 5 hours after the message (say, the relay was down) is dropped unsent.
//! The notification service learns a token and nothing else: no address, no content.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::serve::Relay;
use crate::store::{Delivery, PushEntry, Store, StoreError};

/// Stored device tokens: one metadata entry per token, under this prefix.
const TOKEN_PREFIX: &str = "/private/devicetoken/";
/// A token not set again within this many days is forgotten.
const TOKEN_LIFETIME_DAYS: u32 = 90;
/// Waits after the first, second, third and fourth failed attempt; the fifth is the last.
const RETRY_AFTER: [u64; 4] = [8, 64, 512, 4096];
/// Tokens kept per account (the oldest set goes), and the longest token taken.
const MAX_TOKENS: usize = 16;
pub const MAX_TOKEN_LENGTH: usize = 4096;
/// A notification not delivered within this time is dropped: by then it is no news.
const GIVE_UP_AFTER_MILLIS: u64 = 5 * 3600 * 1000;
/// Notifications posted at once.
const CONCURRENCY: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Add a device token for an account (setting it again renews it). An account keeps at most
/// `MAX_TOKENS`: each delivery posts every one of them.
pub fn add_token(store: &Store, account_id: u64, token: &str, today: u32) -> Result<(), StoreError> {
    store.set_metadata(account_id, &token_key(token), Some(&format!("{today}\t{token}")))?;
    let mut tokens = store.metadata_with_prefix(account_id, TOKEN_PREFIX)?;
    if tokens.len() > MAX_TOKENS {
        // Oldest first by the day it was set; the one just set is of today.
        tokens.sort_by_key(|(_, value)| value.split_once('\t').and_then(|(day, _)| day.parse::<u32>().ok()).unwrap_or(0));
        for (key, _) in tokens.iter().filter(|(key, _)| *key != token_key(token)).take(tokens.len() - MAX_TOKENS) {
            store.set_metadata(account_id, key, None)?;
        }
    }
    Ok(())
}

/// Forget every token of an account.
pub fn forget_tokens(store: &Store, account_id: u64) -> Result<(), StoreError> {
    for (key, _) in store.metadata_with_prefix(account_id, TOKEN_PREFIX)? {
        store.set_metadata(account_id, &key, None)?;
    }
    Ok(())
}

/// The account's tokens that have not expired.
pub fn tokens(store: &Store, account_id: u64, today: u32) -> Result<Vec<String>, StoreError> {
    let entries = store.metadata_with_prefix(account_id, TOKEN_PREFIX)?;
    Ok(entries.into_iter().filter_map(|(_, value)| live_token(&value, today).map(str::to_string)).collect())
}

fn live_token(value: &str, today: u32) -> Option<&str> {
    let (day, token) = value.split_once('\t')?;
    (day.parse::<u32>().ok()? + TOKEN_LIFETIME_DAYS >= today).then_some(token)
}

fn token_key(token: &str) -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(&Sha256::digest(token.as_bytes())[..16]))
}

/// Remove expired tokens of every account (part of the daily retention run).
pub async fn forget_expired_tokens(relay: &Relay) -> Result<(), StoreError> {
    let today = relay.clock.today();
    relay
        .store
        .run(move |s| {
            for account in s.accounts()? {
                for (key, value) in s.metadata_with_prefix(account.id, TOKEN_PREFIX)? {
                    if live_token(&value, today).is_none() {
                        s.set_metadata(account.id, &key, None)?;
                    }
                }
            }
            Ok(())
        })
        .await
}

/// Queue notifications for the accounts a message was just delivered to, except the sender's
/// own (a copy to itself for its other devices). Blocking; called in the delivery's store task.
/// A failure is logged: the message is stored either way.
pub fn queue(store: &Store, deliveries: &[Delivery], sender: &str, today: u32, now_millis: u64) -> usize {
    let result = (|| {
        let mut queued = Vec::new();
        for delivery in deliveries.iter().filter(|d| !d.address.eq_ignore_ascii_case(sender)) {
            for token in tokens(store, delivery.account_id, today)? {
                queued.push((delivery.account_id, token));
            }
        }
        if !queued.is_empty() {
            store.push_enqueue(&queued, now_millis)?;
        }
        Ok::<_, StoreError>(queued.len())
    })();
    result.unwrap_or_else(|e| {
        tracing::error!("cannot queue push notifications: {e}");
        0
    })
}

/// Wakes the push worker when something was queued.
#[derive(Default)]
pub struct Push {
    wake: Notify,
}

/// Whether this relay posts notifications (`notification_url` set).
pub fn enabled(relay: &Relay) -> bool {
    !relay.config.notification_url.is_empty()
}

/// Check a notification URL (the config's own check).
pub fn check_url(url: &str) -> Result<(), String> {
    Client::new(url).map(|_| ())
}

impl Push {
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Post queued notifications until the relay stops. Does nothing without `notification_url`
/// (and then nothing is queued either).
pub async fn run(relay: Arc<Relay>) {
    if !enabled(&relay) {
        return;
    }
    let client = match Client::new(&relay.config.notification_url) {
        Ok(client) => Arc::new(client),
        // The config check refuses such a URL; this is only a second line of defence.
        Err(e) => return tracing::error!("notification_url: {e}; push notifications are off"),
    };
    let in_flight: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let now = relay.clock.now_millis();
        let due = relay.store.run(move |s| s.push_due(now, 256)).await.unwrap_or_else(|e| {
            tracing::error!("push queue: {e}");
            Vec::new()
        });
        for entry in due {
            if tasks.len() >= CONCURRENCY {
                break;
            }
            if !in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(entry.id) {
                continue;
            }
            let (relay, client, in_flight) = (relay.clone(), client.clone(), in_flight.clone());
            tasks.spawn(async move {
                let id = entry.id;
                attempt(&relay, &client, entry).await;
                in_flight.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            });
        }
        // Look again when a post finishes, something is queued, or a second passed (due times
        // follow the relay's clock, which tests move).
        tokio::select! {
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = relay.push.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn attempt(relay: &Relay, client: &Client, entry: PushEntry) {
    // Read before an earlier attempt of this entry finished: then it is gone or moved.
    let current = entry.clone();
    if !relay.store.run(move |s| s.push_is_queued(&current)).await.unwrap_or(false) {
        return;
    }
    let stale = relay.clock.now_millis() > entry.created_millis + GIVE_UP_AFTER_MILLIS;
    // None: not posted, the news is too old.
    let outcome = if stale { None } else { Some(client.post(&entry.token).await) };
    let next = match outcome {
        None => {
            relay.metrics.inc("ferrymail_push_total", &[("result", "dropped")]);
            tracing::info!("push notification dropped unsent: queued more than 5 hours ago");
            None
        }
        Some(Ok(status)) if status.is_success() => {
            relay.metrics.inc("ferrymail_push_total", &[("result", "delivered")]);
            None
        }
        Some(Ok(StatusCode::GONE)) => {
            relay.metrics.inc("ferrymail_push_total", &[("result", "token_gone")]);
            let (account_id, key) = (entry.account_id, token_key(&entry.token));
            if let Err(e) = relay.store.run(move |s| s.set_metadata(account_id, &key, None)).await {
                tracing::error!("cannot forget a device token: {e}");
            }
            None
        }
        Some(failed) => {
            let reason = match failed {
                Ok(status) => status.to_string(),
                Err(e) => e,
            };
            let attempts = entry.attempts + 1;
            match RETRY_AFTER.get(entry.attempts as usize) {
                Some(wait) => {
                    relay.metrics.inc("ferrymail_push_total", &[("result", "retry")]);
                    tracing::debug!(attempts, "push notification failed, trying again in {wait} s: {reason}");
                    let due_millis = relay.clock.now_millis() + wait * 1000;
                    Some(PushEntry { attempts, due_millis, ..entry.clone() })
                }
                None => {
                    relay.metrics.inc("ferrymail_push_total", &[("result", "dropped")]);
                    tracing::info!(attempts, "push notification dropped after its last attempt: {reason}");
                    None
                }
            }
        }
    };
    if let Err(e) = relay.store.run(move |s| s.push_reschedule(&entry, next.as_ref())).await {
        tracing::error!("push queue: {e}");
    }
}

/// HTTPS to the notification service, keeping idle connections for the next posts.
struct Client {
    host: String,
    port: u16,
    path: String,
    /// Verified unless the host is an IP literal or starts with `_` (test setups).
    verify: bool,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl Client {
    fn new(url: &str) -> Result<Client, String> {
        let uri: Uri = url.parse().map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("`{url}` is not an https:// URL"));
        }
        let host = uri.host().ok_or_else(|| format!("`{url}` has no host"))?.trim_matches(['[', ']']).to_string();
        let verify = !(host.starts_with('_') || host.parse::<std::net::IpAddr>().is_ok());
        let path = uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        Ok(Client { port: uri.port_u16().unwrap_or(443), host, path, verify, idle: Mutex::new(Vec::new()) })
    }

    async fn post(&self, token: &str) -> Result<StatusCode, String> {
        // An idle connection may have been closed by the server meanwhile: then once more on a new one.
        if let Some(sender) = self.take_idle() {
            if let Ok(status) = self.send(sender, token).await {
                return Ok(status);
            }
        }
        let sender = tokio::time::timeout(TIMEOUT, self.connect()).await.map_err(|_| "connect timed out".to_string())??;
        self.send(sender, token).await
    }

    fn take_idle(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = crate::tls::server_name(&self.host)?;
        let tls = crate::tls::client(self.verify, &[b"http/1.1"]).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("HTTP: {e}"))?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn send(&self, mut sender: SendRequest<Full<Bytes>>, token: &str) -> Result<StatusCode, String> {
        let exchange = async {
            sender.ready().await.map_err(|e| format!("HTTP: {e}"))?;
            let authority = if self.host.contains(':') { format!("[{}]:{}", self.host, self.port) } else { format!("{}:{}", self.host, self.port) };
            let request = Request::post(&self.path)
                .header(hyper::header::HOST, authority)
                .header(hyper::header::CONTENT_TYPE, "text/plain")
                .body(Full::new(Bytes::copy_from_slice(token.as_bytes())))
                .map_err(|e| format!("request: {e}"))?;
            let response = sender.send_request(request).await.map_err(|e| format!("HTTP: {e}"))?;
            let status = response.status();
            // Read the (small) answer to the end, so the connection can carry the next post.
            let _ = Limited::new(response.into_body(), 64 * 1024).collect().await;
            Ok::<_, String>(status)
        };
        let status = tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| "no answer".to_string())??;
        if !sender.is_closed() {
            self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(sender);
        }
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_keeps_its_16_newest_tokens() {
        let store = Store::open_in_memory().unwrap();
        for i in 0..20u32 {
            add_token(&store, 7, &format!("device-{i}"), 100 + i).unwrap();
        }
        let live = tokens(&store, 7, 130).unwrap();
        assert_eq!(live.len(), 16);
        assert!(!live.contains(&"device-3".to_string()) && live.contains(&"device-4".to_string()));
    }

    #[test]
    fn tokens_expire_after_90_days_and_are_kept_per_device() {
        let store = Store::open_in_memory().unwrap();
        add_token(&store, 7, "device-a", 100).unwrap();
        add_token(&store, 7, "device-b", 150).unwrap();
        add_token(&store, 7, "device-a", 120).unwrap(); // renewed, not doubled
        add_token(&store, 8, "other", 150).unwrap();
        let mut live = tokens(&store, 7, 210).unwrap();
        live.sort();
        assert_eq!(live, ["device-a", "device-b"]);
        assert_eq!(tokens(&store, 7, 211).unwrap(), ["device-b"]);
        forget_tokens(&store, 7).unwrap();
        assert!(tokens(&store, 7, 150).unwrap().is_empty());
        assert_eq!(tokens(&store, 8, 150).unwrap(), ["other"]);
    }

    #[test]
    fn a_message_to_oneself_is_not_announced() {
        let store = Store::open_in_memory().unwrap();
        add_token(&store, 7, "tok", 100).unwrap();
        let delivery = |address: &str| Delivery { address: address.into(), account_id: 7, mailbox_id: 1, uid: 1, used_bytes: 0 };
        assert_eq!(queue(&store, &[delivery("me@x.org")], "ME@x.org", 100, 5), 0);
        assert_eq!(queue(&store, &[delivery("me@x.org")], "friend@y.org", 100, 5), 1);
        assert_eq!(store.push_queue().unwrap()[0].token, "tok");
    }
}
