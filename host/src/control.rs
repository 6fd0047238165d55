//! The control socket: how `ferrymail policy reload`, `account`, `queue`, `expire`, `report`
//! and `status` reach a running relay. A Unix socket in `data_dir`, readable by the relay's own
//! user only; one line in, the answer out. The first line of an answer is `ok` or `error <reason>`.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use std::sync::Arc;

use crate::policy::PolicySummary;
use crate::serve::Relay;

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Bind the control socket. A socket left by a relay that died is replaced; one that answers
/// means another relay serves this data_dir, which is refused.
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another ferrymail is running on this data_dir ({} answers)", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Answer control requests until the listener is dropped.
pub async fn serve(listener: UnixListener, relay: Arc<Relay>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let relay = relay.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &relay).await {
                tracing::debug!("control connection: {e}");
            }
        });
    }
}

async fn answer(stream: UnixStream, relay: &Arc<Relay>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(1024)).read_line(&mut line).await?;
    let policies = &relay.policies;
    let reply = match line.trim() {
        "reload" => match policies.reload().await {
            Ok(summary) => format!("ok\ngeneration {}\n{}", policies.generation(), render_policies(&summary)),
            Err(e) => format!("error {e}\n"),
        },
        "policies" => format!("ok\ngeneration {}\n{}", policies.generation(), render_policies(&policies.summary())),
        "metrics" => format!("ok\n{}", policies.services().metrics.render()),
        "status" => match crate::operator::execute(relay, "status").await {
            Ok(text) => {
                format!("ok\nrunning since {}\n{text}realtime relay: {} clients\n", relay.started_at(), relay.realtime.connected())
            }
            Err(e) => format!("error {}\n", e.replace('\n', " ")),
        },
        other => match crate::operator::execute(relay, other).await {
            Ok(text) => format!("ok\n{text}"),
            Err(e) => format!("error {}\n", e.replace('\n', " ")),
        },
    };
    write.write_all(reply.as_bytes()).await?;
    write.shutdown().await
}

#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// No relay runs on this data_dir (or its socket cannot be reached).
    #[error("cannot reach a running ferrymail at {path}: {reason}")]
    NotRunning { path: String, reason: String },
    /// The relay answered with an error.
    #[error("{0}")]
    Failed(String),
}

/// Send one request to the relay serving `data_dir`; the answer without its status line.
pub async fn request(data_dir: &Path, command: &str) -> Result<String, RequestError> {
    let path = socket_path(data_dir);
    let mut stream = UnixStream::connect(&path).await.map_err(|e| match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            RequestError::NotRunning { path: path.display().to_string(), reason: e.to_string() }
        }
        // E.g. permission denied: a relay may well run, as another user.
        _ => RequestError::Failed(format!("cannot reach the relay at {}: {e}", path.display())),
    })?;
    let failed = |e: io::Error| RequestError::Failed(e.to_string());
    stream.write_all(format!("{command}\n").as_bytes()).await.map_err(failed)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.map_err(failed)?;
    match answer.split_once('\n') {
        Some(("ok", rest)) => Ok(rest.to_string()),
        Some((status, _)) => Err(RequestError::Failed(status.strip_prefix("error ").unwrap_or(status).to_string())),
        None => Err(RequestError::Failed(format!("unexpected answer {answer:?}"))),
    }
}

/// One line per policy, in chain order.
pub fn render_policies(policies: &[PolicySummary]) -> String {
    let mut out = String::new();
    for (i, p) in policies.iter().enumerate() {
        let hooks: Vec<&str> = p.hooks.iter().map(|h| h.wit_name()).collect();
        let fail_mode = format!("{:?}", p.fail_mode).to_lowercase();
        out.push_str(&format!(
            "{}. {}  {}  hooks: {}  fail_mode: {}  sha256: {}\n",
            i + 1,
            p.name,
            p.origin,
            if hooks.is_empty() { "-".to_string() } else { hooks.join(",") },
            fail_mode,
            &p.sha256[..12.min(p.sha256.len())],
        ));
    }
    out
}
