//! HTTPS: one listener, TLS with the relay's certificate. The client's ALPN choice decides
//! what a connection is: `imap` an IMAP session, `smtp` a submission session (for networks
//! that let only 443 through), anything else HTTP/1.1 or HTTP/2 — the web pages, `/new`,
//! autoconfig, MTA-STS and relay-to-relay delivery (`POST /mxdeliv`).
//!
//! Metrics are served apart, in plain HTTP on their own (loopback) address.

mod idle;
mod mxdeliv;
mod new;
mod pages;
mod relay;

pub use new::RateLimit;
pub use pages::{invite_link, url_host};
pub use relay::Realtime;

use std::sync::Arc;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_service::Service;

use crate::net::{Conn, Stream};
use crate::serve::Relay;
use crate::tls::Port;

/// The routes, with the relay as their state.
pub fn router(relay: Arc<Relay>) -> Router {
    // The policy that `ferrymail dns` tells operators to announce (`_mta-sts` TXT).
    let mta_sts = crate::records::mta_sts_policy(&relay.config.mail_domain);
    let mut router = pages::routes(&relay.config)
        .route("/.well-known/mta-sts.txt", get(move || async move { mta_sts }))
        .route("/new", get(new::get).post(new::post));
    if relay.config.serve_iroh_relay {
        router = relay::routes(router);
    }
    if relay.config.accept_mxdeliv {
        // The handler bounds the body itself, in size and in time.
        router = router.route(crate::smtp::mxdeliv::PATH, post(mxdeliv::handle));
    }
    router.with_state(relay)
}

/// Connections served at once on 443, per protocol: each keeps its own port's limit, so IMAP
/// sessions idling on 443 cannot crowd out other relays' deliveries and the web pages.
struct Slots {
    https: Semaphore,
    imap: Semaphore,
    smtp: Semaphore,
}

/// Serve HTTPS (and IMAP and submission by ALPN) on `listener` for as long as it lives.
pub async fn serve(relay: Arc<Relay>, listener: TcpListener) {
    let app = router(relay.clone());
    let config = &relay.config;
    let [https, imap, smtp] = [config.max_https_connections, config.max_imap_connections, config.max_smtp_connections]
        .map(|n| (n as usize).min(Semaphore::MAX_PERMITS / 4));
    let slots = Arc::new(Slots { https: Semaphore::new(https), imap: Semaphore::new(imap), smtp: Semaphore::new(smtp) });
    // Beyond every slot, connections are closed unanswered: this port speaks TLS first, and
    // a plaintext reply would only break the client's handshake.
    crate::net::serve(listener, https + imap + smtp, relay.config.timeouts.write(), "", move |tcp| {
        let (relay, app, slots) = (relay.clone(), app.clone(), slots.clone());
        async move { connection(&relay, app, &slots, tcp).await }
    })
    .await
}

const BUSY: &str = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

async fn connection(relay: &Arc<Relay>, app: Router, slots: &Slots, tcp: Conn) {
    let Ok(peer) = tcp.peer_addr() else { return };
    let handshake = relay.tls.acceptor(Port::Https).accept(tcp);
    let Ok(Ok(mut tls)) = tokio::time::timeout(crate::net::HANDSHAKE_TIMEOUT, handshake).await else { return };
    if tls.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) {
        // A CA validating TLS-ALPN-01 only looks at the certificate (RFC 8737 §3).
        let _ = tls.shutdown().await;
        return;
    }
    let (slot, busy) = match tls.get_ref().1.alpn_protocol() {
        Some(b"imap") => (slots.imap.try_acquire(), "* BYE Too many connections, try again later\r\n"),
        Some(b"smtp") => (slots.smtp.try_acquire(), "421 4.7.0 Too many connections, try again later\r\n"),
        _ => (slots.https.try_acquire(), BUSY),
    };
    let Ok(_slot) = slot else {
        let _ = tls.write_all(busy.as_bytes()).await;
        let _ = tls.shutdown().await;
        return;
    };
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
    let activity = idle::Activity::new();
    let watched = activity.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        // The peer address is used for IP-literal senders only: never logged or stored.
        request.extensions_mut().insert(ConnectInfo(peer));
        let in_progress = watched.begin();
        let response = app.clone().call(request);
        async move {
            let response = response.await;
            drop(in_progress);
            response
        }
    });
    let idle = relay.config.timeouts.https_idle();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(idle);
    builder.http2().timer(TokioTimer::new()).max_concurrent_streams(64);
    // With upgrades: the realtime relay's connections start as HTTP.
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    idle::serve_until_idle(connection, &activity, idle, |c| c.graceful_shutdown()).await;
}

/// Serve plain HTTP on `listener`: the realtime relay (its latency probes come here) and, for
/// everything else, a redirect to HTTPS.
pub async fn serve_plain(relay: Arc<Relay>, listener: TcpListener) {
    // iroh's latency probe comes here; the relay itself only for apps told an http:// URL
    // (its handshake can be replayed by whoever sees it in cleartext).
    let app = if relay.config.serve_iroh_relay && relay.config.iroh_relay.starts_with("http://") {
        relay::routes(Router::new())
    } else {
        Router::new().route("/generate_204", get(relay::generate_204))
    };
    let app = app.route("/.well-known/acme-challenge/{token}", get(acme_challenge));
    let app = app.fallback(to_https).with_state(relay.clone());
    let limit = relay.config.max_https_connections as usize;
    crate::net::serve(listener, limit, relay.config.timeouts.write(), BUSY, move |tcp| {
        let (app, idle) = (app.clone(), relay.config.timeouts.https_idle());
        async move {
            let service = hyper::service::service_fn(move |request| app.clone().call(request));
            let mut builder = hyper::server::conn::http1::Builder::new();
            // Here the header timer runs from the start and again between requests.
            builder.timer(TokioTimer::new()).header_read_timeout(idle);
            let _ = builder.serve_connection(TokioIo::new(tcp), service).with_upgrades().await;
        }
    })
    .await
}

/// HTTP-01 (RFC 8555 §8.3): the key authorization of a pending challenge.
async fn acme_challenge(
    axum::extract::State(relay): axum::extract::State<Arc<Relay>>,
    axum::extract::Path(token): axum::extract::Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match relay.tls.challenges().http(&token) {
        Some(answer) => ([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], answer).into_response(),
        None => axum::http::StatusCode::NOT_FOUND.into_response(),
    }
}

async fn to_https(axum::extract::State(relay): axum::extract::State<Arc<Relay>>, uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let target = format!("https://{}{path}", pages::url_host(&relay.config.mail_domain));
    (axum::http::StatusCode::MOVED_PERMANENTLY, [(axum::http::header::LOCATION, target)]).into_response()
}

/// Serve `GET /metrics` (Prometheus text: the counters and the storage report) in plain HTTP.
pub async fn serve_metrics(relay: Arc<Relay>, listener: TcpListener) {
    let (write, idle) = (relay.config.timeouts.write(), relay.config.timeouts.https_idle());
    let app = Router::new().route("/metrics", get(metrics)).with_state(relay);
    crate::net::serve(listener, 16, write, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", move |tcp| {
        let app = app.clone();
        async move {
            let service = hyper::service::service_fn(move |request| app.clone().call(request));
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(idle);
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        }
    })
    .await
}

async fn metrics(axum::extract::State(relay): axum::extract::State<Arc<Relay>>) -> impl axum::response::IntoResponse {
    let mut text = relay.metrics.render();
    text.push_str(&relay.realtime.render_metrics());
    text.push_str(&relay.tls.render_metrics());
    match relay.storage_report().await {
        Ok(report) => text.push_str(&report.prometheus()),
        Err(e) => tracing::error!("storage report: {e}"),
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
}
