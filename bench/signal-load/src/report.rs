//! Result lines, latency histograms and readings from `/proc`.
//!
//! Every run prints one line `RESULT key=value …` (values never contain spaces), which
//! `summarize` groups by `scenario` and `server`.

use crate::Target;
use hdrhistogram::Histogram;
use std::fmt;

/// Linux reports process times in clock ticks of `USER_HZ`, which is 100 on every
/// architecture the kernel supports for user space.
const USER_HZ: f64 = 100.0;

/// One run's figures, in print order.
pub struct Report {
    fields: Vec<(&'static str, String)>,
}

impl Report {
    pub fn new(scenario: &str, target: &Target) -> Self {
        let mut report = Report { fields: Vec::new() };
        report.text("scenario", scenario);
        report.text("server", &target.server);
        report.int("run", u64::from(target.run));
        report
    }

    pub fn text(&mut self, key: &'static str, value: &str) {
        let clean: String = value
            .chars()
            .map(|c| {
                if c.is_whitespace() || c == '=' {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        self.fields.push((key, clean));
    }

    pub fn int(&mut self, key: &'static str, value: u64) {
        self.fields.push((key, value.to_string()));
    }

    pub fn num(&mut self, key: &'static str, value: f64) {
        self.fields.push((key, format!("{value:.3}")));
    }

    /// A reading that may be missing (no pid given, process gone): `-` then.
    pub fn maybe(&mut self, key: &'static str, value: Option<f64>) {
        match value {
            Some(v) => self.num(key, v),
            None => self.fields.push((key, "-".into())),
        }
    }

    /// Latency percentiles in milliseconds from a histogram of microseconds.
    pub fn latency(&mut self, hist: &Histogram<u64>) {
        if hist.is_empty() {
            for key in ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"] {
                self.fields.push((key, "-".into()));
            }
            return;
        }
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        self.num("p50_ms", ms(0.50));
        self.num("p90_ms", ms(0.90));
        self.num("p99_ms", ms(0.99));
        self.num("p999_ms", ms(0.999));
        self.num("max_ms", hist.max() as f64 / 1000.0);
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RESULT")?;
        for (key, value) in &self.fields {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

/// Latencies in microseconds, 1 µs to 60 s, three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// User plus system CPU seconds a process has used so far, all threads together.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_cpu(&format!("/proc/{pid}/stat"))
}

/// The same for this process.
pub fn own_cpu_seconds() -> Option<f64> {
    stat_cpu("/proc/self/stat")
}

fn stat_cpu(path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after the last
    // ')' are positional: state is field 3, utime field 14, stime field 15.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Resident set size of a process in MiB (`VmRSS`).
pub fn rss_mib(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU used by a process between two readings.
pub fn delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_has_no_spaces_in_values() {
        let target = Target {
            url: "ws://127.0.0.1:1/".into(),
            server: "node ws".into(),
            pid: None,
            run: 2,
        };
        let mut report = Report::new("rooms-4x2", &target);
        report.num("msgs_per_s", 1234.5678);
        report.maybe("server_cpu_s", None);
        assert_eq!(
            report.to_string(),
            "RESULT scenario=rooms-4x2 server=node_ws run=2 msgs_per_s=1234.568 server_cpu_s=-"
        );
    }

    #[test]
    fn own_process_readings_work() {
        assert!(own_cpu_seconds().is_some());
        assert!(rss_mib(std::process::id()).unwrap() > 0.0);
    }

    #[test]
    fn latency_percentiles_in_ms() {
        let mut hist = new_histogram();
        for us in 1..=1000u64 {
            hist.record(us * 10).unwrap();
        }
        let target = Target {
            url: String::new(),
            server: "s".into(),
            pid: None,
            run: 1,
        };
        let mut report = Report::new("x", &target);
        report.latency(&hist);
        let line = report.to_string();
        assert!(line.contains("p50_ms=5.0"), "{line}");
        assert!(line.contains("max_ms=10.0"), "{line}");
    }
}
