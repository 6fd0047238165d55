//! Counters of what the relay did, rendered in the Prometheus text format.
//! Labels name policies, hooks and outcomes — never an address, never an IP.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default, Debug)]
pub struct Metrics {
    counters: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl Metrics {
    pub fn inc(&self, name: &'static str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], n: u64) {
        let key = (name, render_labels(labels));
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        *counters.entry(key).or_default() += n;
    }

    /// The current value of one counter (0 if never counted).
    pub fn get(&self, name: &'static str, labels: &[(&str, &str)]) -> u64 {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters.get(&(name, render_labels(labels))).copied().unwrap_or(0)
    }

    /// All counters in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        let mut last = "";
        for ((name, labels), value) in counters.iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let _ = writeln!(out, "{name}{labels} {value}");
        }
        out
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")))
        .collect();
    format!("{{{}}}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders() {
        let m = Metrics::default();
        m.inc("policy_failures_total", &[("policy", "enc\"ryption"), ("kind", "trap")]);
        m.add("policy_failures_total", &[("policy", "enc\"ryption"), ("kind", "trap")], 2);
        assert_eq!(m.get("policy_failures_total", &[("policy", "enc\"ryption"), ("kind", "trap")]), 3);
        assert_eq!(
            m.render(),
            "# TYPE policy_failures_total counter\npolicy_failures_total{policy=\"enc\\\"ryption\",kind=\"trap\"} 3\n"
        );
    }
}
