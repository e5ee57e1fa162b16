// @ts-check
/**
 * ICE server configuration from the server (`GET /api/ice-servers`): STUN and, when
 * configured, TURN with short-lived credentials.
 * @module
 */

/**
 * Fetch the `iceServers` array for `RTCPeerConnection`. Never throws: on any failure it
 * returns `[]` (host candidates still work on a LAN).
 * @param {string} [url]
 * @returns {Promise<RTCIceServer[]>}
 */
export async function fetchIceServers(url = '/api/ice-servers') {
  return (await fetchIceConfig(url)).iceServers;
}

/**
 * Like {@link fetchIceServers}, with the credentials' lifetime in seconds (`ttl`, absent
 * when the server hands out no expiring credentials or the request failed).
 * @param {string} [url]
 * @returns {Promise<{ iceServers: RTCIceServer[], ttl?: number }>}
 */
export async function fetchIceConfig(url = '/api/ice-servers') {
  try {
    const res = await fetch(url, { cache: 'no-store' });
    if (!res.ok) return { iceServers: [] };
    const body = await res.json();
    const iceServers = Array.isArray(body?.iceServers) ? sanitizeIceServers(body.iceServers) : [];
    const ttl = Number.isFinite(body?.ttl) && body.ttl > 0 ? body.ttl : undefined;
    return ttl === undefined ? { iceServers } : { iceServers, ttl };
  } catch {
    return { iceServers: [] };
  }
}

/** Longest and shortest wait between two credential refreshes. */
const REFRESH_MAX_MS = 10 * 60 * 1000;
const REFRESH_MIN_MS = 30 * 1000;

/**
 * When to fetch fresh credentials again: at half their lifetime, so that a refresh that
 * fails once still leaves time for the next, and never less often than every 10 minutes
 * nor more often than every 30 seconds.
 * @param {number} [ttl] seconds, as `/api/ice-servers` gives it
 * @returns {number} milliseconds
 */
export function refreshDelayMs(ttl) {
  if (ttl === undefined) return REFRESH_MAX_MS;
  return Math.min(REFRESH_MAX_MS, Math.max(REFRESH_MIN_MS, (ttl * 1000) / 2));
}

/**
 * Drop ICE server URLs browsers refuse, so that one bad entry cannot make
 * `new RTCPeerConnection()` throw: STUN URLs take no query (`?transport=` is for TURN
 * only, RFC 7064/7065), and only `stun:`, `stuns:`, `turn:` and `turns:` schemes exist.
 * Servers left without URLs are removed.
 * @param {RTCIceServer[]} servers
 * @returns {RTCIceServer[]}
 */
export function sanitizeIceServers(servers) {
  /** @type {RTCIceServer[]} */
  const out = [];
  for (const server of servers) {
    if (!server || typeof server !== 'object') continue;
    const list = Array.isArray(server.urls) ? server.urls : [server.urls];
    const urls = list.filter(
      (url) =>
        typeof url === 'string' &&
        (/^turns?:[^?]+(\?transport=(udp|tcp))?$/i.test(url) || /^stuns?:[^?]+$/i.test(url)),
    );
    if (urls.length) out.push({ ...server, urls });
  }
  return out;
}

/**
 * Whether these ICE servers include a TURN relay (a `turn:` or `turns:` URL). With
 * `iceTransportPolicy: 'relay'` a connection can only use relayed candidates, so without a
 * TURN server it can never connect.
 * @param {RTCIceServer[]} servers
 * @returns {boolean}
 */
export function offersRelay(servers) {
  return servers.some((server) => {
    const list = Array.isArray(server?.urls) ? server.urls : [server?.urls];
    return list.some((url) => typeof url === 'string' && /^turns?:/i.test(url));
  });
}

/**
 * Checks an `iceTransportPolicy` option: `'all'` (the default, when undefined) or `'relay'`.
 * Anything else throws, so that a misspelt `'relay'` cannot quietly allow direct
 * connections.
 * @param {unknown} policy
 * @returns {RTCIceTransportPolicy}
 */
export function checkIceTransportPolicy(policy) {
  if (policy === undefined || policy === 'all') return 'all';
  if (policy === 'relay') return 'relay';
  throw new TypeError(`iceTransportPolicy must be 'all' or 'relay', not ${JSON.stringify(policy)}`);
}
