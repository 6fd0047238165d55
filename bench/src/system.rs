//! The two systems under test behind one small interface, and what the bench reads about
//! their processes (memory, CPU time).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the bench's clients connect: IMAP and submission, both with implicit TLS.
#[derive(Clone, Copy)]
pub struct Ports {
    pub imaps: SocketAddr,
    pub submissions: SocketAddr,
}

pub trait System {
    fn name(&self) -> &'static str;
    fn domain(&self) -> &str;
    fn ports(&self) -> Ports;
    /// Start and return once IMAP and submission accept connections.
    fn start(&mut self);
    fn stop(&mut self);
    /// What an operator does to change the rules while serving (ferrymail: swap the policy
    /// bundle; the reference: reload Postfix and Dovecot); returns when done.
    fn reload(&mut self);
    /// Every process of the running system.
    fn process_ids(&self) -> Vec<u32>;
    /// Log lines that help when something fails.
    fn failure_context(&self) -> String;
    /// Microseconds spent in policy calls so far, where the system has policies to time.
    fn policy_microseconds(&self) -> Option<u64> {
        None
    }
}

pub const PASSWORD: &str = "bench-password-0123";

/// The bench's i-th account on `domain` (listed in advance on the reference, created by the
/// first login on ferrymail, whose default wants 9 characters before the `@`).
pub fn account_address(i: usize, domain: &str) -> String {
    format!("b{i:08}@{domain}")
}

pub struct Ferrymail {
    binary: PathBuf,
    dir: tempfile::TempDir,
    ip: Ipv4Addr,
    domain: String,
    child: Option<Child>,
}

impl Ferrymail {
    /// ferrymail on `ip` with the standard ports and the default policy bundle. The sender rate
    /// limit is raised out of the way: the reference runs without chatmail's (filtermail's).
    pub fn configure(binary: &Path, domain: &str, ip: Ipv4Addr) -> Ferrymail {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("ferrymail.toml"),
            format!(
                "mail_domain = \"{domain}\"\ndata_dir = \"data\"\nmax_load_1m = 1000.0\n\
                 max_user_send_per_minute = 100000000\nmax_user_send_burst_size = 100000000\n\
                 max_imap_connections = 1000000\nmax_smtp_connections = 10000\ndaily_expire = false\nallow_private_destinations = true\n\
                 [listen]\nsmtp = \"{ip}:25\"\nsubmission = \"{ip}:587\"\nsubmissions = \"{ip}:465\"\nimap = \"{ip}:143\"\n\
                 imaps = \"{ip}:993\"\nhttps = \"{ip}:443\"\nmetrics = \"{ip}:9745\"\nturn = \"{ip}:3478\"\nhttp = \"{ip}:80\"\n"
            ),
        )
        .unwrap();
        Ferrymail { binary: binary.to_path_buf(), dir, ip, domain: domain.to_string(), child: None }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("ferrymail.toml")
    }

    /// The relay's Prometheus text.
    pub fn metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect((self.ip, 9745)).unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        tcp.read_to_string(&mut text).unwrap();
        text
    }

    /// One unlabelled counter from the metrics.
    pub fn counter(&self, name: &str) -> u64 {
        let metrics = self.metrics();
        let line = metrics.lines().find(|l| l.split_whitespace().next() == Some(name));
        line.and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

impl System for Ferrymail {
    fn name(&self) -> &'static str {
        "ferrymail"
    }

    fn domain(&self) -> &str {
        &self.domain
    }

    fn ports(&self) -> Ports {
        Ports { imaps: SocketAddr::from((self.ip, 993)), submissions: SocketAddr::from((self.ip, 465)) }
    }

    fn start(&mut self) {
        let child = Command::new(&self.binary)
            .args(["serve", "--config"])
            .arg(self.config())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for addr in [self.ports().imaps, self.ports().submissions] {
            wait_for_port(addr, Duration::from_secs(120), || self.failure_context());
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM);
            wait_or_kill(&mut child);
        }
    }

    fn reload(&mut self) {
        let out = Command::new(&self.binary).args(["policy", "reload", "--config"]).arg(self.config()).output().unwrap();
        assert!(out.status.success(), "policy reload failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn process_ids(&self) -> Vec<u32> {
        self.child.iter().map(Child::id).collect()
    }

    fn failure_context(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    fn policy_microseconds(&self) -> Option<u64> {
        Some(self.counter("ferrymail_policy_call_microseconds_total"))
    }
}

impl Drop for Ferrymail {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Wait until `addr` accepts connections; panic with `context()` after `limit`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration, context: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not open:\n{}", context());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait up to 15 s for a stopping process, then kill it.
pub fn wait_or_kill(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `roots` and every process below them.
pub fn descendants(roots: &[u32]) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The field after the `(command)`, which may itself hold spaces and parentheses.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let ppid = after.split(' ').nth(1).and_then(|p| p.parse::<u32>().ok()).unwrap_or(0);
        parents.push((pid, ppid));
    }
    let mut all = roots.to_vec();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        all.extend(parents.iter().filter(|(_, ppid)| *ppid == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    all
}

/// Proportional set size of these processes together, in bytes: shared pages (libraries, the
/// binary) count once in all, so many small processes are measured fairly against one big one.
pub fn memory(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|rollup| {
            let line = rollup.lines().find(|l| l.starts_with("Pss:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum::<u64>()
        * 1024
}

/// CPU time (user + system) these processes used so far, including their finished children.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            let after = stat.rfind(')').map(|i| stat[i + 2..].to_string()).unwrap_or_default();
            // utime, stime, cutime, cstime are fields 14-17 of stat; `after` starts at field 3.
            after.split(' ').skip(11).take(4).filter_map(|t| t.parse::<u64>().ok()).sum::<u64>()
        })
        .sum();
    ticks as f64 / 100.0
}
