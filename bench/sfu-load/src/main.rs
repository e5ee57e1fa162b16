//! `sfu-load`: an SFU forwarding load generator, for Switchboard and for Janus alike.
//!
//! Its clients are str0m `Rtc`s, each on its own UDP socket on loopback, driven by a few
//! threads ([`driver`]). Publishers send synthetic VP8 at a realistic rate (30 fps,
//! 1.5 Mbit/s by default: ~150 packets/s of ~1,200 bytes) and Opus at 50 packets/s; every
//! frame carries its publisher, index and send time ([`media`]), so subscribers measure
//! what the server delivered:
//!
//! * **forwarded packets/s**: RTP packets that reached subscribers in the window;
//! * **loss**: frames sent in the window that a subscriber should have received and did
//!   not, overall and for the worst subscriber;
//! * **forwarding delay** p50/p99: from the publisher's write to the kernel's receive
//!   timestamp of the frame's last datagram at the subscriber (one clock, loopback), and
//!   the same up to the frame leaving the subscriber's str0m (`app_*`);
//! * **server CPU** (user + system, from `/proc/PID/stat`) per million forwarded packets,
//!   and as a share of the CPUs the server may use; **server RSS** and its growth per
//!   subscriber; the tool's own CPU; kernel receive drops on both sides.
//!
//! Scenarios: `fanout` (one publisher, N subscribers) and `rooms` (M rooms of K
//! participants, everyone publishing and receiving everyone else). Signaling is
//! Switchboard's WebSocket protocol ([`switchboard`]) or Janus's REST API with the
//! videoroom plugin ([`janus`]).
//!
//! Subcommands: `run` (one bounded run; prints a `RESULT key=value …` line) and
//! `summarize` (medians, ours ÷ baseline ratios and PASS/FAIL from a file of such lines).
//! Everything is bounded: participants ≤ 2,000, set-up ≤ 600 s, measuring ≤ 120 s, every
//! signaling step ≤ 20 s; only loopback servers are accepted; the clients leave (or the
//! Janus session is destroyed) at the end. `bench/sfu.sh` drives the side-by-side run.

mod client;
mod driver;
mod http;
mod janus;
mod load;
mod media;
mod report;
mod summary;
mod switchboard;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sfu-load",
    about = "SFU forwarding load generator: str0m publishers and subscribers on loopback against Switchboard or Janus"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One load run against one server; prints a RESULT line.
    Run(load::RunArgs),
    /// Medians, ratios and PASS/FAIL from a file of RESULT lines.
    Summarize(summary::SummaryArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => match load::run(args) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sfu-load: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Summarize(args) => match summary::run(&args) {
            Ok(all_pass) if all_pass || !args.strict => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("sfu-load: {e}");
                ExitCode::from(2)
            }
        },
    }
}
