// @ts-check
/**
 * Helpers shared by the app pages: element lookup, the status banner, query parameters,
 * attaching streams to video elements (with the browsers' autoplay rules handled), and the
 * `window.switchboard` debugging hook.
 * @module
 */

import { formatPeerStats, formatStreamStats } from '../sdk/switchboard.js';

/** @typedef {import('../sdk/stats.js').PeerStats} PeerStats */

/**
 * The element with this id, checked to be of the expected class.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {new (...args: any[]) => T} type
 * @returns {T}
 */
export function byId(id, type) {
  const node = document.getElementById(id);
  if (!(node instanceof type)) throw new Error(`#${id} is missing or not a ${type.name}`);
  return node;
}

/** The page's query parameters. */
export const params = new URLSearchParams(location.search);

/** Whether `?autojoin=1` asks to join/start without a click. */
export const autojoin = ['1', 'true', 'yes'].includes(params.get('autojoin') ?? '');

/**
 * The SDK's `iceTransportPolicy` for this page: `?relay=1` forces every connection through
 * the server's TURN relay (`'relay'`); otherwise direct connections are allowed (`'all'`).
 * @type {RTCIceTransportPolicy}
 */
export const iceTransportPolicy = ['1', 'true', 'yes'].includes(params.get('relay') ?? '') ? 'relay' : 'all';

/**
 * The message to show for a failed join/start: the error's own text, plus what to do when
 * `?relay=1` asked for a relay the server does not offer (SDK code `no_relay`).
 * @param {unknown} err
 * @returns {string}
 */
export function errorText(err) {
  const message = err instanceof Error ? err.message : String(err);
  if (/** @type {{ code?: string }} */ (err)?.code === 'no_relay') {
    return `${message} The page was opened with ?relay=1: remove it from the address to allow direct connections, or ask the server's operator to enable TURN.`;
  }
  return message;
}

/** @typedef {'info' | 'ok' | 'warn' | 'error'} StatusKind */

/** @type {ReturnType<typeof setTimeout> | undefined} */
let statusTimer;

/**
 * Show a message in the `#status` banner.
 * @param {string} text
 * @param {StatusKind} [kind]
 * @param {{ hideAfterMs?: number, action?: { label: string, run: () => void } }} [options]
 */
export function showStatus(text, kind = 'info', options = {}) {
  const box = document.getElementById('status');
  if (!box) return;
  clearTimeout(statusTimer);
  box.replaceChildren();
  const span = document.createElement('span');
  span.textContent = text;
  box.append(span);
  if (options.action) {
    const { label, run } = options.action;
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'link-button';
    btn.textContent = label;
    btn.addEventListener('click', run);
    box.append(' ', btn);
  }
  box.dataset.kind = kind;
  box.hidden = false;
  if (options.hideAfterMs) statusTimer = setTimeout(() => clearStatus(text), options.hideAfterMs);
}

/**
 * Hide the banner (only if it still shows `onlyIf`, when given).
 * @param {string} [onlyIf]
 */
export function clearStatus(onlyIf) {
  const box = document.getElementById('status');
  if (!box) return;
  if (onlyIf !== undefined && !box.textContent?.startsWith(onlyIf)) return;
  clearTimeout(statusTimer);
  box.hidden = true;
  box.replaceChildren();
  delete box.dataset.kind;
}

/** Videos waiting for a click because the browser blocked playback with sound. */
const blockedVideos = new Set();

function unblockSound() {
  for (const video of blockedVideos) {
    video.muted = false;
    video.play().catch(() => {});
  }
  blockedVideos.clear();
  clearStatus('Sound is blocked');
}

/**
 * Show a stream in a video element and start playback. When the browser refuses to play
 * with sound before the user interacted with the page, plays muted and offers to enable
 * sound.
 * @param {HTMLVideoElement} video
 * @param {MediaStream | null} stream
 * @param {{ muted?: boolean }} [options] `muted` for our own preview
 */
export function attachStream(video, stream, { muted = false } = {}) {
  video.autoplay = true;
  video.playsInline = true;
  video.muted = muted;
  if (video.srcObject !== stream) video.srcObject = stream;
  if (!stream) return;
  video.play().catch((err) => {
    if (err && err.name === 'NotAllowedError' && !video.muted) {
      video.muted = true;
      blockedVideos.add(video);
      video.play().catch(() => {});
      showStatus('Sound is blocked by the browser until you interact with the page.', 'warn', {
        action: { label: 'Enable sound', run: unblockSound },
      });
    }
  });
}

document.addEventListener('click', () => {
  if (blockedVideos.size) unblockSound();
});

/**
 * A name for people who did not type one: "Guest 1234".
 * @returns {string}
 */
export function guestName() {
  return `Guest ${Math.floor(1000 + Math.random() * 9000)}`;
}

const NAME_KEY = 'switchboard.name';

/**
 * The display name to pre-fill: `?name=`, else the last one used on this browser.
 * @returns {string}
 */
export function initialName() {
  const fromUrl = params.get('name');
  if (fromUrl) return fromUrl;
  try {
    return localStorage.getItem(NAME_KEY) ?? '';
  } catch {
    return '';
  }
}

/**
 * Remember the name for next time.
 * @param {string} name
 */
export function rememberName(name) {
  try {
    localStorage.setItem(NAME_KEY, name);
  } catch {
    // Storage may be disabled; nothing to do.
  }
}

/**
 * Publish the debugging hook: `window.switchboard = { room, stats }`. It lets a developer
 * (or an automated browser test) look at the live session from the console.
 * @param {object | null} session the Room or RandomSession, or null when left
 * @param {() => Promise<PeerStats[]>} [stats]
 */
export function setDebugHook(session, stats) {
  /** @type {any} */ (window).switchboard = session
    ? { room: session, stats: stats ?? (async () => []) }
    : { room: null, stats: async () => [] };
}

/**
 * Human-readable byte count.
 * @param {number} bytes
 * @returns {string}
 */
export function formatBytes(bytes) {
  if (bytes >= 1048576) return `${(bytes / 1048576).toFixed(1)} MB`;
  if (bytes >= 1024) return `${Math.round(bytes / 1024)} KB`;
  return `${bytes} B`;
}

/**
 * Create an element with a class and optional text.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElementTagNameMap[K]}
 */
export function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Draw one block per peer into a stats panel (`.peer-stats[data-peer-id]` with the name and
 * a line like "↓ 1.2 Mbit/s ↑ 900 kbit/s, loss 0.1%, RTT 12 ms, …"), reusing blocks so the
 * panel does not flicker. The server's block in SFU rooms also lists every remote stream
 * with its frames decoded (`.stream-stats[data-peer-id][data-kind]`).
 * @param {HTMLElement} container
 * @param {PeerStats[]} all
 * @param {string} emptyText shown when there are no peers
 */
export function renderStatsPanel(container, all, emptyText) {
  if (all.length === 0) {
    const p = container.querySelector('p.empty');
    if (!p || p.textContent !== emptyText) container.replaceChildren(h('p', 'muted-text empty', emptyText));
    return;
  }
  container.querySelector('p.empty')?.remove();
  const seen = new Set();
  for (const s of all) {
    seen.add(s.peerId);
    let block = /** @type {HTMLElement | null} */ (
      container.querySelector(`.peer-stats[data-peer-id="${CSS.escape(s.peerId)}"]`)
    );
    if (!block) {
      block = h('div', 'peer-stats');
      block.dataset.peerId = s.peerId;
      block.append(h('div', 'stats-name'), h('div', 'stats-line'));
      container.append(block);
    }
    const state = s.connectionState === 'connected' ? '' : ` (${s.connectionState})`;
    block.dataset.state = s.connectionState;
    block.querySelector('.stats-name')?.replaceChildren(`${s.name}${state}`);
    block.querySelector('.stats-line')?.replaceChildren(formatPeerStats(s));
    renderStreamStats(block, s.streams);
  }
  for (const block of container.querySelectorAll('.peer-stats')) {
    if (block instanceof HTMLElement && !seen.has(block.dataset.peerId ?? '')) block.remove();
  }
}

/**
 * The per-stream lines of a stats block (none unless `streams` is given).
 * @param {HTMLElement} block
 * @param {PeerStats['streams']} streams
 */
function renderStreamStats(block, streams) {
  let list = block.querySelector('ul.stream-stats-list');
  if (!streams) {
    list?.remove();
    return;
  }
  if (!list) {
    list = h('ul', 'stream-stats-list');
    block.append(list);
  }
  list.replaceChildren(
    ...streams.map((st) => {
      const li = h('li', 'stream-stats', formatStreamStats(st));
      li.dataset.peerId = st.peerId;
      li.dataset.kind = st.kind;
      return li;
    }),
  );
}
