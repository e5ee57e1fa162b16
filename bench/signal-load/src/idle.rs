//! `idle`: N clients connect, join rooms of K over protocol v1 and then stay silent (they
//! still answer the server's keep-alive pings). Reports the server's resident memory before
//! and with all of them connected.

use crate::Target;
use crate::conn;
use crate::report::{self, Report};
use clap::Args;
use futures_util::StreamExt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Idle clients need no large buffers; this keeps the load tool itself small.
const READ_BUFFER: usize = 4 * 1024;

#[derive(Args, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    target: Target,
    /// Client connections.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Clients per room.
    #[arg(long, default_value_t = 4)]
    room_size: usize,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Local loopback addresses to connect from, round-robin (default: chosen by the system).
    #[arg(long, value_delimiter = ',')]
    bind: Vec<IpAddr>,
    /// Seconds to wait, everyone connected, before reading the server's memory.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
}

pub async fn run(args: IdleArgs) -> Result<Report, String> {
    let (n, k) = (args.clients, args.room_size);
    if !(1..=20_000).contains(&n) {
        return Err("--clients must be between 1 and 20000".into());
    }
    if !(1..=64).contains(&k) {
        return Err("--room-size must be between 1 and 64".into());
    }
    if !(0.0..=60.0).contains(&args.settle) {
        return Err("--settle must be between 0 and 60 seconds".into());
    }
    let pid = args.target.pid;
    let baseline = pid.and_then(report::rss_mib);
    let prefix = format!("idle{}r{}", std::process::id(), args.target.run);
    let url = args.target.url.as_str();
    let bind = &args.bind;
    let began = Instant::now();
    let results = conn::setup_all(n, args.connect_concurrency, |i| {
        let room = format!("{prefix}-{}", i / k);
        let local = (!bind.is_empty()).then(|| bind[i % bind.len()]);
        async move {
            let mut ws = conn::connect(url, local, READ_BUFFER).await?;
            conn::join(&mut ws, &room, &format!("idle {i}")).await?;
            Ok(ws)
        }
    })
    .await;
    let setup_secs = began.elapsed().as_secs_f64();
    let mut first_error = None;
    let mut idle = Vec::with_capacity(n);
    for result in results {
        match result {
            // Keep reading, so pings are answered and the connection stays healthy.
            Ok(mut ws) => idle.push(tokio::spawn(async move {
                while let Some(Ok(_)) = ws.next().await {}
            })),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let joined = idle.len();
    if let Some(e) = &first_error {
        eprintln!(
            "signal-load: {} of {n} clients failed; first: {e}",
            n - joined
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let still_open = idle.iter().filter(|task| !task.is_finished()).count();
    let rss = pid.and_then(report::rss_mib);
    for task in &idle {
        task.abort();
    }

    let mut report = Report::new(&format!("idle-{n}"), &args.target);
    report.int("clients", n as u64);
    report.int("joined", joined as u64);
    report.int("open", still_open as u64);
    report.num("setup_s", setup_secs);
    report.maybe("baseline_mb", baseline);
    report.maybe("rss_mb", rss);
    report.maybe(
        "kib_per_conn",
        match (baseline, rss) {
            (Some(before), Some(after)) if joined > 0 => {
                Some((after - before) * 1024.0 / joined as f64)
            }
            _ => None,
        },
    );
    Ok(report)
}
