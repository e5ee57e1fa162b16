//! `summarize`: medians over repeated runs, ours ÷ baseline ratios, PASS/FAIL.
//!
//! A scenario passes when our median relay efficiency (packets relayed per server CPU
//! second) is at least `--target` times the baseline's and none of our runs lost a packet.

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
    #[arg(long, default_value = "coturn")]
    baseline: String,
    /// Required ratio of packets per server CPU second, ours ÷ baseline.
    #[arg(long, default_value_t = 1.5)]
    target: f64,
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

/// Prints the table; returns whether every scenario with both servers passed.
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
        "TURN relay over UDP (medians; relayed = packets the server forwarded, both directions)"
    );
    println!(
        "{:<18} {:<12} {:>4} {:>10} {:>9} {:>9} {:>8} {:>13} {:>12} {:>9} {:>9}",
        "scenario",
        "server",
        "runs",
        "relayed/s",
        "loss %",
        "max loss",
        "CPU s",
        "CPU s/Mpkt",
        "pkts/CPU-s",
        "rtt p50",
        "rtt p99"
    );
    let mut verdicts = Vec::new();
    let mut all_pass = true;
    for scenario in &scenarios {
        let ours = runs(scenario, &args.ours);
        let baseline = runs(scenario, &args.baseline);
        for (server, set) in [(&args.ours, &ours), (&args.baseline, &baseline)] {
            if set.runs.is_empty() {
                continue;
            }
            println!(
                "{:<18} {:<12} {:>4} {:>10} {:>9} {:>9} {:>8} {:>13} {:>12} {:>9} {:>9}",
                scenario,
                server,
                set.runs.len(),
                cell(set.median("relayed_pps"), 0),
                cell(set.median("loss_pct"), 3),
                cell(set.max("loss_pct"), 3),
                cell(set.median("cpu_s"), 2),
                cell(set.median("cpu_s_per_mpkt"), 2),
                cell(set.median("pkts_per_cpu_s"), 0),
                cell(set.median("rtt_p50_ms"), 2),
                cell(set.median("rtt_p99_ms"), 2),
            );
        }
        if ours.runs.is_empty() || baseline.runs.is_empty() {
            continue;
        }
        let efficiency = (
            ours.median("pkts_per_cpu_s"),
            baseline.median("pkts_per_cpu_s"),
        );
        println!(
            "{:<18} {:<12} {:>4} {:>10} {:>9} {:>9} {:>8} {:>13} {:>12}",
            scenario,
            "ratio",
            "",
            ratio(ours.median("relayed_pps"), baseline.median("relayed_pps")),
            "",
            "",
            ratio(ours.median("cpu_s"), baseline.median("cpu_s")),
            ratio(
                ours.median("cpu_s_per_mpkt"),
                baseline.median("cpu_s_per_mpkt")
            ),
            ratio(efficiency.0, efficiency.1),
        );
        let max_loss = ours.max("loss_pct").unwrap_or(f64::INFINITY);
        let pass = match efficiency {
            (Some(a), Some(b)) if b > 0.0 => a / b >= args.target && max_loss == 0.0,
            _ => false,
        };
        all_pass &= pass;
        verdicts.push(format!(
            "{} {scenario}: {} per CPU second {} (target >= {:.1}x), {} max loss {}% in {} runs",
            if pass { "PASS" } else { "FAIL" },
            args.ours,
            ratio(efficiency.0, efficiency.1),
            args.target,
            args.ours,
            cell(ours.max("loss_pct"), 3),
            ours.runs.len(),
        ));
    }
    println!(
        "(ratio row: {} ÷ {}; for CPU s/Mpkt below 1 is better)",
        args.ours, args.baseline
    );
    println!();
    for verdict in verdicts {
        println!("{verdict}");
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
        let lines = parse("noise\nRESULT scenario=a server=b pkts_per_cpu_s=10\n");
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["pkts_per_cpu_s"], "10");
    }
}
