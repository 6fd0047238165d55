//! IMAP: 993 (implicit TLS) and 143 (STARTTLS), everything the Delta Chat app sends (SPEC §5)
//! and what standard IMAP tools need to read and delete their mail.

mod cmd;
mod io;
mod respond;
mod selected;
mod session;
mod structure;

use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use crate::net::Stream;
use crate::serve::Relay;

pub use session::Session;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Port 143: STARTTLS before login.
    Imap,
    /// Port 993: implicit TLS.
    Imaps,
}

/// Accept connections for as long as the listener lives, at most `max_connections` at once.
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
                    let _ = tcp.write_all(b"* BYE Too many connections, try again later\r\n").await;
                });
            }
        }
    }
}
