//! HTTP/1.1 by hand, over TLS (any certificate) or plain TCP: enough to check statuses,
//! headers and bodies exactly.

use std::net::SocketAddr;

use super::client::{Client, tls_config};

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `method path` over HTTPS with ALPN http/1.1.
pub async fn https(addr: SocketAddr, method: &str, path: &str) -> Response {
    let client = Client::tls_with(addr, tls_config(&[&rustls::version::TLS13], &[b"http/1.1"])).await.unwrap();
    exchange(client, method, path).await
}

/// `method path` over plain HTTP.
pub async fn http(addr: SocketAddr, method: &str, path: &str) -> Response {
    exchange(Client::plain(addr).await, method, path).await
}

async fn exchange(mut client: Client, method: &str, path: &str) -> Response {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: relay.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    client.write(request.as_bytes()).await;
    let all = client.rest().await;
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP response: {all:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    Response { status, headers, body: body.to_string() }
}
