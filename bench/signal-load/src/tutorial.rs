//! `tutorial`: one sender streams `iceCandidate` messages to one receiver over the classic
//! tutorial protocol. The reference server keeps a single global pair, so this is the only
//! load it can carry: it measures the raw relay path of one conversation.

use crate::conn::{self, PROBE, Prepared, Proto, SETUP_TIMEOUT, Ws};
use crate::report::Report;
use crate::{LoadParams, Target};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const READ_BUFFER: usize = 64 * 1024;

#[derive(Args, Debug)]
pub struct TutorialArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    load: LoadParams,
}

pub async fn run(args: TutorialArgs) -> Result<Report, String> {
    args.load.validate()?;
    let url = &args.target.url;
    let mut sender = conn::connect(url, None, READ_BUFFER).await?;
    let mut receiver = conn::connect(url, None, READ_BUFFER).await?;
    send(&mut sender, r#"{"type":"sender"}"#).await?;
    send(&mut receiver, r#"{"type":"receiver"}"#).await?;
    wait_for_relay(&mut sender, &mut receiver).await?;

    let clients = vec![
        Prepared {
            ws: sender,
            targets: vec![String::new()],
        },
        Prepared {
            ws: receiver,
            targets: Vec::new(),
        },
    ];
    let outcome = conn::run_load(clients, Proto::Tutorial, &args.load, args.target.pid).await;
    if let Some(problem) = &outcome.first_problem {
        eprintln!(
            "signal-load: {} problem(s), first: {problem}",
            outcome.problems
        );
    }
    let mut report = Report::new("tutorial-pair", &args.target);
    report.int("clients", 2);
    report.int("window", args.load.window as u64);
    outcome.fill(&mut report);
    Ok(report)
}

async fn send(ws: &mut Ws, text: &str) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// The tutorial protocol acknowledges nothing, so the sender probes until the receiver gets
/// a relayed candidate: then both registrations have taken effect.
async fn wait_for_relay(sender: &mut Ws, receiver: &mut Ws) -> Result<(), String> {
    let probe = conn::encode_probe(Proto::Tutorial, "");
    let deadline = Instant::now() + SETUP_TIMEOUT;
    while Instant::now() < deadline {
        send(sender, &probe).await?;
        let retry_at = Instant::now() + Duration::from_millis(100);
        loop {
            match tokio::time::timeout_at(retry_at, receiver.next()).await {
                Err(_) => break,
                Ok(Some(Ok(Message::Text(text)))) if text.contains(PROBE) => return Ok(()),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(format!("receiver: {e}")),
                Ok(None) => return Err("receiver: connection closed during set-up".into()),
            }
        }
    }
    Err("the server never relayed sender → receiver (is another tutorial client connected?)".into())
}
