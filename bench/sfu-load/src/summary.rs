//! `summarize`: medians over repeated runs, ours ÷ baseline ratios, PASS/FAIL.
//!
//! The targets (from the product issue):
//!
//! - **CPU**: our median server CPU per forwarded packet at most `--cpu-target` (0.5)
//!   times the baseline's, per scenario, judged only under the same load (every client up
//!   in every run, forwarded rates within 10%), `NOT COMPARABLE` otherwise;
//! - **delay**: our median p99 forwarding delay under `--delay-target-ms` (1 ms); the
//!   target speaks of a server at 50% CPU, so each verdict says at what CPU it was met;
//! - **fan-out**: one publisher to 400 subscribers at 1.5 Mbit/s without loss, judged on
//!   every `fanout-N` scenario with N ≥ 400 (zero loss in every run, every client ready),
//!   and reported as not run otherwise.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;

#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// File holding `RESULT …` lines (other lines are ignored).
    file: PathBuf,
    /// Label of the server under test.
    #[arg(long, default_value = "switchboard")]
    ours: String,
    /// Label of the baseline server.
    #[arg(long, default_value = "janus")]
    baseline: String,
    /// Highest acceptable ratio of CPU seconds per forwarded packet, ours ÷ baseline.
    #[arg(long, default_value_t = 0.5)]
    cpu_target: f64,
    /// p99 forwarding delay to stay under, ms.
    #[arg(long, default_value_t = 1.0)]
    delay_target_ms: f64,
    /// Subscribers the fan-out target asks for.
    #[arg(long, default_value_t = 400)]
    fanout_target: u64,
    /// Video bit rate the fan-out target asks for, kbit/s.
    #[arg(long, default_value_t = 1500)]
    fanout_kbps: u64,
    /// Exit non-zero when a target is missed.
    #[arg(long)]
    pub strict: bool,
}

type Fields = HashMap<String, String>;

/// Runs of one scenario against one server.
struct Runs<'a> {
    runs: Vec<&'a Fields>,
}

impl Runs<'_> {
    fn values(&self, key: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|f| f.get(key)?.parse().ok())
            .collect()
    }

    fn median(&self, key: &str) -> Option<f64> {
        median(&mut self.values(key))
    }

    fn max(&self, key: &str) -> Option<f64> {
        self.values(key).into_iter().reduce(f64::max)
    }

    fn min(&self, key: &str) -> Option<f64> {
        self.values(key).into_iter().reduce(f64::min)
    }

    /// Whether every client of every run was set up and receiving.
    fn all_ready(&self) -> bool {
        self.runs
            .iter()
            .all(|f| f.get("ready").is_some() && f.get("ready") == f.get("clients"))
    }
}

pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

pub fn parse(text: &str) -> Vec<Fields> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("RESULT "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn ratio(ours: Option<f64>, baseline: Option<f64>) -> String {
    match (ours, baseline) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

/// Column titles and widths (the first two left-aligned, the rest right-aligned).
const COLUMNS: [(&str, usize); 18] = [
    ("scenario", 14),
    ("server", 12),
    ("runs", 4),
    ("ready", 7),
    ("fwd pkt/s", 10),
    ("Mbit/s", 7),
    ("+RTP %", 6),
    ("loss %", 7),
    ("max loss", 8),
    ("CPU %", 6),
    ("CPU s/Mpkt", 11),
    ("p50 ms", 7),
    ("p99 ms", 7),
    ("app p99", 8),
    ("KiB/sub", 8),
    ("load s/Mpkt", 11),
    ("drops", 9),
    ("loadavg", 7),
];

fn row(cells: [String; 18]) {
    let line: Vec<String> = cells
        .iter()
        .zip(COLUMNS)
        .enumerate()
        .map(|(i, (text, (_, width)))| {
            if i < 2 {
                format!("{text:<width$}")
            } else {
                format!("{text:>width$}")
            }
        })
        .collect();
    println!("{}", line.join(" ").trim_end());
}

/// Prints the table; returns whether every verdict passed.
pub fn run(args: &SummaryArgs) -> Result<bool, String> {
    let text =
        std::fs::read_to_string(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let lines = parse(&text);
    let mut scenarios: Vec<&str> = Vec::new();
    for fields in &lines {
        if let Some(scenario) = fields.get("scenario")
            && !scenarios.contains(&scenario.as_str())
        {
            scenarios.push(scenario);
        }
    }
    let runs = |scenario: &str, server: &str| Runs {
        runs: lines
            .iter()
            .filter(|f| {
                f.get("scenario").is_some_and(|s| s == scenario)
                    && f.get("server").is_some_and(|s| s == server)
            })
            .collect(),
    };
    println!(
        "SFU forwarding (medians; fwd = media packets that reached subscribers, +RTP = padding, probes and resends on top; delay = publisher's send to the kernel's receive at the subscriber;\n\
         drops = most datagrams the kernel dropped for a full receive buffer in one run, server/load tool; loadavg = the host's 1-minute load average)"
    );
    row(COLUMNS.map(|(title, _)| title.to_owned()));
    let mut verdicts = Vec::new();
    let mut all_pass = true;
    let mut fanout_judged = false;
    let mut compared = false;
    for scenario in &scenarios {
        let ours = runs(scenario, &args.ours);
        let baseline = runs(scenario, &args.baseline);
        for (server, set) in [(&args.ours, &ours), (&args.baseline, &baseline)] {
            if set.runs.is_empty() {
                continue;
            }
            let ready = match (set.min("ready"), set.median("clients")) {
                (Some(r), Some(c)) => format!("{r:.0}/{c:.0}"),
                _ => "-".into(),
            };
            row([
                scenario.to_string(),
                server.clone(),
                set.runs.len().to_string(),
                ready,
                cell(set.median("fwd_pps"), 0),
                cell(set.median("rtp_mbps"), 1),
                cell(set.median("extra_rtp_pct"), 1),
                cell(set.median("loss_pct"), 3),
                cell(set.max("loss_pct"), 3),
                cell(set.median("cpu_util_pct"), 1),
                cell(set.median("cpu_s_per_mpkt"), 2),
                cell(set.median("delay_p50_ms"), 3),
                cell(set.median("delay_p99_ms"), 3),
                cell(set.median("app_p99_ms"), 2),
                cell(set.median("kib_per_sub"), 0),
                cell(set.median("load_cpu_s_per_mpkt"), 2),
                format!(
                    "{}/{}",
                    cell(set.max("server_drops"), 0),
                    cell(set.max("load_drops"), 0)
                ),
                cell(set.median("loadavg"), 1),
            ]);
        }
        if !ours.runs.is_empty() && !baseline.runs.is_empty() {
            compared = true;
            row([
                scenario.to_string(),
                "ratio".into(),
                String::new(),
                String::new(),
                ratio(ours.median("fwd_pps"), baseline.median("fwd_pps")),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                ratio(ours.median("cpu_util_pct"), baseline.median("cpu_util_pct")),
                ratio(
                    ours.median("cpu_s_per_mpkt"),
                    baseline.median("cpu_s_per_mpkt"),
                ),
                ratio(ours.median("delay_p50_ms"), baseline.median("delay_p50_ms")),
                ratio(ours.median("delay_p99_ms"), baseline.median("delay_p99_ms")),
                ratio(ours.median("app_p99_ms"), baseline.median("app_p99_ms")),
                ratio(ours.median("kib_per_sub"), baseline.median("kib_per_sub")),
                String::new(),
                String::new(),
                String::new(),
            ]);
            let cpu = (
                ours.median("cpu_s_per_mpkt"),
                baseline.median("cpu_s_per_mpkt"),
            );
            let forwarded = (ours.median("fwd_pps"), baseline.median("fwd_pps"));
            // Per-packet costs compare only under the same load: every client up in every
            // run, and forwarded rates within 10% of each other.
            let same_load = ours.all_ready()
                && baseline.all_ready()
                && matches!(forwarded, (Some(a), Some(b)) if b > 0.0 && (a / b - 1.0).abs() <= 0.1);
            let pass = same_load
                && matches!(cpu, (Some(a), Some(b)) if b > 0.0 && a / b <= args.cpu_target);
            all_pass &= pass;
            let verdict = match (pass, same_load) {
                (true, _) => "PASS",
                (false, true) => "FAIL",
                (false, false) => "NOT COMPARABLE",
            };
            let note = if same_load {
                String::new()
            } else {
                format!(
                    "; not the same load: {} forwarded {} pkt/s, {} {} pkt/s, or some client was not ready",
                    args.ours,
                    cell(forwarded.0, 0),
                    args.baseline,
                    cell(forwarded.1, 0),
                )
            };
            verdicts.push(format!(
                "{verdict} {scenario} CPU per forwarded packet: {} ÷ {} = {} (target <= {:.2}x){note}",
                args.ours,
                args.baseline,
                ratio(cpu.0, cpu.1),
                args.cpu_target,
            ));
        }
        if ours.runs.is_empty() {
            continue;
        }
        let p99 = ours.median("delay_p99_ms");
        let util = ours.median("cpu_util_pct");
        let pass = p99.is_some_and(|d| d < args.delay_target_ms);
        all_pass &= pass;
        let at = match util {
            Some(u) if u < 50.0 => format!("at {u:.0}% server CPU, below the target's 50%"),
            Some(u) => format!("at {u:.0}% server CPU"),
            None => "server CPU unknown".into(),
        };
        verdicts.push(format!(
            "{} {scenario} p99 forwarding delay: {} {} ms (target < {} ms at 50% CPU; {at})",
            if pass { "PASS" } else { "FAIL" },
            args.ours,
            cell(p99, 3),
            args.delay_target_ms,
        ));
        let subscribers = ours.min("subscribers").unwrap_or(0.0) as u64;
        let kbps = ours.min("video_kbps").unwrap_or(0.0) as u64;
        if scenario.starts_with("fanout")
            && subscribers >= args.fanout_target
            && kbps >= args.fanout_kbps
        {
            fanout_judged = true;
            let max_loss = ours.max("loss_pct");
            let all_ready = ours.all_ready();
            let pass = max_loss == Some(0.0) && all_ready;
            all_pass &= pass;
            verdicts.push(format!(
                "{} {scenario} fan-out: 1 publisher to {subscribers} subscribers at {kbps} kbit/s, max loss {}% in {} runs, every client ready: {} (target: no loss)",
                if pass { "PASS" } else { "FAIL" },
                cell(max_loss, 3),
                ours.runs.len(),
                if all_ready { "yes" } else { "no" },
            ));
        }
    }
    if compared {
        println!(
            "(ratio row: {} ÷ {}; below 1 is better for CPU, delay and memory)",
            args.ours, args.baseline
        );
    }
    println!();
    for verdict in verdicts {
        println!("{verdict}");
    }
    if !fanout_judged {
        all_pass = false;
        println!(
            "NOT RUN fan-out target: no fanout scenario with >= {} subscribers at >= {} kbit/s in this file",
            args.fanout_target, args.fanout_kbps
        );
    }
    Ok(all_pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn parses_result_lines_only() {
        let lines = parse("noise\nRESULT scenario=a server=b cpu_s_per_mpkt=10\n");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["cpu_s_per_mpkt"], "10");
    }
}
