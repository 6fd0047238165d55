//! SMTP: the MX port (25, mail from other servers for local recipients, STARTTLS mandatory),
//! submission with STARTTLS (587) and with implicit TLS (465).

pub mod bounce;
pub mod client;
pub mod data;
mod literal;
pub mod mxdeliv;
pub mod outbound;
mod reply;

pub use reply::BUSY;
mod session;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::net::Stream;
use crate::serve::Relay;

pub use session::{Session, incoming_authentication};

/// Recipients per message (also announced to the app in IMAP METADATA).
pub const MAX_RECIPIENTS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Port 25: other servers deliver to local recipients.
    Mx,
    /// Port 587: users submit, after STARTTLS and AUTH.
    Submission,
    /// Port 465: users submit over implicit TLS.
    Submissions,
}

/// Serve SMTP on `listener`: at most `max_connections` sessions at once.
pub async fn serve(relay: Arc<Relay>, listener: TcpListener, kind: Kind, max_connections: usize) {
    let busy = if kind == Kind::Submissions { "" } else { "421 4.7.0 Too many connections, try again later\r\n" };
    crate::net::serve(listener, max_connections, relay.config.timeouts.write(), busy, |tcp| Session::new(relay.clone(), kind, Stream::Plain(tcp)).run()).await
}
