//! SMTP: the MX port (25, mail from other servers for local recipients, STARTTLS mandatory),
//! submission with STARTTLS (587) and with implicit TLS (465).

mod reply;
mod session;

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::net::Stream;
use crate::serve::Relay;

pub use session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Port 25: other servers deliver to local recipients.
    Mx,
    /// Port 587: users submit, after STARTTLS and AUTH.
    Submission,
    /// Port 465: users submit over implicit TLS.
    Submissions,
}

/// Accept connections for as long as the listener lives. At most `max_connections` sessions
/// run at once; more are told to come back later.
pub async fn serve(relay: Arc<Relay>, listener: TcpListener, kind: Kind, max_connections: usize) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else { continue };
        let _ = tcp.set_nodelay(true);
        let relay = relay.clone();
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                tokio::spawn(async move {
                    Session::new(relay, kind, Stream::Plain(tcp)).run().await;
                    drop(slot);
                });
            }
            Err(_) => {
                tokio::spawn(async move {
                    let mut tcp = tcp;
                    let _ = tcp.write_all(format!("{}\r\n", reply::TOO_MANY_CONNECTIONS).as_bytes()).await;
                });
            }
        }
    }
}
