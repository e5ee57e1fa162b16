//! Driver threads: each owns a set of clients and their sockets and runs them.
//!
//! A thread waits on one `mio` poll for its clients' sockets, the earliest of their timers
//! and its command queue, reads whatever is readable, fires what is due, and so on until it
//! is told to finish. The signaling side (async, on the main thread) reaches a client only
//! through commands to its thread ([`Drivers`]); nothing is shared and nothing is locked on
//! the media path. Threads are few (`--threads`) so that the tool's own cost stays low.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use str0m::config::DtlsCert;
use tokio::sync::oneshot;

use crate::client::{Client, ClientCounts, OfferKind, Tally, Window};
use crate::media::Rates;

/// The poll token of a thread's command queue; clients use their slot number.
const WAKER: Token = Token(usize::MAX);
/// The longest a thread sleeps without looking at its timers.
const MAX_SLEEP: Duration = Duration::from_millis(20);

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Cmd {
    Add {
        tag: u32,
        reply: Reply<usize>,
    },
    Offer {
        slot: usize,
        kind: OfferKind,
        reply: Reply<(String, Option<(String, String)>)>,
    },
    AcceptAnswer {
        slot: usize,
        sdp: String,
        reply: Reply<()>,
    },
    AcceptOffer {
        slot: usize,
        sdp: String,
        reply: Reply<String>,
    },
    Window(Window),
    Counts(oneshot::Sender<Vec<ClientCounts>>),
    Finish(oneshot::Sender<(Tally, Vec<ClientCounts>)>),
}

/// A client, by the thread that owns it and its slot there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientRef {
    pub thread: usize,
    pub slot: usize,
}

struct Thread {
    commands: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
}

/// The driver threads. Shared by the signaling tasks; every method takes `&self`.
pub struct Drivers {
    threads: Vec<Thread>,
    joins: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicUsize,
}

impl Drivers {
    /// `count` threads whose clients bind sockets on `ip`.
    pub fn start(count: usize, ip: Ipv4Addr, rates: Rates) -> Result<Drivers, String> {
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .ok_or("could not generate a DTLS certificate")?;
        let mut threads = Vec::with_capacity(count);
        let mut joins = Vec::with_capacity(count);
        for n in 0..count {
            let poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| e.to_string())?);
            let (commands, rx) = mpsc::channel();
            let cert = cert.clone();
            let join = std::thread::Builder::new()
                .name(format!("driver-{n}"))
                .spawn(move || run(poll, rx, ip, cert, rates))
                .map_err(|e| format!("thread: {e}"))?;
            threads.push(Thread { commands, waker });
            joins.push(join);
        }
        Ok(Drivers {
            threads,
            joins: Mutex::new(joins),
            next: AtomicUsize::new(0),
        })
    }

    fn send(&self, thread: usize, cmd: Cmd) -> Result<(), String> {
        let t = &self.threads[thread];
        t.commands.send(cmd).map_err(|_| "driver thread gone")?;
        t.waker.wake().map_err(|e| e.to_string())
    }

    async fn call<T>(&self, thread: usize, cmd: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, String> {
        let (reply, rx) = oneshot::channel();
        self.send(thread, cmd(reply))?;
        rx.await.map_err(|_| "driver thread gone".to_string())?
    }

    /// A new client on the next thread, round robin.
    pub async fn add(&self, tag: u32) -> Result<ClientRef, String> {
        let thread = self.next.fetch_add(1, Ordering::Relaxed) % self.threads.len();
        let slot = self.call(thread, |reply| Cmd::Add { tag, reply }).await?;
        Ok(ClientRef { thread, slot })
    }

    /// The client's first offer, and the (audio, video) mids it publishes, if any.
    pub async fn offer(
        &self,
        c: ClientRef,
        kind: OfferKind,
    ) -> Result<(String, Option<(String, String)>), String> {
        self.call(c.thread, |reply| Cmd::Offer {
            slot: c.slot,
            kind,
            reply,
        })
        .await
    }

    pub async fn accept_answer(&self, c: ClientRef, sdp: String) -> Result<(), String> {
        self.call(c.thread, |reply| Cmd::AcceptAnswer {
            slot: c.slot,
            sdp,
            reply,
        })
        .await
    }

    pub async fn accept_offer(&self, c: ClientRef, sdp: String) -> Result<String, String> {
        self.call(c.thread, |reply| Cmd::AcceptOffer {
            slot: c.slot,
            sdp,
            reply,
        })
        .await
    }

    /// Every thread measures from now on in `window`.
    pub fn set_window(&self, window: Window) -> Result<(), String> {
        (0..self.threads.len()).try_for_each(|t| self.send(t, Cmd::Window(window)))
    }

    /// Every client's counters, by reference.
    pub async fn counts(&self) -> Result<Vec<(ClientRef, ClientCounts)>, String> {
        let mut all = Vec::new();
        for thread in 0..self.threads.len() {
            let (reply, rx) = oneshot::channel();
            self.send(thread, Cmd::Counts(reply))?;
            let counts = rx.await.map_err(|_| "driver thread gone")?;
            all.extend(
                counts
                    .into_iter()
                    .enumerate()
                    .map(|(slot, c)| (ClientRef { thread, slot }, c)),
            );
        }
        Ok(all)
    }

    /// Stops every thread (its clients close their sockets): the tallies and the final
    /// counters of every client.
    pub async fn finish(&self) -> Result<(Vec<Tally>, Vec<(ClientRef, ClientCounts)>), String> {
        let mut tallies = Vec::new();
        let mut all = Vec::new();
        for (thread, t) in self.threads.iter().enumerate() {
            let (reply, rx) = oneshot::channel();
            t.commands
                .send(Cmd::Finish(reply))
                .map_err(|_| "driver thread gone")?;
            t.waker.wake().map_err(|e| e.to_string())?;
            let (tally, counts) = rx.await.map_err(|_| "driver thread gone")?;
            tallies.push(tally);
            all.extend(
                counts
                    .into_iter()
                    .enumerate()
                    .map(|(slot, c)| (ClientRef { thread, slot }, c)),
            );
        }
        let joins = std::mem::take(&mut *self.joins.lock().unwrap_or_else(|e| e.into_inner()));
        for join in joins {
            let _ = join.join();
        }
        Ok((tallies, all))
    }
}

/// One driver thread's loop.
fn run(mut poll: Poll, commands: mpsc::Receiver<Cmd>, ip: Ipv4Addr, cert: DtlsCert, rates: Rates) {
    let mut events = Events::with_capacity(1024);
    let mut clients: Vec<Client> = Vec::new();
    let mut tally = Tally::new();
    let mut buf = vec![0u8; 2048];
    loop {
        let now = Instant::now();
        let wake = clients
            .iter()
            .map(Client::next_wake)
            .min()
            .unwrap_or(now + MAX_SLEEP)
            .min(now + MAX_SLEEP);
        // Interrupted or failed polls just go round again; the sleep is bounded.
        let _ = poll.poll(&mut events, Some(wake.saturating_duration_since(now)));
        for event in events.iter() {
            if let Some(client) = clients.get_mut(event.token().0) {
                client.read(&mut buf, &mut tally);
            }
        }
        loop {
            let cmd = match commands.try_recv() {
                Ok(cmd) => cmd,
                Err(mpsc::TryRecvError::Empty) => break,
                // The run is gone without saying so (an error): stop too.
                Err(mpsc::TryRecvError::Disconnected) => return,
            };
            match cmd {
                Cmd::Add { tag, reply } => {
                    let slot = clients.len();
                    let added = Client::new(tag, ip, cert.clone(), rates)
                        .map_err(|e| format!("client socket: {e}"))
                        .and_then(|mut c| {
                            poll.registry()
                                .register(c.socket_mut(), Token(slot), Interest::READABLE)
                                .map_err(|e| format!("register: {e}"))?;
                            Ok(c)
                        });
                    let _ = reply.send(added.map(|c| {
                        clients.push(c);
                        slot
                    }));
                }
                Cmd::Offer { slot, kind, reply } => {
                    let _ = reply.send(with(&mut clients, slot, |c| {
                        let sdp = c.offer(kind)?;
                        Ok((sdp, c.published_mids()))
                    }));
                }
                Cmd::AcceptAnswer { slot, sdp, reply } => {
                    let _ = reply.send(with(&mut clients, slot, |c| c.accept_answer(&sdp)));
                }
                Cmd::AcceptOffer { slot, sdp, reply } => {
                    let _ = reply.send(with(&mut clients, slot, |c| c.accept_offer(&sdp)));
                }
                Cmd::Window(window) => tally.window = window,
                Cmd::Counts(reply) => {
                    let _ = reply.send(clients.iter().map(Client::counts).collect());
                }
                Cmd::Finish(reply) => {
                    let counts = clients.iter().map(Client::counts).collect();
                    let _ = reply.send((tally, counts));
                    return;
                }
            }
        }
        let now = Instant::now();
        for client in &mut clients {
            if client.next_wake() <= now {
                client.tick(now, &mut tally);
            }
        }
    }
}

fn with<T>(
    clients: &mut [Client],
    slot: usize,
    f: impl FnOnce(&mut Client) -> Result<T, String>,
) -> Result<T, String> {
    clients
        .get_mut(slot)
        .ok_or_else(|| format!("no client in slot {slot}"))
        .and_then(f)
}
