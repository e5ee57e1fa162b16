// Unit tests of the SDK's ICE helpers that need no browser: `npm run test:sdk`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { fetchIceConfig, refreshDelayMs, sanitizeIceServers } from '../../web/sdk/ice.js';

test('refresh at half the credential lifetime, between 30 s and 10 min', () => {
  assert.equal(refreshDelayMs(undefined), 600_000);
  assert.equal(refreshDelayMs(86_400), 600_000);
  assert.equal(refreshDelayMs(600), 300_000);
  assert.equal(refreshDelayMs(120), 60_000);
  assert.equal(refreshDelayMs(10), 30_000);
});

test('bad ICE server URLs are dropped, good ones kept', () => {
  const out = sanitizeIceServers([
    { urls: ['stun:a:3478', 'stun:a:3478?transport=udp', 'http://x'] },
    { urls: 'turn:b:3478?transport=tcp', username: 'u', credential: 'c' },
    { urls: ['ftp://nothing'] },
    null,
  ]);
  assert.deepEqual(out, [
    { urls: ['stun:a:3478'] },
    { urls: ['turn:b:3478?transport=tcp'], username: 'u', credential: 'c' },
  ]);
});

/** Serves `body` with `status` on a loopback port for one test. */
async function withServer(status, body, run) {
  const server = http.createServer((_req, res) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(body);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    return await run(`http://127.0.0.1:${server.address().port}/api/ice-servers`);
  } finally {
    server.close();
  }
}

test('the ttl comes with the servers', async () => {
  const body = JSON.stringify({ iceServers: [{ urls: ['stun:h:3478'] }], ttl: 300 });
  const config = await withServer(200, body, fetchIceConfig);
  assert.deepEqual(config, { iceServers: [{ urls: ['stun:h:3478'] }], ttl: 300 });
});

test('no ttl, a bad ttl, an error status or bad JSON leave no ttl', async () => {
  const noTtl = await withServer(200, '{"iceServers":[]}', fetchIceConfig);
  assert.deepEqual(noTtl, { iceServers: [] });
  const badTtl = await withServer(200, '{"iceServers":[],"ttl":"soon"}', fetchIceConfig);
  assert.deepEqual(badTtl, { iceServers: [] });
  assert.deepEqual(await withServer(500, '{}', fetchIceConfig), { iceServers: [] });
  assert.deepEqual(await withServer(200, 'not json', fetchIceConfig), { iceServers: [] });
});
