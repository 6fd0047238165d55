//! What the machine has to spare, read when an account is about to be created: the accounts
//! policy refuses new accounts when the relay is short of CPU, memory or disk.

use std::path::Path;

use crate::policy::Resources;

/// Read the 1-minute load average, available memory and free disk under `data_dir`.
/// A figure that cannot be read is reported as plentiful: never refuse because of a probe.
pub fn current(data_dir: &Path) -> Resources {
    Resources { load_1m: load_1m().unwrap_or(0.0), available_memory: available_memory().unwrap_or(u64::MAX), free_disk: free_disk(data_dir).unwrap_or(u64::MAX) }
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
    fn figures_are_read() {
        let r = super::current(std::path::Path::new("/tmp/does/not/exist"));
        assert!(r.load_1m >= 0.0);
        assert!(r.available_memory > 0 && r.available_memory < u64::MAX, "read from /proc/meminfo");
        assert!(r.free_disk > 0 && r.free_disk < u64::MAX, "read with statvfs");
    }
}
