'use strict';
// A real LeanEngine function host (leanengine 3.8.0 + express) for the SDK compatibility test.
//
// Env: LEANCLOUD_APP_ID, LEANCLOUD_APP_KEY, LEANCLOUD_APP_MASTER_KEY, LEANCLOUD_APP_HOOK_KEY,
// PORT (0 picks a free one). Prints "READY <port>" once listening on 127.0.0.1.
//
// Every call of a cloud function below is appended to an in-memory log, which
// GET /__compat/log returns as JSON: {fn, key, attempt, startedAt, endedAt, master, hook,
// session, queueAttempt}. The driver reads it to count calls and to see the order of runs.
// POST /__compat/release/<key> lets a gated `record` call finish (see below).

const AV = require('leanengine');
const express = require('express');

const env = process.env;
const hookKey = env.LEANCLOUD_APP_HOOK_KEY;

AV.init({
  appId: env.LEANCLOUD_APP_ID,
  appKey: env.LEANCLOUD_APP_KEY,
  masterKey: env.LEANCLOUD_APP_MASTER_KEY,
  hookKey,
  // AV.init insists on a server URL for a non-US app id. The host never calls it: the queue
  // sends no session token, so no AV.User.become() happens.
  serverURL: env.LEANCLOUD_API_SERVER || 'http://127.0.0.1:1',
});

const log = [];
const attemptsByKey = new Map();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function record(fn, request) {
  const req = request.expressReq || {headers: {}};
  const params = request.params || {};
  const key = typeof params.key === 'string' ? params.key : '';
  const attempt = (attemptsByKey.get(`${fn}/${key}`) || 0) + 1;
  attemptsByKey.set(`${fn}/${key}`, attempt);
  const entry = {
    fn,
    key,
    attempt,
    startedAt: Date.now(),
    endedAt: null,
    master: Boolean(req.AV && req.AV.authMasterKey),
    hook: hookKey !== undefined && req.headers['x-lc-hook-key'] === hookKey,
    session: Boolean(req.headers['x-lc-session']),
    queueAttempt: req.headers['x-cloudqueue-attempt'] || null,
  };
  log.push(entry);
  return entry;
}

AV.Cloud.define('echo', async (request) => {
  record('echo', request).endedAt = Date.now();
  return request.params;
});

AV.Cloud.define('fail', async (request) => {
  const entry = record('fail', request);
  entry.endedAt = Date.now();
  throw new AV.Cloud.Error(`boom-${entry.key} (attempt ${entry.attempt})`, {status: 500});
});

AV.Cloud.define('slow', async (request) => {
  const entry = record('slow', request);
  await sleep(Number(request.params.ms) || 2000);
  entry.endedAt = Date.now();
  return {slept: true};
});

// With {gate: true} it holds its slot until POST /__compat/release/<key> (or 10 s pass), so the
// priority test can queue tasks behind it however slow the machine is.
const released = new Set();
AV.Cloud.define('record', async (request) => {
  const entry = record('record', request);
  if (request.params.gate) {
    for (let waited = 0; waited < 10000 && !released.has(entry.key); waited += 10) await sleep(10);
  } else {
    await sleep(Number(request.params.ms) || 50);
  }
  entry.endedAt = Date.now();
  return {key: entry.key};
});

AV.Cloud.define('secret', {internal: true}, async (request) => {
  record('secret', request).endedAt = Date.now();
  return 'inside';
});

const app = express();
app.get('/__compat/log', (req, res) => res.json(log));
app.post('/__compat/release/:key', (req, res) => {
  released.add(req.params.key);
  res.json({released: req.params.key});
});
app.use(AV.express());

const server = app.listen(Number(env.PORT || 0), '127.0.0.1', () => {
  console.log(`READY ${server.address().port}`);
});

process.on('SIGTERM', () => server.close(() => process.exit(0)));
