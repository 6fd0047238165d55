//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz): each takes arbitrary bytes and
//! drives one parser the way the relay does, so that the targets stay one line each and
//! `cargo test` replays the committed corpora through the same code. Nothing here may panic,
//! loop forever or allocate without bound, whatever the input.

use crate::config::Config;
use crate::message::ParsedMessage;

/// The config file, TOML or a chatmail.ini: an error names the key.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(loaded) = Config::parse(text) {
        let config = loaded.config;
        let _ = config.policy_params();
        let _ = config.iroh_relay_url();
        let _ = config.is_local("someone@example.org");
    }
    let _ = Config::parse_ini(text);
}

/// The message view policies see (MIME parts, headers, addresses, decoded bodies, OpenPGP
/// armor and packets), IMAP's body sections (into encapsulated messages), ENVELOPE's address
/// lists and BODYSTRUCTURE.
pub fn message(data: &[u8]) {
    let _ = crate::imap::structure::envelope(data);
    let _ = crate::imap::structure::body_structure(data);
    let Ok(message) = ParsedMessage::parse(data.to_vec()) else { return };
    for name in ["From", "To", "Subject", "Content-Type", "Autocrypt"] {
        let _ = message.header(name);
        let _ = message.addresses(name);
    }
    for part in 0..message.parts().len() as u32 {
        let _ = message.part_header(part, "Content-Type");
        let _ = message.body(part);
        let _ = message.armor(part);
    }
    for field in message.fields() {
        let _ = crate::imap::address::parse(&field.value);
    }
    use crate::imap::section::{Specifier, section};
    let names: &[&[u8]] = &[b"subject", b"from"];
    for path in [&[][..], &[1], &[2], &[1, 1], &[2, 1], &[3, 2, 1], &[2, 2, 1, 1]] {
        for specifier in [Specifier::Whole, Specifier::Mime, Specifier::Header, Specifier::Text, Specifier::Fields(names, true)] {
            let _ = section(data, path, specifier);
        }
    }
}

/// The IMAP COMPRESS=DEFLATE reader (RFC 4978) with the input cut into reads as the first byte
/// says: never more out per read than the session's buffer, whatever a bomb inflates to; and
/// what the relay compresses, inflates back to the same bytes.
pub fn compress(data: &[u8]) {
    use crate::imap::io::{Deflate, deflate_batch};
    let Some((&cut, data)) = data.split_first() else { return };
    let chunk = usize::from(cut).max(1);
    let mut deflate = Deflate::new();
    let mut buf = [0u8; 2048];
    let mut out = 0usize;
    'input: for piece in data.chunks(chunk) {
        deflate.pending.extend_from_slice(piece);
        loop {
            match deflate.inflate(&mut buf) {
                Ok(Some(0)) | Err(_) => break 'input,
                Ok(Some(n)) => {
                    assert!(n <= buf.len());
                    out += n;
                    // Enough to see a bomb held to the buffer size.
                    if out > 1 << 20 {
                        break 'input;
                    }
                }
                Ok(None) => break,
            }
        }
    }
    let compressed = deflate_batch(data).expect("deflate never fails on a fresh compressor");
    let mut inflate = Deflate::new();
    inflate.pending = compressed;
    let mut round_trip = Vec::with_capacity(data.len());
    while let Some(n) = inflate.inflate(&mut buf).expect("our own stream inflates") {
        assert!(n > 0, "a sync-flushed stream does not end");
        round_trip.extend_from_slice(&buf[..n]);
    }
    assert_eq!(round_trip, data, "compression round trip");
}

/// A whole SMTP submission session over TLS (port 465) with the bytes as the client's input,
/// against a real relay (store, bundle, policies) started once per process.
pub fn smtp_session(data: &[u8]) {
    let relay = sessions::relay();
    relay.converse(relay.submissions, data);
}

/// A whole IMAP session over TLS (port 993), as [`smtp_session`].
pub fn imap_session(data: &[u8]) {
    let relay = sessions::relay();
    relay.converse(relay.imaps, data);
}

mod sessions {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, OnceLock};
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::config::Config;
    use crate::serve::Relay;

    /// The domain of the accounts the seed corpora log in to (tests/fuzz_corpora.rs).
    const DOMAIN: &str = "_fuzz.test";
    /// A session that has not ended this long after its input did is a hang.
    const SESSION_DEADLINE: Duration = Duration::from_secs(60);

    pub struct FuzzRelay {
        runtime: tokio::runtime::Runtime,
        pub submissions: SocketAddr,
        pub imaps: SocketAddr,
    }

    pub fn relay() -> &'static FuzzRelay {
        static RELAY: OnceLock<FuzzRelay> = OnceLock::new();
        RELAY.get_or_init(start)
    }

    /// Compiled policies and the DKIM key outlive the process (compiling the bundle and making
    /// an RSA key take a while); the database is new for each, and removed by the next process
    /// once its own has ended.
    fn start() -> FuzzRelay {
        let shared = std::env::temp_dir().join("ferrymail-fuzz");
        remove_ended(&shared);
        let data_dir = shared.join(format!("relay-{}", std::process::id()));
        for keep in ["policy-cache", "dkim"] {
            copy_dir(&shared.join(keep), &data_dir.join(keep));
        }
        let text = format!(
            "mail_domain = \"{DOMAIN}\"\ndata_dir = \"{}\"\nmax_user_send_per_minute = 1000000\nmax_load_1m = 1000.0\n\
             daily_expire = false\n[listen]\nsmtp = \"127.0.0.1:0\"\nsubmission = \"127.0.0.1:0\"\n\
             submissions = \"127.0.0.1:0\"\nimap = \"127.0.0.1:0\"\nimaps = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\n\
             metrics = \"127.0.0.1:0\"\nturn = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n",
            data_dir.display()
        );
        let config = Config::parse(&text).expect("the fuzz relay's config").config;
        let relay = Arc::new(Relay::open(config, None).expect("the fuzz relay starts"));
        // Inputs guess passwords by the thousand: waiting for turns would only look like hangs.
        relay.auth.set_throttled(false);
        for keep in ["policy-cache", "dkim"] {
            copy_dir(&data_dir.join(keep), &shared.join(keep));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listeners = runtime.block_on(relay.bind()).expect("loopback ports");
        let submissions = listeners.submissions.local_addr().unwrap();
        let imaps = listeners.imaps.local_addr().unwrap();
        runtime.spawn(async move {
            let _ = relay.serve(listeners).await;
        });
        FuzzRelay { runtime, submissions, imaps }
    }

    /// Remove the data of relays whose process has ended.
    fn remove_ended(shared: &Path) {
        let Ok(entries) = std::fs::read_dir(shared) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("relay-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    fn copy_dir(from: &Path, to: &Path) {
        let Ok(entries) = std::fs::read_dir(from) else { return };
        let _ = std::fs::create_dir_all(to);
        for entry in entries.flatten() {
            let target: PathBuf = to.join(entry.file_name());
            if !target.exists() {
                let _ = std::fs::copy(entry.path(), target);
            }
        }
    }

    impl FuzzRelay {
        /// Connect over TLS, send `data` while reading every answer, close our side, and wait
        /// for the relay to end the session.
        pub fn converse(&self, addr: SocketAddr, data: &[u8]) {
            self.runtime.block_on(async {
                let tcp = tokio::net::TcpStream::connect(addr).await.expect("the relay accepts");
                let name = rustls_pki_types::ServerName::try_from("fuzz.test").unwrap();
                let Ok(tls) = crate::tls::client(false, &[]).connect(name, tcp).await else { return };
                let (mut reader, mut writer) = tokio::io::split(tls);
                let send = async {
                    let _ = writer.write_all(data).await;
                    let _ = writer.shutdown().await;
                };
                let receive = async {
                    let mut sink = [0u8; 16 * 1024];
                    while let Ok(n) = reader.read(&mut sink).await {
                        if n == 0 {
                            break;
                        }
                    }
                };
                let ended = tokio::time::timeout(SESSION_DEADLINE, async { tokio::join!(send, receive) }).await;
                assert!(ended.is_ok(), "the session did not end within {SESSION_DEADLINE:?} of its input");
            });
        }
    }
}
