//! One headless browser session per participant, driven over WebDriver.

use crate::process::{DriverProcess, free_port, tail};
use anyhow::{Context, Result, anyhow, bail};
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How long a wait-until waits unless told otherwise. Media between two local browsers
/// starts within a few seconds; this leaves room for a loaded 2-core machine.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// Which browser to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrowserKind {
    /// Debian's Chromium through chromedriver.
    Chromium,
    /// Debian's Firefox ESR through geckodriver.
    Firefox,
}

/// Chromium's command line. The fake devices stand in for camera and microphone, and the
/// fake UI grants them without a prompt; in headless Chromium it also answers
/// `getDisplayMedia` with a fake screen source, no picker flag needed.
/// `--allow-loopback-in-peer-connection` and the mDNS feature switch keep host candidates
/// usable on a machine with no real network.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    // Pages opened with autojoin=1 start media without a click; a person would have clicked.
    "--autoplay-policy=no-user-gesture-required",
    // Background tabs and occluded windows must keep decoding: every session is "visible".
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
    // Only the last --disable-features counts: keep every feature switch in this one.
    "--disable-features=WebRtcHideLocalIpsWithMdns,Translate,MediaRouter,OptimizationHints",
    "--window-size=1280,800",
];

/// Name prefix of every session's scratch directory in the temp dir.
const PROFILE_PREFIX: &str = "sb-e2e-";

/// A live headless browser with one page. Dropping it kills the browser and its driver.
pub struct Browser {
    // Field order is drop order: the WebDriver client first, then the processes, then the
    // profile directory they used.
    client: Client,
    kind: BrowserKind,
    label: String,
    driver: DriverProcess,
    dir: TempDir,
}

/// A remote `<video data-peer-id>` as the page shows it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteVideo {
    /// `data-peer-id`.
    pub peer_id: String,
    /// `data-name`, if the page sets it.
    pub name: Option<String>,
    /// `data-kind` (`camera` or `screen`), if the page sets it.
    pub kind: Option<String>,
    /// Frames the element has shown so far (decoded frames in Chromium, painted frames in
    /// Firefox).
    pub frames: u64,
    /// Intrinsic size of the current frame.
    pub width: u32,
    /// Intrinsic size of the current frame.
    pub height: u32,
}

/// JS helper defined in every script that reads frame counts.
const FRAMES_JS: &str = r#"
const framesOf = (v) => {
  // Chromium counts frames of a WebRTC stream in the playback quality; Firefox leaves that
  // at 0 for MediaStreams and counts the frames it painted instead.
  const quality = typeof v.getVideoPlaybackQuality === 'function'
    ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
  return Math.max(quality, v.mozPaintedFrames || 0, v.webkitDecodedFrameCount || 0);
};
const remoteVideos = () => Array.from(document.querySelectorAll('video[data-peer-id]')).map((v) => ({
  peerId: v.dataset.peerId,
  name: v.dataset.name ?? null,
  kind: v.dataset.kind ?? null,
  frames: framesOf(v),
  width: v.videoWidth,
  height: v.videoHeight,
}));
"#;

impl Browser {
    /// Starts a fresh browser with its own driver, profile and output log. `label` names it
    /// in failure messages (e.g. the participant's name).
    pub async fn launch(kind: BrowserKind, label: &str) -> Result<Browser> {
        Browser::launch_with(kind, label, &LaunchOptions::default()).await
    }

    /// Starts several browsers at once (labels name them in failure messages).
    pub async fn launch_all(specs: &[(BrowserKind, &str)]) -> Result<Vec<Browser>> {
        futures_util::future::try_join_all(
            specs
                .iter()
                .map(|(kind, label)| Browser::launch(*kind, label)),
        )
        .await
    }

    /// Which browser this is.
    pub fn kind(&self) -> BrowserKind {
        self.kind
    }

    /// The name given at launch.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The session's private scratch directory (removed with the browser).
    pub fn scratch_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The underlying WebDriver client, for anything the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url` and waits for the document to load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        let started = Instant::now();
        self.client
            .goto(url)
            .await
            .with_context(|| format!("[{}] opening {url}", self.label))?;
        println!(
            "[{}] opened {url} in {:.1}s",
            self.label,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Saves a PNG screenshot of the visible page to `path`, creating its directory.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let png = self
            .client
            .screenshot()
            .await
            .with_context(|| format!("[{}] taking a screenshot", self.label))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("writing {}", path.display()))?;
        println!("[{}] screenshot saved to {}", self.label, path.display());
        Ok(())
    }

    /// Runs `script` in the page and returns its result. The script is a function body: use
    /// `return`; it may return a Promise, which is awaited (but it may not use `await`
    /// itself: Firefox runs it as a plain function).
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.client
            .execute(script, args)
            .await
            .map_err(|e| anyhow!("[{}] script failed: {e}\nscript: {script}", self.label))
    }

    /// Polls `script` until it returns something truthy and returns that value; fails after
    /// [`DEFAULT_WAIT`] with `what`, the last value and the page's state.
    pub async fn wait_until(&self, what: &str, script: &str, args: Vec<Value>) -> Result<Value> {
        self.wait_until_within(what, DEFAULT_WAIT, script, args)
            .await
    }

    /// [`Browser::wait_until`] with an explicit timeout.
    pub async fn wait_until_within(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        args: Vec<Value>,
    ) -> Result<Value> {
        let start = Instant::now();
        let mut last;
        loop {
            match self.client.execute(script, args.clone()).await {
                Ok(value) if truthy(&value) => {
                    println!(
                        "[{}] {what}: done after {:.1}s",
                        self.label,
                        start.elapsed().as_secs_f64()
                    );
                    return Ok(value);
                }
                Ok(value) => last = value.to_string(),
                Err(e) => last = format!("script error: {e}"),
            }
            if start.elapsed() >= timeout {
                bail!(
                    "[{}] timed out after {:?} waiting for {what}\nlast value: {last}\n{}",
                    self.label,
                    timeout,
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `css` matches a visible, enabled element.
    pub async fn wait_for_element(&self, css: &str) -> Result<()> {
        self.wait_until(
            &format!("a visible, enabled element {css}"),
            "const e = document.querySelector(arguments[0]);
             return !!e && !e.disabled && e.getClientRects().length > 0;",
            vec![json!(css)],
        )
        .await
        .map(drop)
    }

    /// Clicks the element matching `css` once it is visible and enabled.
    pub async fn click(&self, css: &str) -> Result<()> {
        self.wait_for_element(css).await?;
        let element = self.find(css).await?;
        element
            .click()
            .await
            .with_context(|| format!("[{}] clicking {css}", self.label))
    }

    /// Types `text` into the element matching `css` (for a file input: a file path).
    pub async fn type_into(&self, css: &str, text: &str) -> Result<()> {
        self.wait_until(
            &format!("an element {css}"),
            "return !!document.querySelector(arguments[0]);",
            vec![json!(css)],
        )
        .await?;
        let element = self.find(css).await?;
        element
            .send_keys(text)
            .await
            .with_context(|| format!("[{}] typing into {css}", self.label))
    }

    /// The trimmed `textContent` of the first element matching `css`, or `None`.
    pub async fn text(&self, css: &str) -> Result<Option<String>> {
        let value = self
            .js(
                "const e = document.querySelector(arguments[0]);
                 return e ? e.textContent.trim() : null;",
                vec![json!(css)],
            )
            .await?;
        Ok(value.as_str().map(str::to_string))
    }

    async fn find(&self, css: &str) -> Result<fantoccini::elements::Element> {
        self.client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("[{}] finding {css}", self.label))
    }

    /// Every remote `<video data-peer-id>` on the page with its decoded frame count.
    pub async fn remote_videos(&self) -> Result<Vec<RemoteVideo>> {
        let value = self
            .js(&format!("{FRAMES_JS}\nreturn remoteVideos();"), vec![])
            .await?;
        serde_json::from_value(value).context("reading remote videos")
    }

    /// Waits until a video matching `css` has decoded more than `min_frames` frames and
    /// returns its count.
    pub async fn wait_frames(&self, css: &str, min_frames: u64) -> Result<u64> {
        let script = format!(
            "{FRAMES_JS}
             const counts = Array.from(document.querySelectorAll(arguments[0])).map(framesOf);
             const best = counts.length ? Math.max(...counts) : -1;
             return best > arguments[1] ? best : null;"
        );
        let value = self
            .wait_until(
                &format!("more than {min_frames} decoded frames in {css}"),
                &script,
                vec![json!(css), json!(min_frames)],
            )
            .await?;
        value
            .as_u64()
            .ok_or_else(|| anyhow!("[{}] frame count is not a number: {value}", self.label))
    }

    /// `window.switchboard.stats()` of the room page.
    pub async fn stats(&self) -> Result<Vec<Value>> {
        let value = self
            .js("return window.switchboard.stats();", vec![])
            .await?;
        match value {
            Value::Array(items) => Ok(items),
            other => bail!("[{}] switchboard.stats() returned {other}", self.label),
        }
    }

    /// The page's URL, `#status` banner and recent console output, for failure messages.
    pub async fn diagnostics(&self) -> String {
        let url = match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("(unknown: {e})"),
        };
        let status = self
            .client
            .execute(
                "const s = document.querySelector('#status'); return s ? s.textContent.trim() : '(no #status)';",
                vec![],
            )
            .await
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
            .unwrap_or_else(|e| format!("(unreadable: {e})"));
        let videos = self
            .client
            .execute(&format!("{FRAMES_JS}\nreturn remoteVideos();"), vec![])
            .await
            .map(|v| v.to_string())
            .unwrap_or_else(|e| format!("(unreadable: {e})"));
        format!(
            "--- {} ({:?}) ---\nurl: {url}\n#status: {status}\nremote videos: {videos}\nconsole:\n{}",
            self.label,
            self.kind,
            self.console().await
        )
    }

    /// Recent console messages and page errors (best effort).
    pub async fn console(&self) -> String {
        match self.kind {
            BrowserKind::Chromium => match self.client.issue_cmd(ChromiumBrowserLog).await {
                Ok(Value::Array(entries)) => {
                    let lines: Vec<String> = entries
                        .iter()
                        .map(|e| {
                            format!(
                                "{} {}",
                                e["level"].as_str().unwrap_or("?"),
                                e["message"].as_str().unwrap_or("")
                            )
                        })
                        .collect();
                    tail(&lines.join("\n"), 40)
                }
                Ok(other) => format!("(unexpected log reply: {other})"),
                Err(e) => format!("(console unavailable: {e})"),
            },
            BrowserKind::Firefox => {
                let log = self.driver.log();
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| {
                        (l.starts_with("console.")
                            || l.contains("JavaScript error")
                            || l.contains("JavaScript warning"))
                            // Firefox's own front-end complaining about the closed network.
                            && !["resource://", "chrome://", "RSLoader", "BackupService"]
                                .iter()
                                .any(|noise| l.contains(noise))
                    })
                    .collect();
                tail(&lines.join("\n"), 40)
            }
        }
    }
}

/// Is a value returned from a page truthy in JavaScript's sense?
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn chromium_capabilities(profile: &Path) -> Result<Capabilities> {
    let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": which("chromium", &["/usr/bin/chromium"])?,
            "args": args,
        },
        "goog:loggingPrefs": { "browser": "ALL" },
        "timeouts": { "script": 30000, "pageLoad": 30000 },
    });
    into_caps(caps)
}

fn firefox_capabilities() -> Result<Capabilities> {
    let caps = json!({
        "browserName": "firefox",
        "moz:firefoxOptions": {
            "binary": which("firefox-esr", &["/usr/bin/firefox-esr"])?,
            "args": ["-headless"],
            "prefs": {
                "media.navigator.streams.fake": true,
                "media.navigator.permission.disabled": true,
                "media.peerconnection.ice.loopback": true,
                "media.peerconnection.ice.obfuscate_host_addresses": false,
                // Pages opened with autojoin=1 start media without a click.
                "media.autoplay.default": 0,
                "media.autoplay.blocking_policy": 0,
                // Console messages go to the driver's log, which failure messages quote.
                "devtools.console.stdout.content": true,
                // Nothing to reach on this network.
                "app.update.enabled": false,
                "browser.shell.checkDefaultBrowser": false,
                "datareporting.policy.dataSubmissionEnabled": false,
                "toolkit.telemetry.enabled": false,
                "network.captive-portal-service.enabled": false,
                "network.connectivity-service.enabled": false,
            },
        },
        "timeouts": { "script": 30000, "pageLoad": 30000 },
    });
    into_caps(caps)
}

fn into_caps(value: Value) -> Result<Capabilities> {
    match value {
        Value::Object(map) => Ok(map),
        _ => unreachable!("capabilities are built as an object"),
    }
}

/// Finds `name` on PATH (and in ~/.cargo/bin), then in `fallbacks`.
fn which(name: &str, fallbacks: &[&str]) -> Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.iter()
        .map(|d| d.join(name))
        .chain(fallbacks.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("{name} not found (run scripts/install-deps.sh)"))
}

/// Removes profile directories left behind by sessions that were killed outright (a test
/// runner's timeout kills the test process before anything can clean up). Only directories
/// of this harness that have not been touched for a long time are removed.
fn sweep_stale_profiles() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let stale = entry
            .file_name()
            .to_string_lossy()
            .starts_with(PROFILE_PREFIX)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(30 * 60));
        if stale {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// chromedriver's (non-standard) endpoint for the browser console log.
#[derive(Debug)]
struct ChromiumBrowserLog;

impl WebDriverCompatibleCommand for ChromiumBrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

/// Settings for [`Browser::launch_with`]. The default launches exactly like
/// [`Browser::launch`].
#[derive(Clone, Debug, Default)]
pub struct LaunchOptions {
    /// Run the driver and the browser inside this network namespace (an `ip netns` name;
    /// needs root). The test process stays where it is and reaches the driver through a
    /// thread of its own that lives in the namespace.
    pub netns: Option<String>,
    /// Origins such as `http://198.51.100.1:8080` that count as secure contexts, so that a
    /// page served over plain HTTP from an IP address may use the camera and microphone.
    pub secure_origins: Vec<String>,
    /// What the page gets when it asks for the camera and microphone.
    pub media: MediaAccess,
}

/// Camera and microphone as the browser offers them to pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MediaAccess {
    /// Fake devices, permission granted without a prompt.
    #[default]
    Granted,
    /// Fake devices, but every permission prompt is answered "Block" (Chromium only).
    Denied,
    /// No devices at all: the machine has no camera or microphone (Chromium only).
    NoDevices,
}

impl Browser {
    /// [`Browser::launch`] with [`LaunchOptions`].
    ///
    /// With a network namespace, a dedicated thread enters it and runs a single-threaded
    /// runtime for this browser: the driver (and so the browser) is started from that
    /// thread and inherits its namespace, and the WebDriver client's connections to the
    /// driver's loopback port are made from there too. The thread ends once the driver is
    /// gone, i.e. after the `Browser` is dropped.
    pub async fn launch_with(
        kind: BrowserKind,
        label: &str,
        options: &LaunchOptions,
    ) -> Result<Browser> {
        let Some(netns) = options.netns.clone() else {
            return Browser::launch_here(kind, label, options).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let label = label.to_string();
        let options = options.clone();
        std::thread::Builder::new()
            .name(format!("browser-{netns}"))
            .spawn(move || {
                let runtime = crate::process::enter_netns(&netns).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .context("building the runtime of the namespace thread")
                });
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let launched = runtime
                    .block_on(Browser::launch_here(kind, &label, &options))
                    .with_context(|| format!("in network namespace {netns}"));
                let pid = launched.as_ref().ok().map(|b| b.driver.pid());
                // If nobody waits any more, the browser comes back and is dropped here.
                if tx.send(launched).is_err() {
                    return;
                }
                if let Some(pid) = pid {
                    // Drive the WebDriver client's connection until the driver is killed.
                    runtime.block_on(async move {
                        while crate::process::is_running(pid) {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    });
                }
            })
            .context("starting the namespace thread")?;
        rx.await
            .map_err(|_| anyhow!("the namespace thread of {kind:?} ended without a browser"))?
    }

    /// Starts several browsers with their options at once.
    pub async fn launch_all_with(
        specs: &[(BrowserKind, &str, &LaunchOptions)],
    ) -> Result<Vec<Browser>> {
        futures_util::future::try_join_all(
            specs
                .iter()
                .map(|(kind, label, options)| Browser::launch_with(*kind, label, options)),
        )
        .await
    }

    /// What [`Browser::launch`] does, with the capabilities extended by `options`, in the
    /// calling thread's network namespace. A driver that fails to start its session is
    /// replaced by a fresh one, twice at most: on a loaded machine a driver now and then
    /// drops its first connection, which says nothing about the code under test.
    async fn launch_here(
        kind: BrowserKind,
        label: &str,
        options: &LaunchOptions,
    ) -> Result<Browser> {
        let mut attempt = 1;
        loop {
            match Browser::launch_once(kind, label, options).await {
                Ok(browser) => return Ok(browser),
                Err(e) if attempt < 3 => {
                    println!("[{label}] {kind:?} did not start (attempt {attempt}): {e:#}");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn launch_once(
        kind: BrowserKind,
        label: &str,
        options: &LaunchOptions,
    ) -> Result<Browser> {
        let started = Instant::now();
        sweep_stale_profiles();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PROFILE_PREFIX}{}-", sanitize(label)))
            .tempdir()
            .context("creating the browser profile directory")?;
        let port = free_port()?;
        let log_path = dir.path().join("driver.log");
        let (driver, mut capabilities) = match kind {
            BrowserKind::Chromium => {
                let profile = dir.path().join("profile");
                let driver = DriverProcess::spawn(
                    "chromedriver",
                    &which("chromedriver", &["/usr/bin/chromedriver"])?,
                    &[format!("--port={port}")],
                    port,
                    log_path,
                    &profile,
                )
                .await?;
                (driver, chromium_capabilities(&profile)?)
            }
            BrowserKind::Firefox => {
                let profiles = dir.path().join("profiles");
                std::fs::create_dir(&profiles)?;
                let driver = DriverProcess::spawn(
                    "geckodriver",
                    &which("geckodriver", &[])?,
                    &[
                        "--port".into(),
                        port.to_string(),
                        "--profile-root".into(),
                        profiles.to_string_lossy().into_owned(),
                    ],
                    port,
                    log_path,
                    &profiles,
                )
                .await?;
                (driver, firefox_capabilities()?)
            }
        };
        apply_launch_options(kind, &mut capabilities, options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .map_err(|e| {
                anyhow!(
                    "starting a {kind:?} session for {label}: {e}\ndriver output:\n{}",
                    tail(&driver.log(), 30)
                )
            })?;
        println!(
            "[{label}] {kind:?} started in {:.1}s{}",
            started.elapsed().as_secs_f64(),
            options
                .netns
                .as_deref()
                .map(|ns| format!(" in network namespace {ns}"))
                .unwrap_or_default()
        );
        Ok(Browser {
            client,
            kind,
            label: label.to_string(),
            driver,
            dir,
        })
    }
}

/// Adds what `options` asks for to capabilities built by `chromium_capabilities` or
/// `firefox_capabilities`.
fn apply_launch_options(kind: BrowserKind, caps: &mut Capabilities, options: &LaunchOptions) {
    if kind == BrowserKind::Chromium
        && options.media != MediaAccess::Granted
        && let Some(Value::Array(args)) = caps
            .get_mut("goog:chromeOptions")
            .and_then(|o| o.get_mut("args"))
    {
        // Without the fake UI, Chromium asks the user; `--deny-permission-prompts` answers
        // "Block" as a user would. Without fake devices, headless Chromium on a machine
        // with no camera finds none.
        let dropped = match options.media {
            MediaAccess::Denied => "--use-fake-ui-for-media-stream",
            _ => "--use-fake-device-for-media-stream",
        };
        args.retain(|arg| arg.as_str() != Some(dropped));
        if options.media == MediaAccess::Denied {
            args.push(json!("--deny-permission-prompts"));
        }
    }
    if options.secure_origins.is_empty() {
        return;
    }
    match kind {
        BrowserKind::Chromium => {
            if let Some(Value::Array(args)) = caps
                .get_mut("goog:chromeOptions")
                .and_then(|o| o.get_mut("args"))
            {
                args.push(json!(format!(
                    "--unsafely-treat-insecure-origin-as-secure={}",
                    options.secure_origins.join(",")
                )));
            }
        }
        BrowserKind::Firefox => {
            if let Some(Value::Object(prefs)) = caps
                .get_mut("moz:firefoxOptions")
                .and_then(|o| o.get_mut("prefs"))
            {
                // Firefox's allow-list takes host names (or addresses), not origins.
                let hosts: Vec<String> = options
                    .secure_origins
                    .iter()
                    .filter_map(|origin| url::Url::parse(origin).ok())
                    .filter_map(|url| url.host_str().map(str::to_string))
                    .collect();
                prefs.insert("dom.securecontext.allowlist".into(), json!(hosts.join(",")));
                prefs.insert("media.devices.insecure.enabled".into(), json!(true));
                prefs.insert("media.getusermedia.insecure.enabled".into(), json!(true));
            }
        }
    }
}
