//! `signal-load`: a signaling load generator for Switchboard and for the Node `ws` baseline.
//!
//! It opens real WebSocket clients on loopback, makes them relay trickle-ICE candidates
//! through the server under test, and measures what the server delivers:
//!
//! * **throughput**: candidate messages *received* by clients per second of the measurement
//!   window (relayed messages, not messages sent);
//! * **latency**: from the moment a client writes a candidate to the moment its recipient has
//!   read and decoded it, as p50/p90/p99/p99.9/max. The send time travels inside the candidate
//!   itself (in `usernameFragment`, as `<ufrag>-<sender>-<micros>`), which both servers relay
//!   verbatim, so no server cooperation is needed;
//! * **server CPU**: user+system seconds the server process used during the window (from
//!   `/proc/PID/stat`), and the efficiency figure *messages per server CPU second*, which
//!   stays meaningful on a small shared machine where the load tool competes for the cores;
//! * **memory** (`idle`): the server's resident set (`VmRSS`) with N connected, joined, idle
//!   clients.
//!
//! Flow control: each sending client has a window of messages in flight (written but not yet
//! received by their recipient). A client sends only while it has window left, so queues stay
//! bounded, and latency is measured at a fixed, equal offered concurrency for every server
//! (by Little's law, a server that relays faster shows lower latency at the same window).
//!
//! Scenarios (subcommands):
//!
//! * `tutorial`: the classic tutorial protocol (one global sender/receiver pair). One sender
//!   streams `iceCandidate` messages to one receiver.
//! * `rooms`: Switchboard protocol v1 (`/ws`). N clients join rooms of K; every client sends
//!   `candidate` messages round-robin to the other members of its room.
//! * `idle`: N clients connect, join rooms of K, and stay silent; reports the server's RSS.
//! * `summarize`: reads the `RESULT` lines the other subcommands print, over repeated runs
//!   and servers, and prints medians, Switchboard ÷ Node ratios and PASS/FAIL against the
//!   targets.
//!
//! Every run is bounded in time and in connections, and only loopback targets are accepted.
//! `bench/signal.sh` drives the whole comparison.

mod conn;
mod idle;
mod report;
mod rooms;
mod summary;
mod tutorial;

use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "signal-load",
    about = "Signaling load generator: relay throughput, latency, CPU and memory of a WebSocket signaling server"
)]
struct Cli {
    /// Tokio worker threads of the load generator.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One sender streams `iceCandidate` to one receiver over the tutorial protocol.
    Tutorial(tutorial::TutorialArgs),
    /// N clients in rooms of K exchange `candidate` messages over protocol v1.
    Rooms(rooms::RoomsArgs),
    /// N clients join rooms and stay idle; reports the server's RSS.
    Idle(idle::IdleArgs),
    /// Medians, ratios and PASS/FAIL from a file of `RESULT` lines.
    Summarize(summary::SummaryArgs),
}

/// What every scenario needs to know about the server under test.
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// WebSocket URL of the server (loopback only), e.g. ws://127.0.0.1:8080/ws.
    #[arg(long)]
    url: String,
    /// Label of the server in the results (e.g. `switchboard`, `node`).
    #[arg(long)]
    server: String,
    /// Process id of the server, for CPU and memory readings.
    #[arg(long)]
    pid: Option<u32>,
    /// Label of this run in the results.
    #[arg(long, default_value_t = 1)]
    run: u32,
}

/// Timing and flow control shared by the load scenarios.
#[derive(Args, Clone, Debug)]
pub struct LoadParams {
    /// Seconds of load before the measurement window opens.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds of the measurement window.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Messages in flight per sending client.
    #[arg(long, default_value_t = 16)]
    window: usize,
}

impl LoadParams {
    fn validate(&self) -> Result<(), String> {
        if !(0.0..=60.0).contains(&self.warmup) {
            return Err("--warmup must be between 0 and 60 seconds".into());
        }
        if !(0.5..=300.0).contains(&self.duration) {
            return Err("--duration must be between 0.5 and 300 seconds".into());
        }
        if !(1..=256).contains(&self.window) {
            return Err("--window must be between 1 and 256".into());
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Summarize(args) = &cli.command {
        return match summary::run(args) {
            Ok(all_pass) if all_pass || !args.strict => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("signal-load: {e}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.clamp(1, 64))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("signal-load: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Tutorial(args) => tutorial::run(args).await,
            Command::Rooms(args) => rooms::run(args).await,
            Command::Idle(args) => idle::run(args).await,
            Command::Summarize(_) => unreachable!("handled above"),
        }
    });
    // Client tasks that are still closing must not hold the process up.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("signal-load: {e}");
            ExitCode::FAILURE
        }
    }
}
