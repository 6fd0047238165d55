//! HTTPS: one listener, TLS with the relay's certificate, HTTP/1.1 and HTTP/2. For now it
//! serves relay-to-relay delivery (`POST /mxdeliv`) and the MTA-STS policy.

mod mxdeliv;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

use crate::serve::Relay;
use crate::tls::Port;

/// The routes, with the relay as their state.
pub fn router(relay: Arc<Relay>) -> Router {
    // The policy that `ferrymail dns` tells operators to announce (`_mta-sts` TXT).
    let mta_sts = crate::records::mta_sts_policy(&relay.config.mail_domain);
    let mut router = Router::new().route("/.well-known/mta-sts.txt", get(move || async move { mta_sts }));
    if relay.config.accept_mxdeliv {
        // A little room above the largest message for the request's own overhead.
        let limit = relay.config.max_message_size.0 as usize + 64 * 1024;
        router = router.route(crate::smtp::mxdeliv::PATH, post(mxdeliv::handle).layer(DefaultBodyLimit::max(limit)));
    }
    router.with_state(relay)
}

/// Serve HTTPS on `listener` for as long as it lives, at most `max_https_connections` at once.
pub async fn serve(relay: Arc<Relay>, listener: TcpListener) {
    let app = router(relay.clone());
    let limit = relay.config.max_https_connections as usize;
    let busy = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    crate::net::serve(listener, limit, busy, move |tcp| {
        let (relay, app) = (relay.clone(), app.clone());
        async move { connection(&relay, app, tcp).await }
    })
    .await
}

async fn connection(relay: &Relay, app: Router, tcp: TcpStream) {
    let Ok(peer) = tcp.peer_addr() else { return };
    let handshake = relay.tls.acceptor(Port::Https).accept(tcp);
    let Ok(Ok(tls)) = tokio::time::timeout(crate::net::HANDSHAKE_TIMEOUT, handshake).await else { return };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        // The peer address is used for IP-literal senders only: never logged or stored.
        request.extensions_mut().insert(ConnectInfo(peer));
        app.clone().call(request)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(64);
    let _ = builder.serve_connection(TokioIo::new(tls), service).await;
}
