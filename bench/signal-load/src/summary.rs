//! `summarize`: medians over repeated runs, ours ÷ baseline ratios, PASS/FAIL.
//!
//! Load scenarios pass when our median throughput is at least `--throughput-target` times
//! the baseline's and our median p99 latency is no worse than the baseline's. Idle scenarios
//! pass when every client joined and our median RSS is under `--idle-rss-target-mb`.

use clap::Args;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SummaryArgs {
    /// File holding `RESULT …` lines (other lines are ignored).
    file: PathBuf,
    /// Label of the server under test.
    #[arg(long, default_value = "switchboard")]
    ours: String,
    /// Label of the baseline server.
    #[arg(long, default_value = "node")]
    baseline: String,
    /// Required throughput ratio, ours ÷ baseline.
    #[arg(long, default_value_t = 5.0)]
    throughput_target: f64,
    /// Required ceiling for our RSS in the idle scenario, in MiB.
    #[arg(long, default_value_t = 200.0)]
    idle_rss_target_mb: f64,
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
    /// Median of a numeric field over the runs that have it.
    fn median(&self, key: &str) -> Option<f64> {
        let mut values: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|f| f.get(key)?.parse().ok())
            .collect();
        median(&mut values)
    }

    fn sum(&self, key: &str) -> u64 {
        self.runs
            .iter()
            .filter_map(|f| f.get(key)?.parse::<u64>().ok())
            .sum()
    }

    fn min(&self, key: &str) -> Option<u64> {
        self.runs
            .iter()
            .filter_map(|f| f.get(key)?.parse::<u64>().ok())
            .min()
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
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn fmt(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) => format!("{v:.decimals$}"),
        None => "-".into(),
    }
}

fn ratio(ours: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (ours, base) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Prints the summary; returns whether every target was met.
pub fn run(args: &SummaryArgs) -> Result<bool, String> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let results = parse(&text);
    if results.is_empty() {
        return Err(format!("no RESULT lines in {}", args.file.display()));
    }
    let mut scenarios: Vec<&str> = Vec::new();
    for r in &results {
        if let Some(s) = r.get("scenario")
            && !scenarios.contains(&s.as_str())
        {
            scenarios.push(s);
        }
    }
    let runs_of = |scenario: &str, server: &str| Runs {
        runs: results
            .iter()
            .filter(|r| {
                r.get("scenario").map(String::as_str) == Some(scenario)
                    && r.get("server").map(String::as_str) == Some(server)
            })
            .collect(),
    };

    let (ours, base) = (args.ours.as_str(), args.baseline.as_str());
    let mut verdicts = Vec::new();
    let load: Vec<&str> = scenarios
        .iter()
        .copied()
        .filter(|s| !s.starts_with("idle"))
        .collect();
    let idle: Vec<&str> = scenarios
        .iter()
        .copied()
        .filter(|s| s.starts_with("idle"))
        .collect();

    if !load.is_empty() {
        println!("Relay throughput and latency (medians; latency = send to receive, ms)");
        println!(
            "{:<18} {:<12} {:>4} {:>11} {:>8} {:>8} {:>8} {:>8} {:>12} {:>7} {:>8}",
            "scenario",
            "server",
            "runs",
            "msgs/s",
            "p50",
            "p90",
            "p99",
            "CPU s",
            "msgs/CPU-s",
            "lost",
            "problems"
        );
        for scenario in &load {
            let a = runs_of(scenario, ours);
            let b = runs_of(scenario, base);
            for (server, r) in [(ours, &a), (base, &b)] {
                println!(
                    "{:<18} {:<12} {:>4} {:>11} {:>8} {:>8} {:>8} {:>8} {:>12} {:>7} {:>8}",
                    scenario,
                    server,
                    r.runs.len(),
                    fmt(r.median("msgs_per_s"), 0),
                    fmt(r.median("p50_ms"), 2),
                    fmt(r.median("p90_ms"), 2),
                    fmt(r.median("p99_ms"), 2),
                    fmt(r.median("server_cpu_s"), 2),
                    fmt(r.median("msgs_per_cpu_s"), 0),
                    r.sum("lost"),
                    r.sum("problems"),
                );
            }
            let tput = ratio(a.median("msgs_per_s"), b.median("msgs_per_s"));
            println!(
                "{:<18} {:<12} {:>4} {:>10}x {:>7}x {:>7}x {:>7}x {:>8} {:>11}x",
                scenario,
                "ratio",
                "",
                fmt(tput, 2),
                fmt(ratio(a.median("p50_ms"), b.median("p50_ms")), 2),
                fmt(ratio(a.median("p90_ms"), b.median("p90_ms")), 2),
                fmt(ratio(a.median("p99_ms"), b.median("p99_ms")), 2),
                "",
                fmt(
                    ratio(a.median("msgs_per_cpu_s"), b.median("msgs_per_cpu_s")),
                    2
                ),
            );
            let p99_ok =
                matches!((a.median("p99_ms"), b.median("p99_ms")), (Some(x), Some(y)) if x <= y);
            let tput_ok = tput.is_some_and(|t| t >= args.throughput_target);
            let clean = a.sum("problems") == 0;
            verdicts.push((
                format!(
                    "{scenario}: throughput {}x (target >= {}x), p99 {} vs {} ms (target: equal or better){}",
                    fmt(tput, 2),
                    args.throughput_target,
                    fmt(a.median("p99_ms"), 2),
                    fmt(b.median("p99_ms"), 2),
                    if clean { "" } else { ", with client-side problems" }
                ),
                tput_ok && p99_ok && clean,
            ));
        }
        println!("(ratio row: {ours} ÷ {base}; for latency below 1 is better)");
        println!();
    }

    if !idle.is_empty() {
        println!("Idle connections (medians; resident memory of the server process)");
        println!(
            "{:<18} {:<12} {:>4} {:>8} {:>8} {:>12} {:>10} {:>10}",
            "scenario", "server", "runs", "joined", "open", "baseline MB", "RSS MB", "KiB/conn"
        );
        for scenario in &idle {
            let a = runs_of(scenario, ours);
            let b = runs_of(scenario, base);
            for (server, r) in [(ours, &a), (base, &b)] {
                println!(
                    "{:<18} {:<12} {:>4} {:>8} {:>8} {:>12} {:>10} {:>10}",
                    scenario,
                    server,
                    r.runs.len(),
                    r.min("joined").map_or("-".into(), |v| v.to_string()),
                    r.min("open").map_or("-".into(), |v| v.to_string()),
                    fmt(r.median("baseline_mb"), 1),
                    fmt(r.median("rss_mb"), 1),
                    fmt(r.median("kib_per_conn"), 1),
                );
            }
            println!(
                "{:<18} {:<12} {:>4} {:>8} {:>8} {:>12} {:>9}x {:>9}x",
                scenario,
                "ratio",
                "",
                "",
                "",
                "",
                fmt(ratio(a.median("rss_mb"), b.median("rss_mb")), 2),
                fmt(ratio(a.median("kib_per_conn"), b.median("kib_per_conn")), 2),
            );
            let wanted = a.min("clients");
            let all_joined =
                wanted.is_some() && a.min("joined") == wanted && a.min("open") == wanted;
            let rss = a.median("rss_mb");
            verdicts.push((
                format!(
                    "{scenario}: {ours} RSS {} MB with {} of {} clients joined and open (target < {} MB, all joined)",
                    fmt(rss, 1),
                    a.min("open").unwrap_or(0),
                    wanted.unwrap_or(0),
                    args.idle_rss_target_mb
                ),
                all_joined && rss.is_some_and(|r| r < args.idle_rss_target_mb),
            ));
        }
        println!();
    }

    for (line, pass) in &verdicts {
        println!("{} {line}", if *pass { "PASS" } else { "FAIL" });
    }
    Ok(verdicts.iter().all(|(_, pass)| *pass))
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
    fn result_lines_are_parsed_and_others_ignored() {
        let parsed = parse("noise\nRESULT scenario=a server=b msgs_per_s=10.5\n  RESULT run=2\n");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0]["msgs_per_s"], "10.5");
        assert_eq!(parsed[1]["run"], "2");
    }
}
