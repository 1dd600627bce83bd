'use strict';
// Drives a cloudqueue server with the real LeanEngine SDK (AV.Cloud.enqueue / getTaskInfo) and
// prints ONE JSON object with what each scenario observed. It judges nothing itself:
// tests/adapters/test_sdk_compat.py asserts on the output.
//
//   node driver.js               run every scenario (or: node driver.js success,failure,...)
//   node driver.js client SPEC   internal: a second SDK client with other credentials (see below)
//
// Env: QUEUE_URL (the queue server), HOST_URL (the LeanEngine host, for its call log and a direct
// call), LEANCLOUD_APP_ID / LEANCLOUD_APP_KEY / LEANCLOUD_APP_MASTER_KEY / LEANCLOUD_APP_HOOK_KEY
// (as LeanEngine sets them for an app, so the SDK also sends X-LC-Hook-Key and X-LC-Prod: 0).
//
// In the output, a Date the SDK made (finishedAt, retryAt) appears as {"$date": "<ISO string>"},
// so the test can see the SDK really converted it. A rejection appears as
// {"rejected": true, "code": err.code, "message": err.message, "rawMessage": err.rawMessage}.

const {execFile} = require('child_process');
const {promisify} = require('util');
const AV = require('leanengine');

const env = process.env;
const QUEUE_URL = env.QUEUE_URL;
const HOST_URL = env.HOST_URL;
const POLL_MS = 50;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ------------------------------------------------------------------------------------ helpers

function plain(value) {
  if (value instanceof Date) return {$date: value.toISOString()};
  if (Array.isArray(value)) return value.map(plain);
  if (value && typeof value === 'object') {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = plain(v);
    return out;
  }
  return value;
}

function rejection(err) {
  return {
    rejected: true,
    code: err.code === undefined ? null : err.code,
    message: String(err.message),
    rawMessage: err.rawMessage === undefined ? null : err.rawMessage,
  };
}

// Resolves to the plain value, or to a rejection record: never throws.
async function settle(promise) {
  try {
    return plain(await promise);
  } catch (err) {
    return rejection(err);
  }
}

const enqueue = (name, params, options) => settle(AV.Cloud.enqueue(name, params, options));
const info = (uniqueId) => settle(AV.Cloud.getTaskInfo(uniqueId));

// Polls getTaskInfo until the task is final (or limitMs passes). Returns the final answer, the
// distinct answers seen on the way (history) and how long it took.
async function waitFinal(uniqueId, limitMs = 10000) {
  const started = Date.now();
  const history = [];
  let last = null;
  while (Date.now() - started < limitMs) {
    last = await info(uniqueId);
    const text = JSON.stringify(last);
    if (!history.length || JSON.stringify(history[history.length - 1]) !== text) {
      history.push(last);
    }
    if (last.rejected || last.status !== 'queued') break;
    await sleep(POLL_MS);
  }
  return {final: last, history, waitedMs: Date.now() - started};
}

async function hostLog() {
  const response = await fetch(`${HOST_URL}/__compat/log`);
  return response.json();
}

async function hostCalls(key) {
  return (await hostLog()).filter((entry) => entry.key === key);
}

async function waitForHostCall(key, limitMs = 5000) {
  const started = Date.now();
  while (Date.now() - started < limitMs) {
    const calls = await hostCalls(key);
    if (calls.length) return calls;
    await sleep(20);
  }
  return [];
}

// A direct call to the host, bypassing the queue, with the app key only.
async function callHostDirectly(name, params) {
  const response = await fetch(`${HOST_URL}/1.1/functions/${name}`, {
    method: 'POST',
    headers: {
      'Content-Type': 'application/json',
      'X-LC-Id': env.LEANCLOUD_APP_ID,
      'X-LC-Key': env.LEANCLOUD_APP_KEY,
    },
    body: JSON.stringify(params),
  });
  return {status: response.status, body: await response.json()};
}

// A second, separate SDK client (its own process: the SDK is a singleton), with the given
// credentials and none of the LEANCLOUD_* variables.
async function otherClient(spec) {
  const childEnv = {};
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith('LEANCLOUD_')) childEnv[k] = v;
  }
  const {stdout, stderr} = await promisify(execFile)(
    process.execPath, [__filename, 'client', JSON.stringify(spec)],
    {env: childEnv, timeout: 30000});
  return {...JSON.parse(stdout), stderr};
}

async function runClient(spec) {
  AV.init({appId: spec.appId, appKey: spec.appKey, masterKey: spec.masterKey,
    serverURL: QUEUE_URL});
  if (spec.useMasterKey) AV.Cloud.useMasterKey();
  const results = [];
  for (const action of spec.actions) {
    if (action.op === 'enqueue') {
      results.push(await enqueue(action.name, action.params, action.options));
    } else {
      results.push(await info(action.uniqueId));
    }
  }
  process.stdout.write(JSON.stringify({results}));
}

// ---------------------------------------------------------------------------------- scenarios

const P = Date.now().toString(36);  // keeps this run's ids and keys apart
const id = (name) => `${P}-${name}`;
const shared = {};                  // ids later scenarios reuse

const scenarios = {
  async success() {
    const params = {key: id('ok'), n: 42, nested: {list: [1, 'two', null, true]}, text: 'héllo ✓'};
    const options = {};
    const enqueued = await enqueue('echo', params, options);
    const waited = await waitFinal(enqueued.uniqueId);
    shared.successId = enqueued.uniqueId;
    return {params, enqueued, optionsAfterEnqueue: options, ...waited,
      hostCalls: await hostCalls(params.key)};
  },

  async customUniqueId() {
    const uniqueId = id('uid');
    // The delay keeps the first task queued while the duplicate arrives.
    const first = await enqueue('echo', {key: uniqueId, which: 'first'}, {uniqueId, delay: 300});
    const duplicate = await enqueue('echo', {key: `${uniqueId}-2`, which: 'second'}, {uniqueId});
    const waited = await waitFinal(uniqueId);
    const duplicateAfterFinish = await enqueue('echo', {key: `${uniqueId}-3`}, {uniqueId});
    return {uniqueId, first, duplicate, duplicateAfterFinish, ...waited,
      hostCalls: await hostCalls(uniqueId),
      duplicateHostCalls: (await hostCalls(`${uniqueId}-2`)).concat(
        await hostCalls(`${uniqueId}-3`))};
  },

  async failure() {
    const uniqueId = id('fail');
    const enqueued = await enqueue('fail', {key: uniqueId}, {uniqueId, attempts: 2, backoff: 500});
    const waited = await waitFinal(uniqueId);
    return {uniqueId, enqueued, ...waited, hostCalls: await hostCalls(uniqueId)};
  },

  async timeoutAtMostOnce() {
    const uniqueId = id('tmo-most');
    const enqueued = await enqueue('slow', {key: uniqueId, ms: 3000},
      {uniqueId, timeout: 500, deliveryMode: 'atMostOnce', attempts: 3, backoff: 100});
    const waited = await waitFinal(uniqueId);
    await sleep(700);  // a retry, if one (wrongly) came, would have started by now
    return {uniqueId, enqueued, ...waited, hostCalls: await hostCalls(uniqueId)};
  },

  async timeoutAtLeastOnce() {
    const uniqueId = id('tmo-least');
    const enqueued = await enqueue('slow', {key: uniqueId, ms: 3000},
      {uniqueId, timeout: 500, deliveryMode: 'atLeastOnce', attempts: 1, backoff: 100});
    const waited = await waitFinal(uniqueId);
    await sleep(300);
    return {uniqueId, enqueued, ...waited, hostCalls: await hostCalls(uniqueId)};
  },

  async delay() {
    const uniqueId = id('delay');
    const enqueuedAt = Date.now();
    const enqueued = await enqueue('echo', {key: uniqueId}, {uniqueId, delay: 1500});
    await sleep(Math.max(0, enqueuedAt + 500 - Date.now()));
    const at500 = await info(uniqueId);
    const hostCallsAt500 = await hostCalls(uniqueId);
    const waited = await waitFinal(uniqueId);
    return {uniqueId, enqueuedAt, enqueued, at500, hostCallsAt500, ...waited,
      hostCalls: await hostCalls(uniqueId)};
  },

  async priority() {
    const blocker = id('prio-blocker');
    // The blocker holds the only slot (concurrency 1) until released, so all three wait for it.
    const blockerEnqueued = await enqueue('record', {key: blocker, gate: true},
      {uniqueId: blocker});
    const blockerCalls = await waitForHostCall(blocker);
    const enqueued = {};
    for (const priority of [3, 1, 2]) {
      const uniqueId = id(`prio-${priority}`);
      enqueued[priority] = await enqueue('record', {key: uniqueId, ms: 50},
        {uniqueId, priority});
    }
    await sleep(100);  // let the queue dispatch, if it (wrongly) would, before the release
    await fetch(`${HOST_URL}/__compat/release/${blocker}`, {method: 'POST'});
    const finals = {};
    for (const uniqueId of [blocker, id('prio-1'), id('prio-2'), id('prio-3')]) {
      finals[uniqueId] = (await waitFinal(uniqueId)).final;
    }
    const runOrder = (await hostLog())
      .filter((entry) => entry.fn === 'record' && entry.key.startsWith(id('prio-')))
      .sort((a, b) => a.startedAt - b.startedAt)
      .map((entry) => entry.key);
    return {blocker, blockerEnqueued, blockerStartedBeforeOthers: blockerCalls.length === 1,
      enqueued, finals, runOrder,
      expectedOrder: [blocker, id('prio-1'), id('prio-2'), id('prio-3')]};
  },

  async internalFunction() {
    const key = id('secret');
    const enqueued = await enqueue('secret', {key}, {uniqueId: key});
    const waited = await waitFinal(key);
    return {enqueued, ...waited, hostCalls: await hostCalls(key),
      directInternalCall: await callHostDirectly('secret', {key: `${key}-direct`}),
      directPublicCall: await callHostDirectly('echo', {key: `${key}-public`})};
  },

  async unknownId() {
    return {answer: await info(id('no-such-task'))};
  },

  async keepResult() {
    const uniqueId = id('keep');
    const enqueued = await enqueue('echo', {key: uniqueId, round: 1}, {uniqueId, keepResult: 1000});
    const waited = await waitFinal(uniqueId);
    const finishedAtMs = Date.parse(waited.final.finishedAt && waited.final.finishedAt.$date);
    const duplicateWhileKept = await enqueue('echo', {key: uniqueId, round: 'dup'},
      {uniqueId, keepResult: 1000});
    await sleep(Math.max(0, finishedAtMs + 500 - Date.now()));
    const atHalf = await info(uniqueId);
    let gone = null;
    let goneAfterMs = null;
    while (Date.now() < finishedAtMs + 6000) {
      const answer = await info(uniqueId);
      if (answer.rejected) {
        gone = answer;
        goneAfterMs = Date.now() - finishedAtMs;
        break;
      }
      await sleep(POLL_MS);
    }
    const again = await enqueue('echo', {key: uniqueId, round: 2}, {uniqueId, keepResult: 1000});
    const againWaited = await waitFinal(uniqueId);
    return {uniqueId, enqueued, first: waited.final, duplicateWhileKept, atHalf, gone,
      goneAfterMs, again, againFinal: againWaited.final};
  },

  async credentials() {
    const appId = env.LEANCLOUD_APP_ID;
    const appKey = env.LEANCLOUD_APP_KEY;
    const masterKey = env.LEANCLOUD_APP_MASTER_KEY;
    const existing = shared.successId;
    const attempt = (name) => ({op: 'enqueue', name: 'echo', params: {key: id(name)},
      options: {uniqueId: id(name)}});
    // Separate processes, started together: loading the SDK takes a while on a busy machine.
    const specs = {
      wrongMasterKey: {appId, appKey, masterKey: 'not-the-master-key',
        actions: [attempt('bad-master')]},
      appKeyOnly: {appId, appKey,
        actions: [attempt('bad-appkey'), {op: 'info', uniqueId: existing}]},
      wrongAppKey: {appId, appKey: 'not-the-app-key',
        actions: [{op: 'info', uniqueId: existing}, attempt('bad-wrongkey')]},
      wrongAppId: {appId: 'not-this-app', appKey, masterKey,
        actions: [attempt('bad-appid'), {op: 'info', uniqueId: existing}]},
      useMasterKey: {appId, appKey, masterKey, useMasterKey: true,
        actions: [{op: 'info', uniqueId: existing}]},
    };
    const names = Object.keys(specs);
    const answers = await Promise.all(names.map((name) => otherClient(specs[name])));
    const clients = Object.fromEntries(names.map((name, i) => [name, answers[i]]));
    const created = {};
    for (const name of ['bad-master', 'bad-appkey', 'bad-wrongkey', 'bad-appid']) {
      created[name] = {info: await info(id(name)), hostCalls: await hostCalls(id(name))};
    }
    return {existing, clients, created};
  },
};

async function main() {
  const wanted = process.argv[2] ? process.argv[2].split(',') : Object.keys(scenarios);
  AV.init({
    appId: env.LEANCLOUD_APP_ID,
    appKey: env.LEANCLOUD_APP_KEY,
    masterKey: env.LEANCLOUD_APP_MASTER_KEY,
    hookKey: env.LEANCLOUD_APP_HOOK_KEY,
    serverURL: QUEUE_URL,
  });
  const out = {prefix: P, timings: {}};
  for (const name of wanted) {
    const started = Date.now();
    try {
      out[name] = await scenarios[name]();
    } catch (err) {
      out[name] = {crashed: String(err && err.stack ? err.stack : err)};
    }
    out.timings[name] = Date.now() - started;
  }
  process.stdout.write(JSON.stringify(out));
}

if (process.argv[2] === 'client') {
  runClient(JSON.parse(process.argv[3])).catch((err) => {
    process.stdout.write(JSON.stringify({crashed: String(err && err.stack)}));
  });
} else {
  main();
}
