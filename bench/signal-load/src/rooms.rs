//! `rooms`: N clients join rooms of K over Switchboard protocol v1 and every client sends
//! `candidate` messages round-robin to the other members of its room, each within its own
//! flow-control window.

use crate::conn::{self, Prepared, Proto};
use crate::report::Report;
use crate::{LoadParams, Target};
use clap::Args;
use std::net::IpAddr;

const READ_BUFFER: usize = 16 * 1024;

#[derive(Args, Debug)]
pub struct RoomsArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    load: LoadParams,
    /// Client connections (a multiple of --room-size).
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Clients per room.
    #[arg(long, default_value_t = 4)]
    room_size: usize,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Local loopback addresses to connect from, round-robin (default: chosen by the system).
    #[arg(long, value_delimiter = ',')]
    bind: Vec<IpAddr>,
}

pub async fn run(args: RoomsArgs) -> Result<Report, String> {
    args.load.validate()?;
    let (n, k) = (args.clients, args.room_size);
    if !(2..=64).contains(&k) {
        return Err("--room-size must be between 2 and 64".into());
    }
    if !(k..=20_000).contains(&n) || n % k != 0 {
        return Err("--clients must be a multiple of --room-size, at most 20000".into());
    }
    let prefix = format!("load{}r{}", std::process::id(), args.target.run);
    let url = args.target.url.as_str();
    let bind = &args.bind;
    let results = conn::setup_all(n, args.connect_concurrency, |i| {
        let room = format!("{prefix}-{}", i / k);
        let local = (!bind.is_empty()).then(|| bind[i % bind.len()]);
        async move {
            let mut ws = conn::connect(url, local, READ_BUFFER).await?;
            let id = conn::join(&mut ws, &room, &format!("client {i}")).await?;
            Ok((ws, id))
        }
    })
    .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(first)) = results.iter().find(|r| r.is_err()) {
        return Err(format!(
            "{failed} of {n} clients could not connect and join; first: {first}"
        ));
    }
    let (sockets, ids): (Vec<_>, Vec<_>) = results.into_iter().flatten().unzip();

    let clients = sockets
        .into_iter()
        .enumerate()
        .map(|(i, ws)| {
            let room = i / k * k;
            // The other members, starting after us, so first messages spread over the room.
            let targets = (1..k)
                .map(|offset| ids[room + (i - room + offset) % k].clone())
                .collect();
            Prepared { ws, targets }
        })
        .collect();
    let outcome = conn::run_load(clients, Proto::Rooms, &args.load, args.target.pid).await;
    if let Some(problem) = &outcome.first_problem {
        eprintln!(
            "signal-load: {} problem(s), first: {problem}",
            outcome.problems
        );
    }
    let mut report = Report::new(&format!("rooms-{n}x{k}"), &args.target);
    report.int("clients", n as u64);
    report.int("window", args.load.window as u64);
    outcome.fill(&mut report);
    Ok(report)
}
