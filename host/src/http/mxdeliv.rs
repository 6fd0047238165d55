//! `POST /mxdeliv`: another relay delivers a message to local recipients over HTTPS. The same
//! checks as SMTP on port 25 (recipients, DKIM, the policy bundle), with the answer as an HTTP
//! status: 200 accepted, 400 refused for good (the SMTP reply is the body), 413 too large,
//! 503 try again later. Only POST is routed: other methods get 405.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};

use crate::accept::{self, Refused, Submission};
use crate::inflight::Held;
use crate::policy::{Direction, Envelope, Reply, Verdict};
use crate::serve::Relay;

type Answer = (StatusCode, String);

fn refused(reply: &Reply) -> Answer {
    let status = if reply.code >= 500 { StatusCode::BAD_REQUEST } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, reply.to_string())
}

pub async fn handle(State(relay): State<Arc<Relay>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, body: Body) -> Answer {
    let header_values = |name: &str| -> Result<Vec<String>, Answer> {
        headers
            .get_all(name)
            .iter()
            .map(|v| std::str::from_utf8(v.as_bytes()).map(|s| s.trim().to_string()))
            .collect::<Result<_, _>>()
            .map_err(|_| (StatusCode::BAD_REQUEST, format!("{name} is not UTF-8")))
    };
    let senders = match header_values("X-Mail-From") {
        Ok(senders) => senders,
        Err(answer) => return answer,
    };
    let [mail_from] = senders.as_slice() else {
        return (StatusCode::BAD_REQUEST, "exactly one X-Mail-From header is needed".into());
    };
    let mail_from = mail_from.trim_start_matches('<').trim_end_matches('>').to_string();
    let recipients: Vec<String> = match header_values("X-Mail-To") {
        Ok(values) => values.iter().flat_map(|v| v.split(',')).map(|r| r.trim().to_ascii_lowercase()).filter(|r| !r.is_empty()).collect(),
        Err(answer) => return answer,
    };
    if recipients.is_empty() || recipients.len() > 1000 {
        return (StatusCode::BAD_REQUEST, "1 to 1000 X-Mail-To headers are needed".into());
    }

    let announced = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if !relay.disk.has_room(announced.unwrap_or(0)) {
        return (StatusCode::SERVICE_UNAVAILABLE, "452 4.3.1 Insufficient system storage".into());
    }
    let mut envelope = Envelope { direction: Direction::Incoming, mail_from: mail_from.clone(), rcpt_to: Vec::new(), authenticated_as: None };
    if let Verdict::Reject(reply) | Verdict::Defer(reply) = relay.policies.mail_from(envelope.clone()).await {
        return refused(&reply);
    }
    for recipient in &recipients {
        if envelope.rcpt_to.contains(recipient) {
            continue;
        }
        if let Err(Refused(reply)) = accept::recipient(&relay, &envelope, recipient).await {
            return refused(&reply);
        }
        envelope.rcpt_to.push(recipient.clone());
    }
    // Held until the message is stored (or refused).
    let (raw, mut held) = match read_body(&relay, &headers, body).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    // The same line ends as a message over SMTP: before DKIM, the policies or anything else.
    // Normalising copies; the copy is held too, and must stay within the size limit.
    let normalized = raw.len() + crate::smtp::data::bare_line_ends(&raw);
    if normalized != raw.len() {
        if normalized as u64 > relay.config.max_message_size.0 {
            return (StatusCode::PAYLOAD_TOO_LARGE, crate::check::too_large_reply().to_string());
        }
        if !held.try_grow(&relay.in_flight, (raw.len() + normalized) as u64) {
            relay.metrics.inc("ferrymail_in_flight_refused_total", &[("via", "mxdeliv")]);
            return (StatusCode::SERVICE_UNAVAILABLE, crate::smtp::BUSY.to_string());
        }
    }
    let raw = crate::smtp::data::normalize_line_ends(raw);
    let (raw, dkim) = crate::smtp::incoming_authentication(&relay, raw, Some(peer.ip())).await;
    let submission = Submission {
        direction: Direction::Incoming,
        mail_from,
        local: envelope.rcpt_to,
        remote: Vec::new(),
        authenticated_as: None,
        dkim,
        raw,
    };
    match accept::accept(&relay, submission).await {
        Ok(()) => {
            relay.metrics.inc("ferrymail_mxdeliv_received_total", &[]);
            (StatusCode::OK, "OK".into())
        }
        Err(Refused(reply)) if reply.code == 552 && reply.enhanced == "5.3.4" => (StatusCode::PAYLOAD_TOO_LARGE, reply.to_string()),
        Err(Refused(reply)) => refused(&reply),
    }
}

/// The message: at most `max_message_size` bytes (413 beyond), each part of it arriving
/// within the idle timeout and the whole within the SMTP one (a body that stalls or trickles
/// gets 408 and the connection ends), held from the budget for messages in memory (503 when
/// it is spent) as it arrives, in a buffer that grows by exact steps.
async fn read_body(relay: &Relay, headers: &HeaderMap, body: Body) -> Result<(Vec<u8>, Held), Answer> {
    use http_body_util::BodyExt;
    let limit = relay.config.max_message_size.0 as usize;
    let too_large = || (StatusCode::PAYLOAD_TOO_LARGE, crate::check::too_large_reply().to_string());
    let announced = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let (idle, total) = (relay.config.timeouts.https_idle(), relay.config.timeouts.smtp());
    let deadline = tokio::time::Instant::now() + total;
    let timed_out = || (StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time".to_string());
    let busy = || {
        relay.metrics.inc("ferrymail_in_flight_refused_total", &[("via", "mxdeliv")]);
        (StatusCode::SERVICE_UNAVAILABLE, crate::smtp::BUSY.to_string())
    };
    // The announced length must fit now; it is held as it arrives.
    let Some(mut held) = relay.in_flight.try_start(announced.unwrap_or(64 * 1024) as u64) else { return Err(busy()) };
    let mut body = body;
    let mut raw = Vec::with_capacity(held.bytes() as usize);
    loop {
        let wait = idle.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let frame = match tokio::time::timeout(wait, body.frame()).await {
            Err(_) => return Err(timed_out()),
            Ok(None) => return Ok((raw, held)),
            Ok(Some(Err(_))) => return Err((StatusCode::BAD_REQUEST, "the request body broke off".to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if raw.len() + data.len() > limit {
                return Err(too_large());
            }
            if raw.capacity() - raw.len() < data.len() {
                // Exact steps, held first: a quarter at a time, never beyond the announced length.
                let needed = raw.len() + data.len();
                let step = needed.max(raw.len() + raw.len() / 4).max(crate::inflight::FIRST_STEP as usize);
                let wanted = step.min(announced.unwrap_or(limit).max(needed)).min(limit);
                if !held.try_grow(&relay.in_flight, wanted as u64) {
                    return Err(busy());
                }
                raw.reserve_exact(wanted - raw.len());
            }
            raw.extend_from_slice(&data);
        }
    }
}
