//! Relay-to-relay delivery over HTTPS: `POST https://<mx>/mxdeliv` with the envelope in
//! headers (`X-Mail-From`, one `X-Mail-To` per recipient) and the message as the body. Other
//! chatmail relays answer 2xx when the message is theirs; anything that is not such a relay
//! sends us back to SMTP.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;

pub const PATH: &str = "/mxdeliv";
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The host has no /mxdeliv (not a relay of this kind, or it is switched off): use SMTP.
    #[error("no /mxdeliv: {0}")]
    Unsupported(String),
    /// The relay refused the message for good (400, 413): bounce.
    #[error("{0}")]
    Refused(String),
    /// Anything else: use SMTP now, or try again later.
    #[error("{0}")]
    Failed(String),
}

pub async fn post(
    host: &str,
    ip: IpAddr,
    port: u16,
    source: Option<IpAddr>,
    verify_certificate: bool,
    mail_from: &str,
    recipients: &[String],
    message: &[u8],
) -> Result<(), Failure> {
    let tcp = tokio::time::timeout(TIMEOUT, crate::net::connect(SocketAddr::new(ip, port), source))
        .await
        .map_err(|_| Failure::Unsupported("connect timed out".into()))?
        .map_err(|e| Failure::Unsupported(format!("connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let name = crate::tls::server_name(host).map_err(Failure::Unsupported)?;
    let handshake = crate::tls::client(verify_certificate, &[b"http/1.1"]).connect(name, tcp);
    let tls = tokio::time::timeout(TIMEOUT, handshake)
        .await
        .map_err(|_| Failure::Unsupported("TLS handshake timed out".into()))?
        .map_err(|e| Failure::Unsupported(format!("TLS: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| Failure::Unsupported(format!("HTTP: {e}")))?;
    tokio::spawn(connection);

    let authority = match crate::dns::ip_literal(host) {
        Some(IpAddr::V6(ip)) => format!("[{ip}]"),
        Some(ip) => ip.to_string(),
        None => host.to_string(),
    };
    let mut request = Request::post(PATH).header(hyper::header::HOST, authority).header("X-Mail-From", mail_from);
    for recipient in recipients {
        request = request.header("X-Mail-To", recipient.as_str());
    }
    let request = request
        .body(Full::new(Bytes::copy_from_slice(message)))
        .map_err(|e| Failure::Failed(format!("request: {e}")))?;
    let response = tokio::time::timeout(TIMEOUT, sender.send_request(request))
        .await
        .map_err(|_| Failure::Failed("no answer".into()))?
        .map_err(|e| Failure::Failed(format!("HTTP: {e}")))?;
    let status = response.status();
    let body = tokio::time::timeout(TIMEOUT, Limited::new(response.into_body(), 4096).collect())
        .await
        .ok()
        .and_then(|collected| collected.ok())
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    match status {
        s if s.is_success() => Ok(()),
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => Err(Failure::Refused(text)),
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::MISDIRECTED_REQUEST => {
            Err(Failure::Unsupported(format!("{status}")))
        }
        _ => Err(Failure::Failed(format!("{status} {text}"))),
    }
}
