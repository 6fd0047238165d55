//! `POST /mxdeliv`: another relay delivers a message to local recipients over HTTPS. The same
//! checks as SMTP on port 25 (recipients, DKIM, the policy bundle), with the answer as an HTTP
//! status: 200 accepted, 400 refused for good (the SMTP reply is the body), 413 too large,
//! 503 try again later. Only POST is routed: other methods get 405.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};

use crate::accept::{self, Refused, Submission};
use crate::policy::{Direction, Envelope, Reply, Verdict};
use crate::serve::Relay;

type Answer = (StatusCode, String);

fn refused(reply: &Reply) -> Answer {
    let status = if reply.code >= 500 { StatusCode::BAD_REQUEST } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, reply.to_string())
}

pub async fn handle(State(relay): State<Arc<Relay>>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap, body: Bytes) -> Answer {
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
    let raw = body.to_vec();
    let dkim = crate::smtp::incoming_authentication(&relay, &raw, Some(peer.ip())).await;
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
