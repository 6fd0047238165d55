//! The real `ferrymail serve` binary as a child process: for what only another process can show
//! (SIGKILL, the relay's own memory, the operator commands against a running relay).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_ferrymail");

pub struct Serve {
    pub child: Child,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
}

/// The `[listen]` table with every listener on `ip`, at the standard ports or, with `any`, at
/// ports the OS picks.
pub fn listen(ip: &str, any: bool) -> String {
    let port = |standard: u16| if any { 0 } else { standard };
    let names = [("smtp", 25), ("submission", 587), ("submissions", 465), ("imap", 143), ("imaps", 993), ("https", 443), ("metrics", 9100), ("turn", 3478), ("http", 80)];
    let mut table = String::from("[listen]\n");
    for (name, standard) in names {
        table.push_str(&format!("{name} = \"{ip}:{}\"\n", port(standard)));
    }
    table
}

/// `ferrymail ARGS` with a quiet log.
pub fn ferrymail(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("RUST_LOG", "warn").output().unwrap()
}

impl Serve {
    /// Write `config` (its `data_dir` must be `dir/data`) to `dir/ferrymail.toml` and start
    /// serving; returns once the control socket answers.
    pub fn start(dir: &Path, config: &str) -> Serve {
        let path = dir.join("ferrymail.toml");
        std::fs::write(&path, config).unwrap();
        let data_dir = dir.join("data");
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&data_dir).unwrap();
        super::seed_compile_cache(&data_dir.join("policy-cache"));
        let log = dir.join("serve.log");
        Self::spawn(path, data_dir, log)
    }

    /// Start again on the same config and data (appending to the same log).
    pub fn restart(&self) -> Serve {
        Self::spawn(self.config.clone(), self.data_dir.clone(), self.log.clone())
    }

    fn spawn(config: PathBuf, data_dir: PathBuf, log: PathBuf) -> Serve {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut serve = Serve { child, config, data_dir, log };
        // A fresh data_dir without a compiled bundle compiles it first: ~30 s in a debug build on
        // 2 idle cores, over a minute while the other tests run (seen in CI on a fresh machine).
        let deadline = Instant::now() + Duration::from_secs(180);
        while !serve.answers() {
            if let Some(status) = serve.child.try_wait().unwrap() {
                panic!("serve exited ({status}): {}", serve.log_text());
            }
            assert!(Instant::now() < deadline, "serve did not start: {}", serve.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        serve
    }

    /// Whether the control socket answers (a socket file left by a killed relay does not).
    fn answers(&self) -> bool {
        std::os::unix::net::UnixStream::connect(self.data_dir.join("control.sock")).is_ok()
    }

    /// `ferrymail ARGS --config <this relay's config>`.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--config", self.config.to_str().unwrap()]);
        ferrymail(&all)
    }

    pub fn signal(&self, name: &str) {
        assert!(Command::new("kill").args([name, &self.child.id().to_string()]).status().unwrap().success());
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// The relay's resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
