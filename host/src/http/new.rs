//! `/new`: credentials for a new account, asked for by the app after scanning the invite QR code
//! (SPEC §1). `POST` answers `{"email", "password"}` (plus `dclogin_url` for self-signed relays);
//! `GET` sends a browser on to the app. The bundle's `new-account` hook makes the credentials
//! (or refuses); the host only creates the account, never over an existing one.
//!
//! Requests are rate-limited per requester (2 per second, bursts of 5, as chatmail's nginx does)
//! and for the whole relay (bounding the password hashing). Requesters are told apart by a
//! keyed hash of their address, kept in memory only while their bucket refills; the address
//! itself is never kept, logged or written.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::policy::{NewAccountRequest, NewAccountVerdict};
use crate::serve::Relay;

/// Per requester: requests per second, and the burst allowed.
const RATE: f64 = 2.0;
const BURST: f64 = 5.0;
/// For the whole relay.
const RELAY_RATE: f64 = 20.0;
const RELAY_BURST: f64 = 50.0;
/// Fresh credentials that collide with an existing account are asked for again, this often.
const ATTEMPTS: usize = 5;

/// A token bucket: (tokens, last refill in Unix milliseconds).
#[derive(Clone, Copy)]
struct Bucket(f64, u64);

impl Bucket {
    fn take(&mut self, now_millis: u64, rate: f64, burst: f64) -> bool {
        let refilled = (self.0 + now_millis.saturating_sub(self.1) as f64 / 1000.0 * rate).min(burst);
        let allowed = refilled >= 1.0;
        *self = Bucket(if allowed { refilled - 1.0 } else { refilled }, now_millis);
        allowed
    }

    fn is_full(&self, now_millis: u64, rate: f64, burst: f64) -> bool {
        self.0 + now_millis.saturating_sub(self.1) as f64 / 1000.0 * rate >= burst
    }
}

pub struct RateLimit {
    secret: [u8; 32],
    requesters: Mutex<HashMap<[u8; 16], Bucket>>,
    relay: Mutex<Bucket>,
}

impl Default for RateLimit {
    fn default() -> Self {
        let mut secret = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut secret);
        RateLimit { secret, requesters: Mutex::default(), relay: Mutex::new(Bucket(RELAY_BURST, 0)) }
    }
}

impl RateLimit {
    fn allow(&self, requester: IpAddr, now_millis: u64) -> bool {
        let key: [u8; 16] = {
            let digest = Sha256::new().chain_update(self.secret).chain_update(requester.to_string()).finalize();
            digest[..16].try_into().expect("16 of 32 bytes")
        };
        {
            let mut requesters = self.requesters.lock().unwrap_or_else(|e| e.into_inner());
            if requesters.len() >= 10_000 {
                // Forget whoever is back to a full bucket: they would start from one anyway.
                requesters.retain(|_, bucket| !bucket.is_full(now_millis, RATE, BURST));
            }
            if !requesters.entry(key).or_insert(Bucket(BURST, now_millis)).take(now_millis, RATE, BURST) {
                return false;
            }
        }
        self.relay.lock().unwrap_or_else(|e| e.into_inner()).take(now_millis, RELAY_RATE, RELAY_BURST)
    }
}

#[derive(Deserialize)]
pub struct Params {
    /// An invite token, for policies that hand out accounts only with one.
    #[serde(default)]
    invite: Option<String>,
}

/// A browser that opened an invite link is sent to the app, with the invite token kept.
pub async fn get(State(relay): State<Arc<Relay>>, Query(params): Query<Params>) -> Response {
    let mut target = format!("dcaccount:https://{}/new", super::pages::url_host(&relay.config.mail_domain));
    if let Some(invite) = params.invite.filter(|t| !t.is_empty()) {
        target.push_str(&format!("?invite={}", percent_encode(&invite)));
    }
    (StatusCode::MOVED_PERMANENTLY, [(LOCATION, target)]).into_response()
}

pub async fn post(
    State(relay): State<Arc<Relay>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<Params>,
) -> Response {
    if !relay.new_accounts_rate.allow(peer.ip(), relay.clock.now_millis()) {
        return refuse(&relay, StatusCode::TOO_MANY_REQUESTS, "Too many requests for new accounts, try again in a moment");
    }
    for _ in 0..ATTEMPTS {
        let resources = crate::resources::current(&relay.config.data_dir);
        let request = NewAccountRequest {
            domain: relay.config.mail_domain.clone(),
            invite: params.invite.clone().filter(|t| !t.is_empty()),
            resources: resources.clone(),
        };
        let credentials = match relay.policies.new_account(request).await {
            NewAccountVerdict::Credentials(credentials) => credentials,
            NewAccountVerdict::Refuse(reply) => {
                relay.auth.report_new_refusal(&resources, &reply);
                // 4xx from a policy means "later", 5xx "no": as HTTP, 503 and 403.
                let status = if reply.code < 500 { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::FORBIDDEN };
                return refuse(&relay, status, &reply.text);
            }
            NewAccountVerdict::Accept => {
                return refuse(&relay, StatusCode::FORBIDDEN, "This relay does not hand out accounts");
            }
        };
        match relay.auth.register(&credentials.address, &credentials.password).await {
            Ok(true) => {
                relay.metrics.inc("ferrymail_accounts_created_total", &[("via", "new")]);
                return created(&relay, &credentials.address, &credentials.password);
            }
            // Taken: never handed out again. Ask for other credentials.
            Ok(false) => continue,
            Err(e) => {
                tracing::error!("cannot create an account for /new: {e}");
                return refuse(&relay, StatusCode::SERVICE_UNAVAILABLE, "Temporary failure, try again later");
            }
        }
    }
    refuse(&relay, StatusCode::SERVICE_UNAVAILABLE, "No free address found, try again")
}

fn created(relay: &Relay, address: &str, password: &str) -> Response {
    let mut body = json!({ "email": address, "password": password });
    if relay.config.is_self_signed() {
        // The app accepts the self-signed certificate only when told so (ic=3).
        let url = format!("dclogin:{address}?p={}&v=1&ic=3", percent_encode(password));
        body["dclogin_url"] = url.into();
    }
    ([(CACHE_CONTROL, "no-store")], Json(body)).into_response()
}

fn refuse(relay: &Relay, status: StatusCode, reason: &str) -> Response {
    relay.metrics.inc("ferrymail_registrations_refused_total", &[]);
    (status, [(CACHE_CONTROL, "no-store")], Json(json!({ "reason": reason }))).into_response()
}

/// Percent-encoding for a URL query value: everything but unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_bursts_then_two_per_second_per_requester() {
        let limit = RateLimit::default();
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap());
        let t = 1_000_000;
        assert!((0..5).all(|_| limit.allow(a, t)));
        assert!(!limit.allow(a, t));
        assert!(limit.allow(b, t), "another requester has its own bucket");
        assert!(limit.allow(a, t + 500));
        assert!(!limit.allow(a, t + 600));
        assert!(limit.allow(a, t + 1_100));
        // The whole relay: 50 at once, then 20 per second.
        let many = (0..200u32).filter(|i| limit.allow(IpAddr::from(i.to_be_bytes()), t + 2_000)).count();
        assert_eq!(many, 50);
        assert!(limit.requesters.lock().unwrap().keys().all(|k| k.len() == 16), "hashes, not addresses");
    }

    #[test]
    fn passwords_are_percent_encoded() {
        assert_eq!(percent_encode("aZ9-._~ &?=%"), "aZ9-._~%20%26%3F%3D%25");
    }
}
