//! The reference: today's chatmail relay stack from Debian's packages — Postfix (MX on 25,
//! submission on 587 and 465, SASL through Dovecot, delivery over LMTP) and Dovecot (IMAP with
//! IDLE and hibernation, LMTP, maildir with gzip, quota, METADATA) — configured after chatmail's
//! own templates (cmdeploy's dovecot.conf.j2, main.cf.j2, master.cf.j2). Everything lives in a
//! temporary directory; the system's Postfix and Dovecot are not touched.
//!
//! Left out, and said so in the report: the filtermail proxy filters (encryption check, rate
//! limits), OpenDKIM, the account-creating auth helper (accounts are pre-created in a
//! passwd-file), push notifications (Lua), nginx, chroot, and Dovecot's last-login plugin.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::system::{Ports, System, wait_for_port, wait_or_kill};

pub struct Reference {
    dir: tempfile::TempDir,
    ip: Ipv4Addr,
    domain: String,
    postfix: Option<Child>,
    dovecot: Option<Child>,
}

/// The owner of the mail: chatmail's `vmail`; any unprivileged user does, and `nobody` is on
/// every machine.
const MAIL_USER: &str = "nobody";

fn user_id(flag: &str, user: &str) -> u32 {
    let out = Command::new("id").args([flag, user]).output().unwrap();
    assert!(out.status.success(), "no user {user}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

impl Reference {
    /// Whether this machine can run the reference: Postfix and Dovecot installed, and root
    /// (both bind port 25 and drop privileges).
    pub fn runnable() -> Result<(), String> {
        for program in ["/usr/sbin/postfix", "/usr/sbin/dovecot", "/usr/lib/dovecot/imap", "/usr/lib/dovecot/lmtp"] {
            if !Path::new(program).exists() {
                return Err(format!("{program} is not installed"));
            }
        }
        if !rustix::process::geteuid().is_root() {
            return Err("it needs root".into());
        }
        Ok(())
    }

    /// Configure the stack for `domain` on `ip` with the accounts of `accounts`
    /// (`system::account_address`), all with `system::PASSWORD`.
    pub fn configure(domain: &str, ip: Ipv4Addr, accounts: &[std::ops::Range<usize>]) -> Reference {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["etc", "pf", "pf/spool", "pf/data", "dv", "dv/mail"] {
            std::fs::create_dir(r.join(sub)).unwrap();
        }
        let (vmail_uid, vmail_gid) = (user_id("-u", MAIL_USER), user_id("-g", MAIL_USER));
        std::os::unix::fs::chown(r.join("dv/mail"), Some(vmail_uid), Some(vmail_gid)).unwrap();
        std::os::unix::fs::chown(r.join("pf/data"), Some(user_id("-u", "postfix")), Some(user_id("-g", "postfix"))).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec![domain.to_string()]).unwrap();
        write(&r.join("etc/cert.pem"), &cert.cert.pem());
        write(&r.join("etc/key.pem"), &cert.signing_key.serialize_pem());
        // One SHA512-CRYPT hash (what chatmail's auth helper stores) serves every account.
        let hash = Command::new("doveadm").args(["pw", "-s", "SHA512-CRYPT", "-p", crate::system::PASSWORD]).output().unwrap();
        assert!(hash.status.success(), "doveadm pw: {}", String::from_utf8_lossy(&hash.stderr));
        let hash = String::from_utf8_lossy(&hash.stdout).trim().to_string();
        let mut users = String::new();
        for i in accounts.iter().flat_map(|r| r.clone()) {
            users.push_str(&format!("{}:{hash}\n", crate::system::account_address(i, domain)));
        }
        write(&r.join("etc/users"), &users);
        let reference = Reference { dir, ip, domain: domain.to_string(), postfix: None, dovecot: None };
        reference.write_postfix_config();
        reference.write_dovecot_config(vmail_uid, vmail_gid);
        reference
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn write_postfix_config(&self) {
        let (r, domain, ip) = (self.root().display(), &self.domain, self.ip);
        write(&self.root().join("pf/login_map"), "/^(.*)$/ ${1}\n");
        write(
            &self.root().join("pf/main.cf"),
            &format!(
                "compatibility_level = 3.6\n\
                 myhostname = {domain}\n\
                 config_directory = {r}/pf\n\
                 queue_directory = {r}/pf/spool\n\
                 data_directory = {r}/pf/data\n\
                 maillog_file = {r}/pf/maillog\n\
                 maillog_file_prefixes = {r}\n\
                 inet_protocols = ipv4\n\
                 smtpd_tls_cert_file = {r}/etc/cert.pem\n\
                 smtpd_tls_key_file = {r}/etc/key.pem\n\
                 smtpd_tls_security_level = may\n\
                 smtpd_tls_exclude_ciphers = aNULL, RC4, MD5, DES\n\
                 tls_preempt_cipherlist = yes\n\
                 smtpd_relay_restrictions = permit_mynetworks permit_sasl_authenticated defer_unauth_destination\n\
                 mydestination =\n\
                 relayhost =\n\
                 mynetworks = 127.0.0.0/8\n\
                 mailbox_size_limit = 0\n\
                 message_size_limit = 31457280\n\
                 recipient_delimiter = +\n\
                 virtual_transport = lmtp:unix:private/dovecot-lmtp\n\
                 virtual_mailbox_domains = {domain}\n\
                 mua_client_restrictions = permit_sasl_authenticated, reject\n\
                 mua_sender_restrictions = reject_sender_login_mismatch, permit_sasl_authenticated, reject\n\
                 mua_helo_restrictions = permit_mynetworks, reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname, permit\n\
                 smtpd_sender_login_maps = regexp:{r}/pf/login_map\n\
                 smtpd_peername_lookup = no\n\
                 alias_maps =\n\
                 alias_database =\n\
                 local_transport = error:no local delivery\n\
                 smtp_dns_support_level = disabled\n"
            ),
        );
        let submission = |extra: &str| {
            format!(
                "  -o smtpd_tls_security_level=encrypt\n  -o smtpd_tls_mandatory_protocols=>=TLSv1.3\n  -o smtpd_sasl_auth_enable=yes\n  \
                 -o smtpd_sasl_type=dovecot\n  -o smtpd_sasl_path=private/auth\n{extra}  -o smtpd_reject_unlisted_recipient=no\n  \
                 -o smtpd_client_restrictions=$mua_client_restrictions\n  -o smtpd_helo_restrictions=$mua_helo_restrictions\n  \
                 -o smtpd_sender_restrictions=$mua_sender_restrictions\n  -o smtpd_recipient_restrictions=\n  \
                 -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n  -o smtpd_client_connection_count_limit=1000\n"
            )
        };
        let master = format!(
            "{ip}:25 inet n - n - - smtpd\n  -o smtpd_tls_security_level=encrypt\n  -o smtpd_tls_mandatory_protocols=>=TLSv1.2\n\
             {ip}:587 inet n - n - 5000 smtpd\n  -o syslog_name=postfix/submission\n{}\
             {ip}:465 inet n - n - 5000 smtpd\n  -o syslog_name=postfix/smtps\n  -o smtpd_tls_wrappermode=yes\n{}\
             pickup unix n - n 60 1 pickup\n\
             cleanup unix n - n - 0 cleanup\n\
             qmgr unix n - n 300 1 qmgr\n\
             tlsmgr unix - - n 1000? 1 tlsmgr\n\
             rewrite unix - - n - - trivial-rewrite\n\
             bounce unix - - n - 0 bounce\n\
             defer unix - - n - 0 bounce\n\
             trace unix - - n - 0 bounce\n\
             verify unix - - n - 1 verify\n\
             flush unix n - n 1000? 0 flush\n\
             proxymap unix - - n - - proxymap\n\
             smtp unix - - n - - smtp\n\
             relay unix - - n - - smtp\n\
             showq unix n - n - - showq\n\
             error unix - - n - - error\n\
             retry unix - - n - - error\n\
             discard unix - - n - - discard\n\
             lmtp unix - - n - - lmtp\n\
             anvil unix - - n - 1 anvil\n\
             scache unix - - n - 1 scache\n\
             postlog unix-dgram n - n - 1 postlogd\n",
            submission("  -o smtpd_tls_auth_only=yes\n"),
            submission(""),
        );
        write(&self.root().join("pf/master.cf"), &master);
    }

    fn write_dovecot_config(&self, vmail_uid: u32, vmail_gid: u32) {
        let (r, ip) = (self.root().display(), self.ip);
        let mailbox = |name: &str, special: &str| format!("  mailbox {name} {{\n    special_use = {special}\n    auto = no\n  }}\n");
        let mailboxes: String = [("Drafts", "\\Drafts"), ("Junk", "\\Junk"), ("Trash", "\\Trash"), ("Sent", "\\Sent")]
            .iter()
            .map(|(name, special)| mailbox(name, special))
            .collect();
        write(
            &self.root().join("dv/dovecot.conf"),
            &format!(
                "base_dir = {r}/dv/run\n\
                 state_dir = {r}/dv/state\n\
                 log_path = {r}/dv/dovecot.log\n\
                 protocols = imap lmtp\n\
                 listen = {ip}\n\
                 auth_mechanisms = plain\n\
                 auth_username_chars = abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567890.-_@[]\n\
                 default_client_limit = 20000\n\
                 first_valid_uid = {vmail_uid}\n\
                 mail_plugins = zlib quota\n\
                 imap_capability = +XDELTAPUSH XCHATMAIL\n\
                 passdb {{\n  driver = passwd-file\n  args = scheme=SHA512-CRYPT {r}/etc/users\n}}\n\
                 userdb {{\n  driver = static\n  args = uid={vmail_uid} gid={vmail_gid} home={r}/dv/mail/%u\n}}\n\
                 mail_location = maildir:{r}/dv/mail/%u\n\
                 mail_cache_max_size = 500K\n\
                 namespace inbox {{\n  inbox = yes\n  separator = /\n{mailboxes}}}\n\
                 mail_attribute_dict = file:%h/dovecot-attributes\n\
                 protocol imap {{\n  mail_plugins = $mail_plugins imap_quota\n  imap_metadata = yes\n}}\n\
                 protocol lmtp {{\n  mail_plugins = $mail_plugins\n}}\n\
                 plugin {{\n  zlib_save = gz\n  quota = maildir:User quota\n  quota_rule = *:storage=500M\n  \
                 quota_max_mail_size = 31457280\n  quota_grace = 0\n}}\n\
                 service lmtp {{\n  user = {MAIL_USER}\n  unix_listener {r}/pf/spool/private/dovecot-lmtp {{\n    \
                 group = postfix\n    mode = 0600\n    user = postfix\n  }}\n}}\n\
                 lmtp_add_received_header = no\n\
                 service auth {{\n  unix_listener {r}/pf/spool/private/auth {{\n    mode = 0660\n    user = postfix\n    \
                 group = postfix\n  }}\n}}\n\
                 service auth-worker {{\n  user = {MAIL_USER}\n}}\n\
                 service imap-login {{\n  service_count = 0\n  vsz_limit = 1G\n  process_min_avail = 10\n}}\n\
                 service anvil {{\n  unix_listener anvil-auth-penalty {{\n    mode = 0\n  }}\n}}\n\
                 ssl = required\n\
                 ssl_cert = <{r}/etc/cert.pem\n\
                 ssl_key = <{r}/etc/key.pem\n\
                 ssl_min_protocol = TLSv1.3\n\
                 ssl_prefer_server_ciphers = yes\n\
                 imap_hibernate_timeout = 30s\n\
                 service imap {{\n  process_limit = 50000\n  unix_listener imap-master {{\n    user = $default_internal_user\n  }}\n  \
                 extra_groups = $default_internal_group\n}}\n\
                 service imap-hibernate {{\n  unix_listener imap-hibernate {{\n    mode = 0660\n    group = $default_internal_group\n  }}\n}}\n"
            ),
        );
    }

    fn postfix_command(&self, action: &str) -> Command {
        let mut command = Command::new("postfix");
        command.arg("-c").arg(self.root().join("pf")).arg(action).stdout(Stdio::null()).stderr(Stdio::null());
        command
    }

    fn dovecot_config(&self) -> PathBuf {
        self.root().join("dv/dovecot.conf")
    }

    fn log(&self) -> String {
        let read = |p: &str| std::fs::read_to_string(self.root().join(p)).unwrap_or_default();
        let tail = |s: String| s.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        format!("postfix:\n{}\ndovecot:\n{}", tail(read("pf/maillog")), tail(read("dv/dovecot.log")))
    }
}

impl System for Reference {
    fn name(&self) -> &'static str {
        "Postfix + Dovecot"
    }

    fn domain(&self) -> &str {
        &self.domain
    }

    fn ports(&self) -> Ports {
        Ports { imaps: SocketAddr::from((self.ip, 993)), submissions: SocketAddr::from((self.ip, 465)) }
    }

    fn start(&mut self) {
        // Postfix first: Dovecot's LMTP and auth sockets go into Postfix's spool.
        self.postfix = Some(self.postfix_command("start-fg").spawn().expect("postfix (bench/run installs it)"));
        wait_for_port(SocketAddr::from((self.ip, 465)), Duration::from_secs(30), || self.log());
        let private = self.root().join("pf/spool/private");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !private.exists() {
            assert!(Instant::now() < deadline, "postfix did not create its spool:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        let dovecot = Command::new("dovecot").arg("-F").arg("-c").arg(self.dovecot_config()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        self.dovecot = Some(dovecot.expect("dovecot (bench/run installs it)"));
        wait_for_port(self.ports().imaps, Duration::from_secs(30), || self.log());
    }

    fn stop(&mut self) {
        if let Some(mut dovecot) = self.dovecot.take() {
            let _ = Command::new("doveadm").arg("-c").arg(self.dovecot_config()).arg("stop").stderr(Stdio::null()).status();
            wait_or_kill(&mut dovecot);
        }
        if let Some(mut postfix) = self.postfix.take() {
            let _ = self.postfix_command("stop").status();
            wait_or_kill(&mut postfix);
        }
    }

    fn reload(&mut self) {
        let postfix = self.postfix_command("reload").status().unwrap();
        let dovecot = Command::new("doveadm").arg("-c").arg(self.dovecot_config()).arg("reload").status().unwrap();
        assert!(postfix.success() && dovecot.success(), "reload failed:\n{}", self.log());
    }

    fn process_ids(&self) -> Vec<u32> {
        let mut roots = Vec::new();
        roots.extend(self.postfix.as_ref().map(Child::id));
        roots.extend(self.dovecot.as_ref().map(Child::id));
        crate::system::descendants(&roots)
    }

    fn failure_context(&self) -> String {
        self.log()
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        self.stop();
    }
}
