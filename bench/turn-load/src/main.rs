//! `turn-load`: a TURN relay load generator, for Switchboard and for coturn alike.
//!
//! It opens N allocations over UDP with long-term credentials (a static user), gives each a
//! permission and a channel toward a UDP peer socket it owns, then sends ChannelData at a
//! fixed total rate for a fixed time while the peer echoes every packet back through the
//! relay. It measures what the server delivers:
//!
//! * **packets**: sent by the clients, received at the peer, received back by the clients;
//!   **relayed** is the sum of the last two (the server forwarded each of them once);
//! * **loss**: round trip (sent but never back) and toward the peer alone;
//! * **relayed packets per second** over the sending window;
//! * **server CPU**: user+system seconds of the server process during the load (from
//!   `/proc/PID/stat`), as seconds per million relayed packets and packets per CPU second,
//!   the figure that stays meaningful when the load tool and the server share two cores;
//! * **round-trip time** percentiles (client → relay → peer → relay → client);
//! * **kernel drops**: datagrams dropped for a full receive buffer on the server's sockets
//!   (its listening port and the relay ports) and on the tool's own, from `/proc/net/udp`,
//!   so that a loss can be pinned on the server or on the load tool.
//!
//! Subcommands: `run` (one bounded run; prints a `RESULT key=value …` line) and
//! `summarize` (medians, ours ÷ baseline ratios and PASS/FAIL from a file of such lines).
//! Everything is bounded: allocations ≤ 4096, sending ≤ 60 s, each request retried at most
//! four times, and the run deletes its allocations at the end. Only loopback servers and
//! peers are accepted. `bench/turn.sh` drives the side-by-side comparison with coturn.

mod client;
mod load;
mod report;
mod summary;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "turn-load",
    about = "TURN relay load generator: ChannelData through N UDP allocations to an echoing peer; loss, relay rate, server CPU"
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
                eprintln!("turn-load: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Summarize(args) => match summary::run(&args) {
            Ok(all_pass) if all_pass || !args.strict => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("turn-load: {e}");
                ExitCode::from(2)
            }
        },
    }
}
