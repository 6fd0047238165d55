//! What the machine has to spare, read when an account is about to be created: the accounts
//! policy refuses new accounts when the relay is short of CPU, memory or disk.

use std::path::Path;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::{Reply, Resources};

/// Read the 1-minute load average, available memory and free disk under `data_dir`.
/// A figure that cannot be read is reported as plentiful: never refuse because of a probe.
pub fn current(data_dir: &Path) -> Resources {
    Resources { load_1m: load_1m().unwrap_or(0.0), available_memory: available_memory().unwrap_or(u64::MAX), free_disk: free_disk(data_dir).unwrap_or(u64::MAX) }
}

/// What the operator set that makes the relay refuse new accounts: the kill switch and the
/// thresholds the accounts policy reads (SPEC §1), to say why a refusal happened.
#[derive(Debug, Clone)]
pub struct Thresholds {
    accept_new_accounts: bool,
    max_load_1m: f64,
    min_available_memory: u64,
    min_free_disk_space: u64,
}

impl Thresholds {
    pub fn new(config: &Config) -> Thresholds {
        Thresholds {
            accept_new_accounts: config.accept_new_accounts,
            max_load_1m: config.max_load_1m,
            min_available_memory: config.min_available_memory.0,
            min_free_disk_space: config.min_free_disk_space.0,
        }
    }

    /// Why an account was refused with `resources` at hand: the kill switch, a resource the
    /// machine is short of, or else a rule of the policies.
    pub fn reason(&self, resources: &Resources) -> &'static str {
        if !self.accept_new_accounts {
            "kill_switch"
        } else if resources.load_1m > self.max_load_1m {
            "load"
        } else if resources.available_memory < self.min_available_memory {
            "memory"
        } else if resources.free_disk < self.min_free_disk_space {
            "disk"
        } else {
            "policy"
        }
    }

    /// Say once, in the log (without the address) and in
    /// `ferrymail_accounts_refused_total{reason}`, why an account was not created: the app
    /// shows its user only "try again later".
    pub fn report_refusal(&self, metrics: &Metrics, via: &'static str, resources: &Resources, reply: &Reply) {
        let reason = self.reason(resources);
        metrics.inc("ferrymail_accounts_refused_total", &[("reason", reason)]);
        tracing::info!(reason, via, code = reply.code, enhanced = %reply.enhanced, "account creation refused");
    }
}

fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn free_disk(dir: &Path) -> Option<u64> {
    // The data dir may not exist yet on first start; its nearest existing ancestor is on the
    // same filesystem in every sane layout.
    let existing = dir.ancestors().find(|d| d.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    #[test]
    fn refusals_are_explained() {
        let config = crate::config::Config::parse("max_load_1m = 2.0\nmin_available_memory = 100\nmin_free_disk_space = 100").unwrap().config;
        let thresholds = super::Thresholds::new(&config);
        let plenty = crate::policy::Resources { load_1m: 0.5, available_memory: 1000, free_disk: 1000 };
        assert_eq!(thresholds.reason(&plenty), "policy");
        assert_eq!(thresholds.reason(&crate::policy::Resources { load_1m: 3.0, ..plenty.clone() }), "load");
        assert_eq!(thresholds.reason(&crate::policy::Resources { available_memory: 10, ..plenty.clone() }), "memory");
        assert_eq!(thresholds.reason(&crate::policy::Resources { free_disk: 10, ..plenty.clone() }), "disk");
        let closed = crate::config::Config::parse("accept_new_accounts = false").unwrap().config;
        assert_eq!(super::Thresholds::new(&closed).reason(&plenty), "kill_switch");
    }

    #[test]
    fn figures_are_read() {
        let r = super::current(std::path::Path::new("/tmp/does/not/exist"));
        assert!(r.load_1m >= 0.0);
        assert!(r.available_memory > 0 && r.available_memory < u64::MAX, "read from /proc/meminfo");
        assert!(r.free_disk > 0 && r.free_disk < u64::MAX, "read with statvfs");
    }
}
