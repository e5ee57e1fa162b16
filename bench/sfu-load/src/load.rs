//! `run`: one bounded load run against one server, and its figures.
//!
//! The run plans participants for the scenario, starts the driver threads, sets every
//! client up through the server's signaling (publishers first), waits until every
//! subscriber receives every track it should (or the set-up time runs out), warms up, then
//! measures over a fixed window: packets that reached subscribers, frame loss per
//! subscriber, forwarding delay, the server's CPU time and memory, and the tool's own CPU.
//! Frames count when their *send* time falls in the window; a short drain after it lets the
//! last of them arrive. Then the clients leave and the run prints one `RESULT` line.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::client::{ClientCounts, OfferKind, Tally, Window, new_histogram};
use crate::driver::{ClientRef, Drivers};
use crate::janus::Janus;
use crate::media::{self, Rates};
use crate::report::{self, Report};
use crate::switchboard::{self, MemberEnd};

/// Time after the window for frames sent in it to arrive.
const DRAIN: Duration = Duration::from_millis(1000);
/// Janus subscribers are separate clients from their participant's publisher; their tags
/// start here (they publish nothing, the tag only names them).
const SUBSCRIBER_TAGS: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerKind {
    Switchboard,
    Janus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// One publisher, `--subscribers` subscribers, one room.
    Fanout,
    /// `--rooms` rooms of `--room-size` participants, each publishing and receiving all
    /// the others.
    Rooms,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The server under load.
    #[arg(long, value_enum)]
    server: ServerKind,
    /// Its HTTP address on loopback: Switchboard's `--http-addr`, or Janus's REST port.
    #[arg(long)]
    addr: SocketAddr,
    /// The address of this host the clients' media sockets bind: loopback, or the host's
    /// own address, which the kernel also delivers over the loopback device (Janus never
    /// offers loopback candidates).
    #[arg(long, default_value = "127.0.0.1")]
    media_ip: Ipv4Addr,
    #[arg(long, value_enum, default_value = "fanout")]
    scenario: Scenario,
    /// Subscribers of the one publisher (fanout), 1-1000.
    #[arg(long, default_value_t = 50)]
    subscribers: usize,
    /// Rooms (rooms scenario), 1-100.
    #[arg(long, default_value_t = 4)]
    rooms: usize,
    /// Participants per room (rooms scenario), 2-50.
    #[arg(long, default_value_t = 4)]
    room_size: usize,
    /// Video bit rate of each publisher, kbit/s (10-20000).
    #[arg(long, default_value_t = 1500)]
    video_kbps: u32,
    /// Video frames per second (1-60).
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Seconds of load after set-up before measuring (at most 60).
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Seconds measured (at most 120).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Driver threads of the load tool (1-16).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Clients set up at once (1-64).
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    /// Seconds the set-up may take until every subscriber receives (at most 600).
    #[arg(long, default_value_t = 120.0)]
    setup_timeout: f64,
    /// The server's process id, for its CPU time, memory and socket drops.
    #[arg(long)]
    pid: Option<u32>,
    /// Label of the server in the RESULT line [default: switchboard or janus].
    #[arg(long)]
    label: Option<String>,
    /// Run number, for the RESULT line.
    #[arg(long, default_value_t = 1)]
    run: u32,
}

impl RunArgs {
    fn validate(&self) -> Result<(), String> {
        let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_string()) };
        check(
            self.addr.ip().is_loopback(),
            "--addr must be a loopback address",
        )?;
        check(
            std::net::UdpSocket::bind((self.media_ip, 0)).is_ok(),
            "--media-ip must be an address of this host",
        )?;
        check(
            (1..=1000).contains(&self.subscribers),
            "--subscribers: 1-1000",
        )?;
        check((1..=100).contains(&self.rooms), "--rooms: 1-100")?;
        check((2..=50).contains(&self.room_size), "--room-size: 2-50")?;
        check(
            self.rooms * self.room_size <= 2000,
            "--rooms x --room-size: at most 2000 participants",
        )?;
        check(
            (10..=20_000).contains(&self.video_kbps),
            "--video-kbps: 10-20000",
        )?;
        check((1..=60).contains(&self.fps), "--fps: 1-60")?;
        check((0.0..=60.0).contains(&self.warmup), "--warmup: 0-60 s")?;
        check(
            self.duration > 0.0 && self.duration <= 120.0,
            "--duration: up to 120 s",
        )?;
        check((1..=16).contains(&self.threads), "--threads: 1-16")?;
        check(
            (1..=64).contains(&self.setup_concurrency),
            "--setup-concurrency: 1-64",
        )?;
        check(
            self.setup_timeout > 0.0 && self.setup_timeout <= 600.0,
            "--setup-timeout: up to 600 s",
        )
    }

    fn scenario_label(&self) -> String {
        match self.scenario {
            Scenario::Fanout => format!("fanout-{}", self.subscribers),
            Scenario::Rooms => format!("rooms-{}x{}", self.rooms, self.room_size),
        }
    }
}

/// Someone in the scenario: what it publishes (its tag) and whose media it should receive.
struct Participant {
    room: usize,
    tag: u32,
    publishes: bool,
    expects: Vec<u32>,
}

fn participants(args: &RunArgs) -> Vec<Participant> {
    match args.scenario {
        Scenario::Fanout => {
            let mut all = vec![Participant {
                room: 0,
                tag: 0,
                publishes: true,
                expects: Vec::new(),
            }];
            all.extend((1..=args.subscribers as u32).map(|tag| Participant {
                room: 0,
                tag,
                publishes: false,
                expects: vec![0],
            }));
            all
        }
        Scenario::Rooms => {
            let k = args.room_size as u32;
            (0..args.rooms as u32)
                .flat_map(|room| {
                    (0..k).map(move |i| Participant {
                        room: room as usize,
                        tag: room * k + i,
                        publishes: true,
                        expects: (0..k).filter(|&j| j != i).map(|j| room * k + j).collect(),
                    })
                })
                .collect()
        }
    }
}

/// A client of the plan: what it should receive, and its reference if its set-up worked
/// (one that failed still counts, as a subscriber that received nothing).
struct Planned {
    client: Option<ClientRef>,
    expects: Vec<u32>,
}

/// How to take a server's side down at the end of the run.
enum Teardown {
    Switchboard {
        stop: watch::Sender<bool>,
        members: Vec<JoinHandle<MemberEnd>>,
    },
    Janus {
        janus: Arc<Janus>,
        control: u64,
        rooms: Vec<u64>,
    },
}

struct Setup {
    planned: Vec<Planned>,
    errors: Vec<String>,
    teardown: Teardown,
}

pub fn run(args: RunArgs) -> Result<Report, String> {
    args.validate()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> Result<Report, String> {
    let rates = Rates::new(args.video_kbps, args.fps);
    let parts = participants(&args);
    let rss_base = args.pid.and_then(report::rss_mib);
    let drivers = Arc::new(Drivers::start(args.threads, args.media_ip, rates)?);
    let setup_started = Instant::now();
    let setup = match args.server {
        ServerKind::Switchboard => setup_switchboard(&args, &drivers, &parts).await,
        ServerKind::Janus => setup_janus(&args, &drivers, &parts).await,
    };
    let setup = match setup {
        Ok(setup) => setup,
        Err(e) => {
            let _ = drivers.finish().await;
            return Err(e);
        }
    };
    let ready = wait_ready(&drivers, &setup.planned, secs(args.setup_timeout)).await?;
    let setup_s = setup_started.elapsed().as_secs_f64();

    tokio::time::sleep(secs(args.warmup)).await;
    // The window opens a little ahead, so that every thread knows it before it starts.
    let lead = Duration::from_millis(50);
    let window_len = secs(args.duration);
    let start_ns = media::now_ns() + lead.as_nanos() as u64;
    drivers.set_window(Window {
        start_ns,
        end_ns: start_ns + window_len.as_nanos() as u64,
    })?;
    tokio::time::sleep(lead).await;
    let before = Sample::take(args.pid);
    tokio::time::sleep(window_len).await;
    let after = Sample::take(args.pid);
    let readings = Readings {
        ready,
        setup_s,
        window_s: window_len.as_secs_f64(),
        cpu: before.cpu.zip(after.cpu).map(|(a, b)| b - a),
        own_cpu: before.own_cpu.zip(after.own_cpu).map(|(a, b)| b - a),
        server_drops: before
            .server_drops
            .zip(after.server_drops)
            .map(|(a, b)| b.saturating_sub(a)),
        own_drops: after.own_drops.saturating_sub(before.own_drops),
        rss_base,
        rss: args.pid.and_then(report::rss_mib),
        cpus: args.pid.and_then(report::allowed_cpus),
        load_average: report::load_average(),
    };
    tokio::time::sleep(DRAIN).await;

    let (tallies, counts) = drivers.finish().await?;
    let mut errors = setup.errors;
    errors.extend(teardown(setup.teardown).await);
    for e in errors.iter().take(5) {
        eprintln!("sfu-load: {e}");
    }
    let figures = Figures::new(&setup.planned, &tallies, &counts);
    let publishers = parts.iter().filter(|p| p.publishes).count();
    Ok(result_line(
        &args,
        publishers,
        setup.planned.len(),
        &figures,
        &readings,
        errors.len(),
    ))
}

/// The counters read at each end of the window.
struct Sample {
    cpu: Option<f64>,
    own_cpu: Option<f64>,
    server_drops: Option<u64>,
    own_drops: u64,
}

impl Sample {
    fn take(pid: Option<u32>) -> Sample {
        Sample {
            cpu: pid.and_then(report::cpu_seconds),
            own_cpu: report::own_cpu_seconds(),
            server_drops: pid.map(|p| report::udp_drops(&p.to_string())),
            own_drops: report::udp_drops("self"),
        }
    }
}

/// What the run read besides the clients' counters.
struct Readings {
    ready: usize,
    setup_s: f64,
    window_s: f64,
    /// Server and load-tool CPU seconds in the window.
    cpu: Option<f64>,
    own_cpu: Option<f64>,
    /// Kernel receive drops in the window, server's sockets and ours.
    server_drops: Option<u64>,
    own_drops: u64,
    /// Server RSS before the set-up and at the end of the window, MiB.
    rss_base: Option<f64>,
    rss: Option<f64>,
    /// CPUs the server may run on.
    cpus: Option<usize>,
    load_average: Option<f64>,
}

/// The run's `RESULT` line.
fn result_line(
    args: &RunArgs,
    publishers: usize,
    clients: usize,
    figures: &Figures,
    readings: &Readings,
    errors: usize,
) -> Report {
    let window_s = readings.window_s;
    let per_pkt =
        |cpu: f64| (figures.media_packets > 0).then(|| cpu * 1e6 / figures.media_packets as f64);
    let mut r = Report::default();
    r.text("tool", "sfu-load");
    r.text("scenario", &args.scenario_label());
    r.text(
        "server",
        args.label.as_deref().unwrap_or(match args.server {
            ServerKind::Switchboard => "switchboard",
            ServerKind::Janus => "janus",
        }),
    );
    r.int("run", u64::from(args.run));
    r.int("publishers", publishers as u64);
    r.int("subscribers", figures.subscribers);
    r.int("clients", clients as u64);
    r.int("ready", readings.ready as u64);
    r.int("video_kbps", u64::from(args.video_kbps));
    r.num("setup_s", readings.setup_s);
    r.num("duration_s", window_s);
    r.int("fwd_pkts", figures.media_packets);
    r.num("fwd_pps", figures.media_packets as f64 / window_s);
    r.int("pub_pkts", figures.rtp_expected);
    r.int("rtp_pkts", figures.rtp_received);
    r.num(
        "extra_rtp_pct",
        100.0 * figures.rtp_received.saturating_sub(figures.media_packets) as f64
            / figures.media_packets.max(1) as f64,
    );
    r.num("rtp_mbps", figures.rtp_bytes as f64 * 8.0 / window_s / 1e6);
    r.int("frames_expected", figures.frames_expected);
    r.int("frames_received", figures.frames_received);
    r.num("loss_pct", figures.loss_pct());
    r.num("worst_sub_loss_pct", figures.worst_loss_pct);
    r.int("subs_with_loss", figures.subscribers_with_loss);
    r.delays(
        ["delay_p50_ms", "delay_p99_ms", "delay_max_ms"],
        &figures.delay,
    );
    r.delays(
        ["app_p50_ms", "app_p99_ms", "app_max_ms"],
        &figures.app_delay,
    );
    let cpu = readings.cpu;
    r.maybe("cpu_s", cpu);
    r.maybe("cpu_s_per_mpkt", cpu.and_then(per_pkt));
    r.maybe(
        "pkts_per_cpu_s",
        cpu.filter(|&c| c > 0.0)
            .map(|c| figures.media_packets as f64 / c),
    );
    r.maybe("server_cpus", readings.cpus.map(|n| n as f64));
    r.maybe(
        "cpu_util_pct",
        cpu.zip(readings.cpus)
            .map(|(c, n)| 100.0 * c / window_s / n as f64),
    );
    r.maybe("rss_base_mb", readings.rss_base);
    r.maybe("rss_mb", readings.rss);
    r.maybe(
        "kib_per_sub",
        readings
            .rss
            .zip(readings.rss_base)
            .filter(|_| figures.subscribers > 0)
            .map(|(now, base)| (now - base) * 1024.0 / figures.subscribers as f64),
    );
    r.maybe("load_cpu_s", readings.own_cpu);
    r.maybe("load_cpu_s_per_mpkt", readings.own_cpu.and_then(per_pkt));
    r.maybe("server_drops", readings.server_drops.map(|d| d as f64));
    r.int("load_drops", readings.own_drops);
    r.maybe("loadavg", readings.load_average);
    r.int("keyframes", figures.keyframes_sent);
    r.int("send_errors", figures.send_errors);
    r.int("rtc_errors", figures.rtc_errors);
    r.int("failed_clients", figures.failed_clients);
    r.int("errors", errors as u64);
    r
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// The run's totals over every thread and client.
struct Figures {
    subscribers: u64,
    media_packets: u64,
    rtp_received: u64,
    rtp_bytes: u64,
    /// RTP packets the publishers sent in the window, times the subscribers of each.
    rtp_expected: u64,
    frames_expected: u64,
    frames_received: u64,
    worst_loss_pct: f64,
    subscribers_with_loss: u64,
    delay: Histogram<u64>,
    app_delay: Histogram<u64>,
    keyframes_sent: u64,
    send_errors: u64,
    rtc_errors: u64,
    failed_clients: u64,
}

impl Figures {
    fn new(planned: &[Planned], tallies: &[Tally], counts: &[(ClientRef, ClientCounts)]) -> Self {
        let by_ref: HashMap<ClientRef, &ClientCounts> =
            counts.iter().map(|(r, c)| (*r, c)).collect();
        // What each publisher tag sent in the window; publishers are the clients that sent.
        let mut frames_sent: HashMap<u32, u64> = HashMap::new();
        let mut rtp_sent: HashMap<u32, u64> = HashMap::new();
        for (_, c) in counts {
            if let Some(tag) = c.tag.filter(|_| c.frames_sent > 0 || c.rtp_sent > 0) {
                *frames_sent.entry(tag).or_default() += c.frames_sent;
                *rtp_sent.entry(tag).or_default() += c.rtp_sent;
            }
        }
        let mut f = Figures {
            subscribers: 0,
            media_packets: tallies.iter().map(|t| t.media_packets).sum(),
            rtp_received: tallies.iter().map(|t| t.rtp_received).sum(),
            rtp_bytes: tallies.iter().map(|t| t.rtp_bytes_received).sum(),
            rtp_expected: 0,
            frames_expected: 0,
            frames_received: 0,
            worst_loss_pct: 0.0,
            subscribers_with_loss: 0,
            delay: new_histogram(),
            app_delay: new_histogram(),
            keyframes_sent: tallies.iter().map(|t| t.keyframes_sent).sum(),
            send_errors: tallies.iter().map(|t| t.send_errors).sum(),
            rtc_errors: tallies.iter().map(|t| t.rtc_errors).sum(),
            failed_clients: counts.iter().filter(|(_, c)| c.failed.is_some()).count() as u64,
        };
        for t in tallies {
            let _ = f.delay.add(&t.delay);
            let _ = f.app_delay.add(&t.app_delay);
        }
        for p in planned.iter().filter(|p| !p.expects.is_empty()) {
            f.subscribers += 1;
            let received = p.client.and_then(|c| by_ref.get(&c)).map(|c| &c.received);
            let mut expected = 0;
            let mut got = 0;
            for tag in &p.expects {
                expected += frames_sent.get(tag).copied().unwrap_or(0);
                got += received.and_then(|r| r.get(tag)).copied().unwrap_or(0);
                f.rtp_expected += rtp_sent.get(tag).copied().unwrap_or(0);
            }
            let got = got.min(expected);
            f.frames_expected += expected;
            f.frames_received += got;
            if got < expected {
                f.subscribers_with_loss += 1;
                f.worst_loss_pct = f
                    .worst_loss_pct
                    .max(100.0 * (expected - got) as f64 / expected as f64);
            }
        }
        f
    }

    fn loss_pct(&self) -> f64 {
        if self.frames_expected == 0 {
            return 100.0;
        }
        100.0 * (self.frames_expected - self.frames_received) as f64 / self.frames_expected as f64
    }
}

/// Until every client that was set up is connected and receives every track it should (an
/// audio and a video track per publisher it expects), or `timeout`: how many are ready.
async fn wait_ready(
    drivers: &Drivers,
    planned: &[Planned],
    timeout: Duration,
) -> Result<usize, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let counts: HashMap<ClientRef, ClientCounts> =
            drivers.counts().await?.into_iter().collect();
        let live = planned.iter().filter(|p| p.client.is_some()).count();
        let ready = planned
            .iter()
            .filter(|p| {
                p.client.and_then(|c| counts.get(&c)).is_some_and(|c| {
                    c.connected && c.failed.is_none() && c.tracks_seen >= 2 * p.expects.len()
                })
            })
            .count();
        if ready == live || Instant::now() >= deadline {
            return Ok(ready);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn teardown(teardown: Teardown) -> Vec<String> {
    match teardown {
        Teardown::Switchboard { stop, members } => {
            let _ = stop.send(true);
            let mut errors = Vec::new();
            for member in members {
                match tokio::time::timeout(Duration::from_secs(5), member).await {
                    Ok(Ok(end)) => errors.extend(end.errors),
                    Ok(Err(e)) => errors.push(format!("signaling task: {e}")),
                    Err(_) => errors.push("a client took over 5 s to leave".into()),
                }
            }
            errors
        }
        Teardown::Janus {
            janus,
            control,
            rooms,
        } => {
            let errors = janus.notes();
            for room in rooms {
                let _ = janus
                    .request(control, json!({"request": "destroy", "room": room}))
                    .await;
            }
            janus.destroy().await;
            errors
        }
    }
}

/// Runs `f` over `items` with at most `concurrency` at once; results in any order.
async fn each<T, R, F>(items: Vec<T>, concurrency: usize, f: impl Fn(T) -> F) -> Vec<R>
where
    F: Future<Output = R>,
{
    stream::iter(items.into_iter().map(f))
        .buffer_unordered(concurrency)
        .collect()
        .await
}

async fn setup_switchboard(
    args: &RunArgs,
    drivers: &Arc<Drivers>,
    parts: &[Participant],
) -> Result<Setup, String> {
    let (stop, stop_rx) = watch::channel(false);
    // Unique per run: a server reused across runs never mixes them up.
    let prefix = format!("sfuload-{}-{}", args.run, media::now_ns() % 1_000_000_000);
    let mut planned = Vec::new();
    let mut members = Vec::new();
    let mut errors = Vec::new();
    // Publishers that receive nothing (fanout's) first, so that the room has its tracks
    // when the subscribers arrive; then everyone else.
    let (first, rest): (Vec<&Participant>, Vec<&Participant>) = parts
        .iter()
        .partition(|p| p.publishes && p.expects.is_empty());
    for group in [first, rest] {
        let results = each(group, args.setup_concurrency, |p| {
            let (drivers, stop_rx) = (drivers.clone(), stop_rx.clone());
            let room = format!("{prefix}-{}", p.room);
            let addr = args.addr;
            let kind = if p.publishes {
                OfferKind::Publish
            } else {
                OfferKind::Receive
            };
            let name = format!("load-{}", p.tag);
            async move {
                let joined = async {
                    let client = drivers.add(p.tag).await?;
                    let member =
                        switchboard::join(addr, room, name, drivers, client, kind, stop_rx).await?;
                    Ok::<_, String>((client, member))
                };
                (p.expects.clone(), joined.await)
            }
        })
        .await;
        for (expects, result) in results {
            match result {
                Ok((client, member)) => {
                    planned.push(Planned {
                        client: Some(client),
                        expects,
                    });
                    members.push(member);
                }
                Err(e) => {
                    planned.push(Planned {
                        client: None,
                        expects,
                    });
                    errors.push(e);
                }
            }
        }
    }
    if planned.iter().all(|p| p.client.is_none()) {
        let _ = stop.send(true);
        return Err(format!("no client could join: {}", errors.join("; ")));
    }
    Ok(Setup {
        planned,
        errors,
        teardown: Teardown::Switchboard { stop, members },
    })
}

async fn setup_janus(
    args: &RunArgs,
    drivers: &Arc<Drivers>,
    parts: &[Participant],
) -> Result<Setup, String> {
    let janus = Janus::connect(args.addr).await?;
    let control = janus.attach().await?;
    let room_count = parts.iter().map(|p| p.room + 1).max().unwrap_or(0);
    let publishers_per_room = parts.iter().filter(|p| p.publishes && p.room == 0).count();
    // Unique per run, as Janus keeps rooms until they are destroyed.
    let base = (media::now_ns() / 1_000_000 % 1_000_000_000) * 100;
    let mut rooms = Vec::new();
    for r in 0..room_count as u64 {
        let room = base + r;
        let created = janus
            .request(
                control,
                json!({
                    "request": "create",
                    "room": room,
                    "description": "sfu-load",
                    "publishers": publishers_per_room.max(1),
                    "bitrate": 0,
                    "fir_freq": 0,
                    "audiocodec": "opus",
                    "videocodec": "vp8",
                    "notify_joining": false,
                }),
            )
            .await;
        if let Err(e) = created {
            janus.destroy().await;
            return Err(format!("creating room {room}: {e}"));
        }
        rooms.push(room);
    }
    let mut planned = Vec::new();
    let mut errors = Vec::new();

    // Publishers first: subscribers name their feeds.
    let publishers: Vec<&Participant> = parts.iter().filter(|p| p.publishes).collect();
    let results = each(publishers, args.setup_concurrency, |p| {
        let (drivers, janus) = (drivers.clone(), janus.clone());
        let room = rooms[p.room];
        async move {
            let client = drivers.add(p.tag).await?;
            let handle = janus.attach().await?;
            let join = json!({"request": "join", "ptype": "publisher", "room": room, "display": format!("load-{}", p.tag)});
            let (joined, _) = janus.call(handle, join, None).await?;
            let feed = joined["id"]
                .as_u64()
                .ok_or_else(|| format!("publisher join: {joined}"))?;
            let (offer, _) = drivers.offer(client, OfferKind::Publish).await?;
            let (_, jsep) = janus
                .call(
                    handle,
                    json!({"request": "publish"}),
                    Some(json!({"type": "offer", "sdp": offer})),
                )
                .await?;
            let answer = jsep_sdp(jsep, "answer")?;
            drivers.accept_answer(client, answer).await?;
            janus.end_of_candidates(handle).await?;
            Ok::<_, String>((p.tag, feed, client))
        }
    })
    .await;
    let mut feeds = HashMap::new();
    for result in results {
        match result {
            Ok((tag, feed, client)) => {
                feeds.insert(tag, feed);
                planned.push(Planned {
                    client: Some(client),
                    expects: Vec::new(),
                });
            }
            Err(e) => {
                planned.push(Planned {
                    client: None,
                    expects: Vec::new(),
                });
                errors.push(e);
            }
        }
    }
    if feeds.is_empty() {
        janus.destroy().await;
        return Err(format!("no publisher could join: {}", errors.join("; ")));
    }
    // Janus offers a feed to subscribers only once its PeerConnection is up.
    wait_ready(drivers, &planned, secs(args.setup_timeout)).await?;

    let subscribers: Vec<&Participant> = parts.iter().filter(|p| !p.expects.is_empty()).collect();
    let feeds = &feeds;
    let results = each(subscribers, args.setup_concurrency, |p| {
        let (drivers, janus) = (drivers.clone(), janus.clone());
        let room = rooms[p.room];
        let subscribed = async move {
            let streams: Vec<_> = p
                .expects
                .iter()
                .filter_map(|tag| feeds.get(tag))
                .map(|feed| json!({"feed": feed}))
                .collect();
            let client = drivers.add(SUBSCRIBER_TAGS + p.tag).await?;
            let handle = janus.attach().await?;
            let join =
                json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams});
            let (_, jsep) = subscribe(&janus, handle, join).await?;
            let offer = jsep_sdp(jsep, "offer")?;
            let answer = drivers.accept_offer(client, offer).await?;
            janus
                .call(
                    handle,
                    json!({"request": "start"}),
                    Some(json!({"type": "answer", "sdp": answer})),
                )
                .await?;
            janus.end_of_candidates(handle).await?;
            Ok::<_, String>(client)
        };
        async move { (p.expects.clone(), subscribed.await) }
    })
    .await;
    for (expects, result) in results {
        let client = result.map_err(|e| errors.push(e)).ok();
        planned.push(Planned { client, expects });
    }
    Ok(Setup {
        planned,
        errors,
        teardown: Teardown::Janus {
            janus,
            control,
            rooms,
        },
    })
}

/// A subscriber's `join`, tried again while Janus says a feed is not there yet (error
/// 428: its publisher's PeerConnection is not quite up), for up to 5 s.
async fn subscribe(
    janus: &Janus,
    handle: u64,
    join: serde_json::Value,
) -> Result<(serde_json::Value, Option<serde_json::Value>), String> {
    let mut tries = 0;
    loop {
        match janus.call(handle, join.clone(), None).await {
            Err(e) if e.contains("\"error_code\":428") && tries < 25 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            result => return result,
        }
    }
}

/// The SDP of a `jsep` of the given type.
fn jsep_sdp(jsep: Option<serde_json::Value>, kind: &str) -> Result<String, String> {
    let jsep = jsep.ok_or_else(|| format!("no {kind} from Janus"))?;
    if jsep["type"].as_str() != Some(kind) {
        return Err(format!("expected an {kind} from Janus, got {jsep}"));
    }
    jsep["sdp"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{kind} without sdp"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["x", "--server", "janus", "--addr", "127.0.0.1:1"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).run
    }

    #[test]
    fn fanout_and_rooms_plans() {
        let fanout = participants(&args(&["--subscribers", "3"]));
        assert_eq!(fanout.len(), 4);
        assert!(fanout[0].publishes && fanout[0].expects.is_empty());
        assert!(fanout[1..].iter().all(|p| !p.publishes && p.expects == [0]));

        let rooms = participants(&args(&[
            "--scenario",
            "rooms",
            "--rooms",
            "2",
            "--room-size",
            "3",
        ]));
        assert_eq!(rooms.len(), 6);
        assert_eq!(rooms[4].room, 1);
        assert_eq!(rooms[4].expects, [3, 5]);
        assert!(rooms.iter().all(|p| p.publishes && p.expects.len() == 2));
    }

    #[test]
    fn bounds_are_checked() {
        assert!(args(&[]).validate().is_ok());
        assert!(args(&["--subscribers", "0"]).validate().is_err());
        assert!(args(&["--duration", "500"]).validate().is_err());
        let mut remote = args(&[]);
        remote.addr = "192.0.2.1:80".parse().unwrap();
        assert!(remote.validate().is_err());
    }
}
