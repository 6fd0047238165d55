//! `/new`: credentials for a new account, asked for by the app after scanning the invite QR code
//! (SPEC §1). `POST` answers `{"email", "password"}` (plus `dclogin_url` for self-signed relays);
//! `GET` sends a browser on to the app. The bundle's `new-account` hook makes the credentials
//! (or refuses); the host only creates the account, never over an existing one.
//!
//! Requests are rate-limited for the whole relay (2 per second, bursts of 5): nothing about the
//! requester is looked at or kept.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::{CACHE_CONTROL, LOCATION};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::policy::{NewAccountRequest, NewAccountVerdict};
use crate::serve::Relay;

/// Requests per second, and the burst allowed.
const RATE: f64 = 2.0;
const BURST: f64 = 5.0;
/// Fresh credentials that collide with an existing account are asked for again, this often.
const ATTEMPTS: usize = 5;

/// A token bucket shared by every requester.
pub struct RateLimit {
    state: Mutex<(f64, u64)>,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { state: Mutex::new((BURST, 0)) }
    }
}

impl RateLimit {
    fn allow(&self, now_millis: u64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, last) = *state;
        let refilled = (tokens + now_millis.saturating_sub(last) as f64 / 1000.0 * RATE).min(BURST);
        let allowed = refilled >= 1.0;
        *state = (if allowed { refilled - 1.0 } else { refilled }, now_millis);
        allowed
    }
}

#[derive(Deserialize)]
pub struct Params {
    /// An invite token, for policies that hand out accounts only with one.
    #[serde(default)]
    invite: Option<String>,
}

pub async fn get(State(relay): State<Arc<Relay>>) -> Response {
    let target = format!("dcaccount:https://{}/new", super::pages::url_host(&relay.config.mail_domain));
    (StatusCode::MOVED_PERMANENTLY, [(LOCATION, target)]).into_response()
}

pub async fn post(State(relay): State<Arc<Relay>>, Query(params): Query<Params>) -> Response {
    if !relay.new_accounts_rate.allow(relay.clock.now_millis()) {
        return refuse(&relay, StatusCode::TOO_MANY_REQUESTS, "Too many requests for new accounts, try again in a moment");
    }
    for _ in 0..ATTEMPTS {
        let request = NewAccountRequest {
            domain: relay.config.mail_domain.clone(),
            invite: params.invite.clone().filter(|t| !t.is_empty()),
            resources: crate::resources::current(&relay.config.data_dir),
        };
        let credentials = match relay.policies.new_account(request).await {
            NewAccountVerdict::Credentials(credentials) => credentials,
            NewAccountVerdict::Refuse(reply) => {
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
    fn rate_limit_allows_bursts_then_two_per_second() {
        let limit = RateLimit::default();
        let t = 1_000_000;
        assert!((0..5).all(|_| limit.allow(t)));
        assert!(!limit.allow(t));
        assert!(limit.allow(t + 500));
        assert!(!limit.allow(t + 600));
        assert!(limit.allow(t + 1_100));
    }

    #[test]
    fn passwords_are_percent_encoded() {
        assert_eq!(percent_encode("aZ9-._~ &?=%"), "aZ9-._~%20%26%3F%3D%25");
    }
}
