//! Sending one message to another server over SMTP: EHLO, STARTTLS (required: nothing leaves
//! in cleartext), MAIL, one RCPT per recipient, DATA. Each recipient gets its own outcome.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Where to send, and how.
pub struct Destination<'a> {
    pub host: &'a str,
    pub ip: IpAddr,
    pub port: u16,
    /// Check the server's certificate (not for `_` domains and IP literals).
    pub verify_certificate: bool,
    /// Our name in EHLO.
    pub helo: &'a str,
    /// The address to connect from (an IP-literal relay's own).
    pub source: Option<IpAddr>,
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// The server refused for good (5xx): bounce.
    Permanent(String),
    /// Try again later (4xx, or the connection broke after the recipient was accepted).
    Temporary(String),
}

/// The server could not be used at all (connect, TLS, greeting): try the next one.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

const STEP_TIMEOUT: Duration = Duration::from_secs(120);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Deliver `message` from `mail_from` to `recipients`, one outcome per recipient.
pub async fn send(to: &Destination<'_>, mail_from: &str, recipients: &[String], message: &[u8]) -> Result<Vec<Outcome>, Unreachable> {
    let unreachable = |what: &str, e: &dyn std::fmt::Display| Unreachable(format!("{} {what}: {e}", to.host));
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, crate::net::connect(SocketAddr::new(to.ip, to.port), to.source))
        .await
        .map_err(|e| unreachable("connect", &e))?
        .map_err(|e| unreachable("connect", &e))?;
    let _ = tcp.set_nodelay(true);
    let mut plain = BufReader::new(crate::net::Conn::new(tcp, STEP_TIMEOUT));
    let (code, text) = reply(&mut plain).await.map_err(|e| unreachable("greeting", &e))?;
    if code != 220 {
        return Err(unreachable("greeting", &text));
    }
    let (code, capabilities) = command(&mut plain, &format!("EHLO {}", to.helo)).await.map_err(|e| unreachable("EHLO", &e))?;
    if code != 250 || !has_capability(&capabilities, "STARTTLS") {
        return Err(unreachable("STARTTLS", &"not offered; mail is only sent over TLS"));
    }
    let (code, text) = command(&mut plain, "STARTTLS").await.map_err(|e| unreachable("STARTTLS", &e))?;
    if code != 220 {
        return Err(unreachable("STARTTLS", &text));
    }
    let name = crate::tls::server_name(to.host).map_err(|e| unreachable("name", &e))?;
    let handshake = crate::tls::client(to.verify_certificate, &[]).connect(name, plain.into_inner());
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, handshake)
        .await
        .map_err(|e| unreachable("TLS", &e))?
        .map_err(|e| unreachable("TLS", &e))?;
    let mut session = BufReader::new(tls);
    let (code, capabilities) = command(&mut session, &format!("EHLO {}", to.helo)).await.map_err(|e| unreachable("EHLO", &e))?;
    if code != 250 {
        return Err(unreachable("EHLO", &capabilities));
    }
    Ok(transaction(&mut session, &capabilities, mail_from, recipients, message).await)
}

/// MAIL, RCPT..., DATA over an established session.
async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    session: &mut BufReader<S>,
    capabilities: &str,
    mail_from: &str,
    recipients: &[String],
    message: &[u8],
) -> Vec<Outcome> {
    let all = |outcome: Outcome| vec![outcome; recipients.len()];
    let broken = |e: std::io::Error| Outcome::Temporary(format!("connection lost: {e}"));
    let mut mail = format!("MAIL FROM:<{mail_from}>");
    if has_capability(capabilities, "SIZE") {
        mail.push_str(&format!(" SIZE={}", message.len()));
    }
    if has_capability(capabilities, "8BITMIME") {
        mail.push_str(" BODY=8BITMIME");
    }
    match command(session, &mail).await {
        Ok((250, _)) => {}
        Ok((code, text)) => return all(refusal(code, text)),
        Err(e) => return all(broken(e)),
    }
    let mut outcomes = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        outcomes.push(match command(session, &format!("RCPT TO:<{recipient}>")).await {
            Ok((250 | 251, _)) => None,
            Ok((code, text)) => Some(refusal(code, text)),
            Err(e) => return all(broken(e)),
        });
    }
    if outcomes.iter().all(Option::is_some) {
        let _ = command(session, "QUIT").await;
        return outcomes.into_iter().flatten().collect();
    }
    let data_reply = match command(session, "DATA").await {
        Ok((354, _)) => send_data(session, message).await,
        Ok((code, text)) => Ok((code, text)),
        Err(e) => Err(e),
    };
    let accepted = match data_reply {
        Ok((250, _)) => Outcome::Delivered,
        Ok((code, text)) => refusal(code, text),
        Err(e) => broken(e),
    };
    let _ = command(session, "QUIT").await;
    outcomes.into_iter().map(|o| o.unwrap_or_else(|| accepted.clone())).collect()
}

fn refusal(code: u16, text: String) -> Outcome {
    let line = format!("{code} {text}");
    if code >= 500 { Outcome::Permanent(line) } else { Outcome::Temporary(line) }
}

fn has_capability(ehlo: &str, name: &str) -> bool {
    ehlo.lines().any(|l| l.split_whitespace().next().is_some_and(|w| w.eq_ignore_ascii_case(name)))
}

/// The message, dot-stuffed with CRLF line ends only, and the final dot.
async fn send_data<S: AsyncRead + AsyncWrite + Unpin>(session: &mut BufReader<S>, message: &[u8]) -> std::io::Result<(u16, String)> {
    let wire = super::data::dot_stuffed(message);
    session.get_mut().write_all(&wire).await?;
    session.get_mut().flush().await?;
    reply(session).await
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(session: &mut BufReader<S>, line: &str) -> std::io::Result<(u16, String)> {
    session.get_mut().write_all(format!("{line}\r\n").as_bytes()).await?;
    session.get_mut().flush().await?;
    reply(session).await
}

/// One reply: its code and its text (the lines of a multi-line reply joined by newlines).
async fn reply<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<(u16, String)> {
    let mut text = Vec::new();
    loop {
        let mut line = String::new();
        // A reply line is short: never buffer more than this of one.
        let mut bounded = (&mut *reader).take(4097);
        let n = tokio::time::timeout(STEP_TIMEOUT, bounded.read_line(&mut line))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no reply"))??;
        if n == 0 || line.len() > 4096 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        let line = line.trim_end();
        let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an SMTP reply: {line:?}"))
        })?;
        text.push(line.get(4..).unwrap_or("").to_string());
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, text.join("\n")));
        }
    }
}
