//! IMAP: 993 (implicit TLS) and 143 (STARTTLS), everything the Delta Chat app sends (SPEC §5)
//! and what standard IMAP tools need to read and delete their mail.

pub(crate) mod address;
mod cmd;
pub(crate) mod io;
mod lenient;
mod respond;
pub(crate) mod section;
mod selected;
mod session;
pub(crate) mod structure;

use std::sync::Arc;

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

/// Serve IMAP on `listener`: at most `max_connections` sessions at once.
pub async fn serve(relay: Arc<Relay>, listener: TcpListener, kind: Kind, max_connections: usize) {
    let busy = if kind == Kind::Imaps { "" } else { "* BYE Too many connections, try again later\r\n" };
    crate::net::serve(listener, max_connections, relay.config.timeouts.write(), busy, |tcp| Session::new(relay.clone(), kind, Stream::Plain(tcp)).run()).await
}
