//! A real Postfix (Debian's package) on a loopback address, as a mail server that is not a
//! chatmail relay: it takes mail for its domain into mbox files, and relays mail for given
//! domains to given SMTP servers. Its own config, spool and log live in a temporary directory;
//! the system's Postfix is not touched.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postfix {
    child: Child,
    dir: tempfile::TempDir,
    pub domain: String,
    pub smtp: SocketAddr,
}

fn id(flag: &str) -> u32 {
    let out = Command::new("id").args([flag, "postfix"]).output().unwrap();
    assert!(out.status.success(), "no postfix user: is Postfix installed? (scripts/setup installs it)");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

impl Postfix {
    /// Postfix for `domain` on `ip`:25, with mailboxes for `locals`, sending mail for each
    /// `(domain, server)` of `routes` to that server.
    pub fn start(domain: &str, ip: Ipv4Addr, locals: &[&str], routes: &[(&str, SocketAddr)]) -> Postfix {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // Postfix's daemons run as `postfix` and must reach their spool.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (uid, gid) = (id("-u"), id("-g"));
        for sub in ["etc", "spool", "data", "mail"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        for sub in ["data", "mail"] {
            std::os::unix::fs::chown(root.join(sub), Some(uid), Some(gid)).unwrap();
        }
        let etc = root.join("etc");
        let cert = rcgen::generate_simple_self_signed(vec![domain.to_string()]).unwrap();
        write(&etc.join("cert.pem"), &cert.cert.pem());
        write(&etc.join("key.pem"), &cert.signing_key.serialize_pem());
        let mailboxes: String = locals.iter().map(|l| format!("{l}@{domain} {l}.mbox\n")).collect();
        write(&etc.join("mailboxes"), &mailboxes);
        let transport: String = routes.iter().map(|(d, server)| format!("{d} smtp:[{}]:{}\n", server.ip(), server.port())).collect();
        write(&etc.join("transport"), &transport);
        let r = root.display();
        write(
            &etc.join("main.cf"),
            &format!(
                "compatibility_level = 3.6\n\
                 myhostname = {domain}\n\
                 config_directory = {r}/etc\n\
                 queue_directory = {r}/spool\n\
                 data_directory = {r}/data\n\
                 maillog_file = {r}/maillog\n\
                 maillog_file_prefixes = {r}\n\
                 inet_protocols = ipv4\n\
                 smtp_bind_address = {ip}\n\
                 mynetworks = 127.0.0.0/8\n\
                 mydestination =\n\
                 local_transport = error:no local delivery\n\
                 alias_maps =\n\
                 alias_database =\n\
                 local_header_rewrite_clients =\n\
                 smtpd_peername_lookup = no\n\
                 smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n\
                 smtpd_tls_security_level = may\n\
                 smtpd_tls_received_header = yes\n\
                 smtpd_tls_cert_file = {r}/etc/cert.pem\n\
                 smtpd_tls_key_file = {r}/etc/key.pem\n\
                 smtp_tls_security_level = may\n\
                 smtp_tls_loglevel = 1\n\
                 virtual_mailbox_domains = {domain}\n\
                 virtual_mailbox_base = {r}/mail\n\
                 virtual_mailbox_maps = texthash:{r}/etc/mailboxes\n\
                 virtual_uid_maps = static:{uid}\n\
                 virtual_gid_maps = static:{gid}\n\
                 transport_maps = texthash:{r}/etc/transport\n\
                 smtp_dns_support_level = disabled\n\
                 smtp_host_lookup = native\n\
                 queue_run_delay = 2s\n\
                 minimal_backoff_time = 2s\n\
                 maximal_backoff_time = 5s\n"
            ),
        );
        let services = [
            format!("{ip}:25 inet n - n - - smtpd"),
            "pickup unix n - n 60 1 pickup".into(),
            "cleanup unix n - n - 0 cleanup".into(),
            "qmgr unix n - n 300 1 qmgr".into(),
            "tlsmgr unix - - n 1000? 1 tlsmgr".into(),
            "rewrite unix - - n - - trivial-rewrite".into(),
            "bounce unix - - n - 0 bounce".into(),
            "defer unix - - n - 0 bounce".into(),
            "trace unix - - n - 0 bounce".into(),
            "verify unix - - n - 1 verify".into(),
            "flush unix n - n 1000? 0 flush".into(),
            "proxymap unix - - n - - proxymap".into(),
            "smtp unix - - n - - smtp".into(),
            "relay unix - - n - - smtp".into(),
            "showq unix n - n - - showq".into(),
            "error unix - - n - - error".into(),
            "retry unix - - n - - error".into(),
            "discard unix - - n - - discard".into(),
            "virtual unix - n n - - virtual".into(),
            "anvil unix - - n - 1 anvil".into(),
            "scache unix - - n - 1 scache".into(),
            "postlog unix-dgram n - n - 1 postlogd".into(),
        ];
        write(&etc.join("master.cf"), &(services.join("\n") + "\n"));
        let child = Command::new("postfix")
            .arg("-c")
            .arg(&etc)
            .arg("start-fg")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postfix is needed for the interoperability tests (scripts/setup installs it)");
        let smtp = SocketAddr::from((ip, 25));
        let postfix = Postfix { child, dir, domain: domain.to_string(), smtp };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(smtp).is_err() {
            assert!(Instant::now() < deadline, "postfix did not start:\n{}", postfix.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        postfix
    }

    /// The mbox of `local`, empty while nothing arrived.
    pub fn mailbox(&self, local: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("mail").join(format!("{local}.mbox"))).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new("postfix").arg("-c").arg(self.dir.path().join("etc")).arg("stop").stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
