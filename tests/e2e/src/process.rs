//! WebDriver server processes (chromedriver, geckodriver) and the browsers they start.
//!
//! A driver runs as a child of the test process. Dropping [`DriverProcess`] kills the driver
//! and every process below it (the browser and its helpers), plus any process whose command
//! line names the session's own profile directory, so nothing survives a failing test.
//! A test that is killed outright (timeout) is covered by the test runner, which signals the
//! whole process group; the drivers stay in that group on purpose.

use anyhow::{Context, Result, bail};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(listener.local_addr()?.port())
}

pub(crate) struct DriverProcess {
    child: Child,
    name: &'static str,
    port: u16,
    log_path: PathBuf,
    /// A path unique to this session (its profile directory) that appears on the browser's
    /// command line.
    marker: String,
    killed: bool,
}

impl DriverProcess {
    /// Starts `program` with `args`, its output going to `log_path`, and waits until it
    /// accepts connections on `port`.
    pub(crate) async fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        port: u16,
        log_path: PathBuf,
        marker: &Path,
    ) -> Result<Self> {
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} ({})", name, program.display()))?;
        let mut driver = DriverProcess {
            child,
            name,
            port,
            log_path,
            marker: marker.to_string_lossy().into_owned(),
            killed: false,
        };
        driver.wait_ready(Duration::from_secs(20)).await?;
        Ok(driver)
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The driver's and browser's output so far.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited with {status} before accepting connections; its output:\n{}",
                    self.name,
                    tail(&self.log(), 30)
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not listen on {addr} within {timeout:?}; its output:\n{}",
                    self.name,
                    tail(&self.log(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the driver, everything it started and anything still using this session's
    /// profile, then reaps the driver.
    pub(crate) fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        let root = self.child.id() as i32;
        let mut victims = descendants(root);
        victims.extend(processes_mentioning(&self.marker));
        victims.remove(&(std::process::id() as i32));
        // SAFETY: plain kill(2) on process ids we started (or that run our own profile).
        unsafe {
            libc::kill(root, libc::SIGKILL);
            for pid in &victims {
                libc::kill(*pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        // Browser helpers reparented before we looked are caught by the profile marker;
        // give the kernel a moment to let them go so the profile directory can be removed.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && victims.iter().any(|pid| alive(*pid)) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Process ids below `root` in the process tree (not including `root`).
fn descendants(root: i32) -> HashSet<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for pid in all_pids() {
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = HashSet::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            if found.insert(child) {
                stack.push(child);
            }
        }
    }
    found
}

fn processes_mentioning(marker: &str) -> HashSet<i32> {
    if marker.is_empty() {
        return HashSet::new();
    }
    all_pids()
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
                .unwrap_or(false)
        })
        .collect()
}

fn all_pids() -> impl Iterator<Item = i32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].chars().next())
            .is_some_and(|state| state != 'Z'),
        Err(_) => false,
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Moves the calling thread into the network namespace `name` (an `ip netns` name, i.e.
/// `/run/netns/{name}`). Sockets the thread opens afterwards and processes it starts live in
/// that namespace; other threads of the process stay where they are. Needs root.
pub fn enter_netns(name: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let path = Path::new("/run/netns").join(name);
    let handle = File::open(&path)
        .with_context(|| format!("opening network namespace {}", path.display()))?;
    // SAFETY: setns(2) on a file descriptor we own; it changes only this thread.
    if unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("entering network namespace {name} (needs root)"));
    }
    Ok(())
}

/// Runs `f` on a fresh thread inside the network namespace `name` and returns its result.
/// Sockets `f` creates stay in that namespace wherever they are used afterwards.
pub fn in_netns<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let name = name.to_string();
    std::thread::spawn(move || -> Result<T> {
        enter_netns(&name)?;
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a thread in network namespace panicked"))?
}

impl DriverProcess {
    /// The driver's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Whether process `pid` still runs (exists and is not a zombie).
pub(crate) fn is_running(pid: u32) -> bool {
    alive(pid as i32)
}
