//! The numbers the runs collect, and the Markdown report made of them: each figure as
//! reference / ferrymail / ratio, with the median and the spread (min–max) over the runs.

use std::collections::BTreeMap;
use std::fmt::Write;

pub const REFERENCE: &str = "Postfix + Dovecot";
pub const FERRYMAIL: &str = "ferrymail";

/// A measured quantity: how to print it and what it is held against.
pub struct Metric {
    pub key: &'static str,
    pub label: String,
    pub unit: &'static str,
    /// The goal as text and whether ferrymail's median meets it (given ferrymail's and the
    /// reference's medians).
    pub goal: Option<(&'static str, fn(f64, Option<f64>) -> bool)>,
}

#[derive(Default)]
pub struct Results {
    /// (metric key, system) -> one value per run.
    samples: BTreeMap<(String, String), Vec<f64>>,
    pub notes: Vec<String>,
}

impl Results {
    pub fn add(&mut self, key: &str, system: &str, value: f64) {
        self.samples.entry((key.to_string(), system.to_string())).or_default().push(value);
    }

    fn values(&self, key: &str, system: &str) -> Option<&Vec<f64>> {
        self.samples.get(&(key.to_string(), system.to_string())).filter(|v| !v.is_empty())
    }

    pub fn median(&self, key: &str, system: &str) -> Option<f64> {
        self.values(key, system).map(|v| median(v))
    }

    /// A table of these metrics.
    pub fn table(&self, metrics: &[Metric]) -> String {
        let mut out = String::from("| | Postfix + Dovecot | ferrymail | ferrymail ÷ reference | goal |\n|---|---|---|---|---|\n");
        for metric in metrics {
            let cell = |system: &str| match self.values(metric.key, system) {
                Some(values) => format!("{} {}", spread(values), metric.unit),
                None => "—".to_string(),
            };
            let (reference, ferrymail) = (self.median(metric.key, REFERENCE), self.median(metric.key, FERRYMAIL));
            let ratio = match (reference, ferrymail) {
                (Some(r), Some(f)) if r > 0.0 => format!("{:.2}", f / r),
                _ => "—".to_string(),
            };
            let goal = match (&metric.goal, ferrymail) {
                (Some((text, met)), Some(f)) => format!("{text}: {}", if met(f, reference) { "**met**" } else { "**not met**" }),
                (Some((text, _)), None) => text.to_string(),
                (None, _) => String::new(),
            };
            let _ = writeln!(out, "| {} | {} | {} | {ratio} | {goal} |", metric.label, cell(REFERENCE), cell(FERRYMAIL));
        }
        out
    }

    /// Every sample, for results.json.
    pub fn json(&self) -> serde_json::Value {
        let mut figures = serde_json::Map::new();
        for ((key, system), values) in &self.samples {
            let entry = figures.entry(key.clone()).or_insert_with(|| serde_json::json!({}));
            entry[system] = serde_json::json!(values);
        }
        serde_json::json!({ "samples": figures, "notes": self.notes })
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// `median (min–max)`, or the one value.
fn spread(values: &[f64]) -> String {
    let (min, max) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    if values.len() == 1 {
        number(values[0])
    } else {
        format!("{} ({}–{})", number(median(values)), number(min), number(max))
    }
}

/// Three significant digits or so, without pretending more.
fn number(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}
