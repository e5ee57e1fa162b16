//! Result lines and readings from `/proc`: CPU time, resident memory, allowed CPUs and the
//! receive drops of a process's UDP sockets.
//!
//! Every run prints one line `RESULT key=value …` (values never contain spaces), which
//! `summarize` groups by `scenario` and `server`, as in `signal-load` and `turn-load`.

use std::collections::HashSet;
use std::fmt;

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

    /// A reading that may be missing (no pid given, nothing to divide by): `-` then.
    pub fn maybe(&mut self, key: &'static str, value: Option<f64>) {
        match value {
            Some(v) => self.num(key, v),
            None => self.fields.push((key, "-".into())),
        }
    }

    /// p50, p99 and max in milliseconds from a histogram of microseconds, as
    /// `<prefix>_p50_ms` and so on.
    pub fn delays(&mut self, keys: [&'static str; 3], hist: &Histogram<u64>) {
        let values = (!hist.is_empty()).then(|| {
            [
                hist.value_at_quantile(0.50),
                hist.value_at_quantile(0.99),
                hist.max(),
            ]
        });
        for (i, key) in keys.into_iter().enumerate() {
            self.maybe(key, values.map(|v| v[i] as f64 / 1000.0));
        }
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

/// The machine's one-minute load average (`/proc/loadavg`): how busy the host was.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Resident memory of a process in MiB (`VmRSS`).
pub fn rss_mib(pid: u32) -> Option<f64> {
    let kib = status_field(pid, "VmRSS:")?
        .split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()?;
    Some(kib / 1024.0)
}

/// How many CPUs the process may run on (`Cpus_allowed_list`, e.g. `1` or `0-1,3`).
pub fn allowed_cpus(pid: u32) -> Option<usize> {
    count_cpus(&status_field(pid, "Cpus_allowed_list:")?)
}

fn status_field(pid: u32, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_owned())
}

fn count_cpus(list: &str) -> Option<usize> {
    let mut n = 0;
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?,
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// Datagrams the kernel dropped (receive buffer full) on the UDP sockets a process holds,
/// found by socket inode in `/proc/net/udp`. `"self"` reads this process. The counters
/// live as long as the sockets: take a reading before and after and subtract.
pub fn udp_drops(pid: &str) -> u64 {
    let inodes = socket_inodes(pid);
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|text| drops_in(&text, &inodes))
        .sum()
}

fn socket_inodes(pid: &str) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(|entry| {
        let target = std::fs::read_link(entry.ok()?.path()).ok()?;
        let text = target.to_str()?;
        text.strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

fn drops_in(table: &str, inodes: &HashSet<u64>) -> u64 {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = fields.get(9)?.parse().ok()?;
            if !inodes.contains(&inode) {
                return None;
            }
            fields.last()?.parse::<u64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_has_no_spaces_in_values() {
        let mut report = Report::default();
        report.text("server", "jan us");
        report.int("sent", 7);
        report.maybe("cpu_s", None);
        report.delays(["a", "b", "c"], &Histogram::new(3).unwrap());
        assert_eq!(
            report.to_string(),
            "RESULT server=jan_us sent=7 cpu_s=- a=- b=- c=-"
        );
    }

    #[test]
    fn readings_of_this_process() {
        let pid = std::process::id();
        assert!(own_cpu_seconds().is_some());
        assert!(load_average().is_some());
        assert!(rss_mib(pid).is_some_and(|m| m > 0.0));
        assert!(allowed_cpus(pid).is_some_and(|n| n >= 1));
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(udp_drops("self"), 0);
        drop(socket);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(count_cpus("1"), Some(1));
        assert_eq!(count_cpus("0-1"), Some(2));
        assert_eq!(count_cpus("0-1,3,5-7"), Some(6));
        assert_eq!(count_cpus(""), None);
    }

    #[test]
    fn drops_are_summed_by_inode() {
        let table = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
            2484: 0100007F:0D96 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 11 2 0000000052929885 5\n\
            2485: 0100007F:0D97 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 12 2 0000000052929886 2\n\
            2545: 0100007F:C3C2 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 13 2 00000000b6afb511 9\n";
        let inodes: HashSet<u64> = [11, 13].into();
        assert_eq!(drops_in(table, &inodes), 14);
        assert_eq!(drops_in(table, &HashSet::new()), 0);
    }
}
