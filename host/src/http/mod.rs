//! HTTPS: one listener, TLS with the relay's certificate. The client's ALPN choice decides
//! what a connection is: `imap` an IMAP session, `smtp` a submission session (for networks
//! that let only 443 through), anything else HTTP/1.1 or HTTP/2 — the web pages, `/new`,
//! autoconfig, MTA-STS and relay-to-relay delivery (`POST /mxdeliv`).
//!
//! Metrics are served apart, in plain HTTP on their own (loopback) address.

mod mxdeliv;
mod new;
mod pages;

pub use new::RateLimit;
pub use pages::invite_link;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

use crate::net::Stream;
use crate::serve::Relay;
use crate::tls::Port;

/// The routes, with the relay as their state.
pub fn router(relay: Arc<Relay>) -> Router {
    // The policy that `ferrymail dns` tells operators to announce (`_mta-sts` TXT).
    let mta_sts = crate::records::mta_sts_policy(&relay.config.mail_domain);
    let mut router = pages::routes(&relay.config)
        .route("/.well-known/mta-sts.txt", get(move || async move { mta_sts }))
        .route("/new", get(new::get).post(new::post));
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

async fn connection(relay: &Arc<Relay>, app: Router, tcp: TcpStream) {
    let Ok(peer) = tcp.peer_addr() else { return };
    let handshake = relay.tls.acceptor(Port::Https).accept(tcp);
    let Ok(Ok(tls)) = tokio::time::timeout(crate::net::HANDSHAKE_TIMEOUT, handshake).await else { return };
    match tls.get_ref().1.alpn_protocol() {
        Some(b"imap") => {
            let stream = Stream::Tls(Box::new(tls));
            return crate::imap::Session::new(relay.clone(), crate::imap::Kind::Imaps, stream).run().await;
        }
        Some(b"smtp") => {
            let stream = Stream::Tls(Box::new(tls));
            return crate::smtp::Session::new(relay.clone(), crate::smtp::Kind::Submissions, stream).run().await;
        }
        _ => {}
    }
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

/// Serve `GET /metrics` (Prometheus text: the counters and the storage report) in plain HTTP.
pub async fn serve_metrics(relay: Arc<Relay>, listener: TcpListener) {
    let app = Router::new().route("/metrics", get(metrics)).with_state(relay);
    crate::net::serve(listener, 16, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", move |tcp| {
        let app = app.clone();
        async move {
            let service = hyper::service::service_fn(move |request| app.clone().call(request));
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        }
    })
    .await
}

async fn metrics(axum::extract::State(relay): axum::extract::State<Arc<Relay>>) -> impl axum::response::IntoResponse {
    let mut text = relay.metrics.render();
    match relay.storage_report().await {
        Ok(report) => text.push_str(&report.prometheus()),
        Err(e) => tracing::error!("storage report: {e}"),
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}
