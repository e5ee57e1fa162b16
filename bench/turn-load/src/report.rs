//! Result lines and readings from `/proc`: process CPU time and per-socket receive drops.
//!
//! Every run prints one line `RESULT key=value …` (values never contain spaces), which
//! `summarize` groups by `scenario` and `server`. `bench/turn.sh` writes lines of the same
//! shape for its `turnutils_uclient` runs.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;

use hdrhistogram::Histogram;

/// Linux reports process times in clock ticks of `USER_HZ`, which is 100 on every
/// architecture the kernel supports for user space.
const USER_HZ: f64 = 100.0;

/// One run's figures, in print order.
#[derive(Default)]
pub struct Report {
    fields: Vec<(&'static str, String)>,
}

impl Report {
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

    /// Round-trip time percentiles in milliseconds from a histogram of microseconds.
    pub fn rtt(&mut self, hist: &Histogram<u64>) {
        if hist.is_empty() {
            for key in ["rtt_p50_ms", "rtt_p99_ms", "rtt_max_ms"] {
                self.fields.push((key, "-".into()));
            }
            return;
        }
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        self.num("rtt_p50_ms", ms(0.50));
        self.num("rtt_p99_ms", ms(0.99));
        self.num("rtt_max_ms", hist.max() as f64 / 1000.0);
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

/// Round-trip times in microseconds, 1 µs to 60 s, three significant digits.
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

/// Datagrams the kernel dropped because a socket's receive buffer was full, summed over
/// the UDP sockets bound to any of `ports` (every address), from `/proc/net/udp` and
/// `/proc/net/udp6`. The counters live as long as the sockets: take a reading before and
/// after and subtract.
pub fn udp_drops(ports: &HashSet<u16>) -> u64 {
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| drops_in(&text, ports))
        .sum()
}

fn drops_in(table: &str, ports: &HashSet<u16>) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (_, port) = fields.get(1)?.rsplit_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            if !ports.contains(&port) {
                return None;
            }
            fields.last()?.parse::<u64>().ok()
        })
        .sum()
}

/// The ports of some socket addresses.
pub fn ports<'a>(addrs: impl IntoIterator<Item = &'a SocketAddr>) -> HashSet<u16> {
    addrs.into_iter().map(SocketAddr::port).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_has_no_spaces_in_values() {
        let mut report = Report::default();
        report.text("server", "co turn");
        report.int("sent", 7);
        report.num("loss_pct", 0.5);
        report.maybe("cpu_s", None);
        assert_eq!(
            report.to_string(),
            "RESULT server=co_turn sent=7 loss_pct=0.500 cpu_s=-"
        );
    }

    #[test]
    fn own_cpu_reading_works() {
        assert!(own_cpu_seconds().is_some());
    }

    #[test]
    fn drops_are_summed_by_port() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            2484: 0100007F:0D96 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000052929885 5\n\
            2485: 0100007F:0D96 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2 2 0000000052929886 2\n\
            2545: 0100007F:C3C2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 00000000b6afb511 9\n";
        let ports: HashSet<u16> = [3478].into();
        assert_eq!(drops_in(table, &ports), 7);
        assert_eq!(drops_in(table, &HashSet::new()), 0);
    }
}
