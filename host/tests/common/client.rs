//! A line-based test client over plain TCP or TLS (any certificate accepted: the relay's is
//! self-signed), for speaking SMTP and IMAP by hand and checking exact replies.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub enum Conn {
    Plain(BufReader<TcpStream>),
    Tls(BufReader<TlsStream<TcpStream>>),
}

pub struct Client {
    /// Empty only while STARTTLS swaps the connection.
    conn: Option<Conn>,
}

#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(&self, _: &[u8], _: &CertificateDer<'_>, _: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client configuration: given protocol versions and ALPN, any certificate.
pub fn tls_config(versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

async fn handshake(tcp: TcpStream, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("relay.test").unwrap();
    tokio_rustls::TlsConnector::from(config).connect(name, tcp).await
}

impl Client {
    pub async fn plain(addr: SocketAddr) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        Client { conn: Some(Conn::Plain(BufReader::new(tcp))) }
    }

    pub async fn tls(addr: SocketAddr) -> Client {
        Self::tls_with(addr, tls_config(&[&rustls::version::TLS13], &[])).await.unwrap()
    }

    pub async fn tls_with(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<Client> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Ok(Client { conn: Some(Conn::Tls(BufReader::new(handshake(tcp, config).await?))) })
    }

    /// Switch a plain connection to TLS (after the server said yes to STARTTLS).
    pub async fn start_tls(&mut self) {
        let Some(Conn::Plain(reader)) = self.conn.take() else { panic!("already TLS") };
        assert!(reader.buffer().is_empty(), "the server sent something before the handshake");
        let tls = handshake(reader.into_inner(), tls_config(&[&rustls::version::TLS13], &[])).await.unwrap();
        self.conn = Some(Conn::Tls(BufReader::new(tls)));
    }

    /// The server's certificate (DER), on a TLS connection.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match self.conn.as_ref()? {
            Conn::Tls(reader) => Some(reader.get_ref().get_ref().1.peer_certificates()?.first()?.to_vec()),
            Conn::Plain(_) => None,
        }
    }

    /// The TLS stream itself (nothing may be buffered), to layer something on top.
    pub fn into_tls(self) -> TlsStream<TcpStream> {
        match self.conn {
            Some(Conn::Tls(reader)) => {
                assert!(reader.buffer().is_empty(), "unread bytes would be lost");
                reader.into_inner()
            }
            _ => panic!("not a TLS connection"),
        }
    }

    pub async fn write(&mut self, data: &[u8]) {
        match self.conn.as_mut().unwrap() {
            Conn::Plain(r) => r.get_mut().write_all(data).await.unwrap(),
            Conn::Tls(r) => {
                r.get_mut().write_all(data).await.unwrap();
                r.get_mut().flush().await.unwrap();
            }
        }
    }

    /// Write, for a peer that may close the connection first: false if it did.
    pub async fn try_write(&mut self, data: &[u8]) -> bool {
        let written = match self.conn.as_mut().unwrap() {
            Conn::Plain(r) => r.get_mut().write_all(data).await,
            Conn::Tls(r) => r.get_mut().write_all(data).await,
        };
        written.is_ok()
    }

    pub async fn send(&mut self, line: &str) {
        self.write(format!("{line}\r\n").as_bytes()).await;
    }

    /// One line without its CRLF; None at end of stream.
    pub async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = match self.conn.as_mut().unwrap() {
            Conn::Plain(r) => r.read_line(&mut line).await,
            Conn::Tls(r) => r.read_line(&mut line).await,
        }
        .ok()?;
        (n > 0).then(|| line.trim_end_matches(['\r', '\n']).to_string())
    }

    /// An SMTP reply: all its lines (`250-...` continuations included).
    pub async fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await.expect("connection closed while waiting for a reply");
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    /// Send a command, return the last line of its reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(line).await;
        self.reply().await.pop().unwrap()
    }

    pub async fn read_exact(&mut self, buf: &mut [u8]) {
        match self.conn.as_mut().unwrap() {
            Conn::Plain(r) => r.read_exact(buf).await.unwrap(),
            Conn::Tls(r) => r.read_exact(buf).await.unwrap(),
        };
    }

    /// One IMAP response line, with any literals (`{n}` + n bytes) taken in.
    pub async fn imap_line(&mut self) -> String {
        let mut line = self.line().await.expect("connection closed while waiting for a response");
        while let Some(length) = literal_length(&line) {
            let mut literal = vec![0u8; length];
            self.read_exact(&mut literal).await;
            line.push_str("\r\n");
            line.push_str(&String::from_utf8_lossy(&literal));
            line.push_str(&self.line().await.unwrap_or_default());
        }
        line
    }

    /// IMAP: the lines up to and including the one tagged `tag`.
    pub async fn imap_until(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.imap_line().await;
            let done = line.starts_with(&format!("{tag} "));
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// Send `tag command`, return every line up to the tagged one.
    pub async fn imap(&mut self, tag: &str, command: &str) -> Vec<String> {
        self.send(&format!("{tag} {command}")).await;
        self.imap_until(tag).await
    }

    /// Everything until the server closes the connection.
    pub async fn rest(&mut self) -> String {
        let mut all = String::new();
        let _ = match self.conn.as_mut().unwrap() {
            Conn::Plain(r) => r.read_to_string(&mut all).await,
            Conn::Tls(r) => r.read_to_string(&mut all).await,
        };
        all
    }
}

/// The length of a literal announced at the end of a line (`... {12}`).
fn literal_length(line: &str) -> Option<usize> {
    let open = line.rfind('{')?;
    line.strip_suffix('}')?[open + 1..].parse().ok()
}
