//! Figure (b): memory per idle IMAP session. Sessions as the app leaves them for hours —
//! TLS, logged in, INBOX selected, IDLE — are opened and left alone long enough for the
//! reference's Dovecot to hibernate them (chatmail's 30 s); then the whole system's
//! proportional set size, less what it was before, is divided by the number of sessions.
//!
//! The sessions come from many loopback source addresses: one address pair has only ~28 000
//! ephemeral ports.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio_rustls::client::TlsStream;

use crate::system::{PASSWORD, Ports, account_address};

pub type Session = TlsStream<tokio::net::TcpStream>;

pub struct Opened {
    pub sessions: Vec<Session>,
    /// Why opening stopped short of the count, if it did.
    pub stopped: Option<String>,
}

/// Open up to `count` idle sessions for accounts `accounts` (round robin), 200 at a time.
/// Stops early at the first failure or when the machine runs low on memory.
pub async fn open(ports: Ports, domain: &str, sources: &[Ipv4Addr], accounts: std::ops::Range<usize>, count: usize) -> Opened {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Result<Session, String>>();
    let (mut launched, mut in_flight) = (0, 0);
    let mut sessions = Vec::with_capacity(count);
    let mut stopped = None;
    loop {
        while launched < count && stopped.is_none() && in_flight < 200 {
            let source = sources[launched % sources.len()];
            let address = account_address(accounts.start + launched % accounts.len(), domain);
            let done = done_tx.clone();
            tokio::spawn(async move {
                let _ = done.send(idle_session(ports.imaps, source, &address).await);
            });
            launched += 1;
            in_flight += 1;
            if launched % 1000 == 0 && available_memory() < 3 << 30 {
                stopped = Some(format!("the machine had less than 3 GiB of memory available at {launched} sessions"));
            }
        }
        if in_flight == 0 {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(90), done_rx.recv()).await {
            Ok(Some(result)) => {
                in_flight -= 1;
                match result {
                    Ok(session) => sessions.push(session),
                    Err(e) => {
                        stopped.get_or_insert(format!("session {} failed: {e}", launched));
                    }
                }
            }
            Ok(None) | Err(_) => {
                stopped.get_or_insert("no session opened within 90 s".to_string());
                break;
            }
        }
    }
    Opened { sessions, stopped }
}

/// Log in, select INBOX, start IDLE; the TLS stream, left unread from then on.
async fn idle_session(server: SocketAddr, source: Ipv4Addr, address: &str) -> Result<Session, String> {
    let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.bind(SocketAddr::from((source, 0))).map_err(|e| format!("bind {source}: {e}"))?;
    let tcp = tokio::time::timeout(Duration::from_secs(30), socket.connect(server))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
    let config = crate::client::tls_config(&[&rustls::version::TLS13], &[]);
    let name = rustls::pki_types::ServerName::try_from("bench.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    let mut stream = BufReader::with_capacity(1024, tls);
    let mut line = String::new();
    let mut expect = async |stream: &mut BufReader<Session>, send: &str, wanted: &str| -> Result<(), String> {
        if !send.is_empty() {
            stream.get_mut().write_all(send.as_bytes()).await.map_err(|e| e.to_string())?;
            stream.get_mut().flush().await.map_err(|e| e.to_string())?;
        }
        loop {
            line.clear();
            let read = tokio::time::timeout(Duration::from_secs(60), stream.read_line(&mut line)).await;
            match read {
                Ok(Ok(n)) if n > 0 => {}
                Ok(Ok(_)) => return Err(format!("closed after {send:?}")),
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_) => return Err(format!("no answer to {send:?}")),
            }
            if line.starts_with(wanted) {
                return Ok(());
            }
            if !line.starts_with('*') {
                return Err(format!("{send:?} answered {line:?}"));
            }
        }
    };
    expect(&mut stream, "", "* OK").await?;
    expect(&mut stream, &format!("l LOGIN \"{address}\" \"{PASSWORD}\"\r\n"), "l OK").await?;
    expect(&mut stream, "s SELECT INBOX\r\n", "s OK").await?;
    expect(&mut stream, "i IDLE\r\n", "+").await?;
    Ok(stream.into_inner())
}

/// MemAvailable of the machine, in bytes.
fn available_memory() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let line = info.lines().find(|l| l.starts_with("MemAvailable:")).unwrap_or("MemAvailable: 0 kB");
    line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024
}
