//! Let's Encrypt's ACME test server, pebble (Debian's package), on loopback: its HTTPS
//! listener has a certificate from a CA made here, its resolver is the test's dnsmasq, and it
//! validates challenges at the ports a test names.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Pebble {
    child: Child,
    /// `https://127.0.0.1:<port>/dir`
    pub directory: String,
    /// The CA that pebble's own HTTPS listener chains to (the relay's `acme_ca_root`).
    pub listener_ca: PathBuf,
    management: u16,
    dir: PathBuf,
}

/// Where pebble validates: the ports it connects to, and how long its certificates live.
pub struct Validation {
    pub tls_port: u16,
    pub http_port: u16,
    pub validity_seconds: u64,
}

/// A directory with the listener's CA, certificate and key, kept across pebble restarts.
pub fn listener_files(dir: &Path) -> PathBuf {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "pebble listener test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("listener-ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("listener.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("listener.key"), key.serialize_pem()).unwrap();
    dir.join("listener-ca.pem")
}

impl Pebble {
    /// Start pebble on `port` (its ACME API) with the files of [`listener_files`] in `dir`.
    pub fn start(dir: &Path, port: u16, dns_port: u16, validation: &Validation) -> Pebble {
        let management = super::dns::free_port();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{port}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.join("listener.pem"),
            "privateKey": dir.join("listener.key"),
            "httpPort": validation.http_port,
            "tlsPort": validation.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
            "certificateValidityPeriod": validation.validity_seconds,
        }});
        let config_path = dir.join(format!("pebble-{port}-{}.json", validation.tls_port));
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("pebble.log")).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(format!("127.0.0.1:{dns_port}"))
            // No random sleep before validating, no made-up bad nonces, every authorization fresh.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble is needed for the ACME tests (scripts/setup --tests installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
            || std::net::TcpStream::connect(("127.0.0.1", management)).is_err()
        {
            assert!(Instant::now() < deadline, "pebble did not start: {}", std::fs::read_to_string(dir.join("pebble.log")).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(50));
        }
        Pebble {
            child,
            directory: format!("https://127.0.0.1:{port}/dir"),
            listener_ca: dir.join("listener-ca.pem"),
            management,
            dir: dir.to_path_buf(),
        }
    }

    /// The root pebble issues under (made anew at each start), as a PEM file.
    pub fn root(&self) -> PathBuf {
        let path = self.dir.join(format!("root-{}.pem", self.management));
        let script = "import ssl, sys, urllib.request\n\
                      ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
                      sys.stdout.write(urllib.request.urlopen(sys.argv[2], context=ctx, timeout=10).read().decode())\n";
        let out = Command::new("python3")
            .args(["-c", script])
            .arg(&self.listener_ca)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Python's ssl, verifying the chain served at `address` for `name` against `root`: the
/// error, or the protocol version on success. (On the blocking pool: the relay under test
/// may share the test's runtime thread.)
pub async fn python_verifies(root: &Path, address: std::net::SocketAddr, name: &str) -> Result<String, String> {
    let (root, name) = (root.to_path_buf(), name.to_string());
    tokio::task::spawn_blocking(move || python_verifies_blocking(&root, address, &name)).await.unwrap()
}

fn python_verifies_blocking(root: &Path, address: std::net::SocketAddr, name: &str) -> Result<String, String> {
    let script = "import socket, ssl, sys\n\
                  ctx = ssl.create_default_context(cafile=sys.argv[1])\n\
                  with socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=10) as s:\n\
                  \x20   with ctx.wrap_socket(s, server_hostname=sys.argv[4]) as t:\n\
                  \x20       print(t.version())\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(root)
        .arg(address.ip().to_string())
        .arg(address.port().to_string())
        .arg(name)
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}
