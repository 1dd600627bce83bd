// BullMQ side of benchmarks/bench_peers.py. Run by Node with NODE_PATH pointing at a
// node_modules that holds `bullmq` and `ioredis` (installed outside the repository):
//
//   node bullmq_driver.js enqueue PORT N PRODUCERS   K producers share N Queue.add calls
//   node bullmq_driver.js bulk    PORT N BATCH       N jobs in Queue.addBulk calls of BATCH
//   node bullmq_driver.js worker  PORT N CONCURRENCY a Worker until N jobs have completed
//
// Protocol on stdout, one line each: `ready` once connected (the producers then wait for a line
// on stdin before they start); a producer then prints one JSON line with what it measured
// ({ops, elapsed_ns, cpu_ns, latencies_ns, queued}); a worker prints `done {json}` the moment
// its N-th job has completed ('completed' fires after the job is moved to completed in Redis),
// then exits. Every job is `send_email` with the same small params as the Python peers.
//
// Before it says `ready`, each process warms up V8's JIT on the code paths it is about to be
// timed on, on queues of their own (`bench-warmup-*`): a producer adds WARMUP_JOBS jobs (and,
// for `bulk`, two addBulk calls), a worker processes WARMUP_JOBS jobs. A fresh Node process would
// otherwise run the first few hundred operations in the interpreter, which a long-running
// service never does; the Python peers have no JIT to warm.
'use strict';

const readline = require('readline');
const { Queue, Worker } = require('bullmq');

const QUEUE = 'bench';
const TASK = 'send_email';
const WARMUP_JOBS = 300;
const TIMEOUT_MS = 300000;

const params = (i) => ({ user_id: i, template: 'welcome', locale: 'en' });
const nowNs = () => process.hrtime.bigint();
const cpuNs = () => {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) * 1000;
};

function waitForGo() {
  return new Promise((resolve) => {
    const lines = readline.createInterface({ input: process.stdin });
    lines.once('line', () => {
      lines.close();
      resolve();
    });
  });
}

async function produce(queue, count, latencies) {
  for (let i = 0; i < count; i += 1) {
    const t0 = nowNs();
    await queue.add(TASK, params(i));
    latencies.push(Number(nowNs() - t0));
  }
}

const someJobs = (count) => Array.from({ length: count },
  (_, i) => ({ name: TASK, data: params(i) }));

async function warmProducer(connection, bulkToo) {
  const queue = new Queue('bench-warmup-producer', { connection });
  await produce(queue, WARMUP_JOBS, []);
  if (bulkToo) {
    await queue.addBulk(someJobs(100));
    await queue.addBulk(someJobs(100));
  }
  await queue.close();
}

async function warmWorker(connection, concurrency) {
  const name = 'bench-warmup-worker';
  const queue = new Queue(name, { connection });
  await queue.addBulk(someJobs(WARMUP_JOBS));
  await new Promise((resolve, reject) => {
    let completed = 0;
    const worker = new Worker(name, async () => null, { connection, concurrency });
    worker.on('completed', () => {
      completed += 1;
      if (completed === WARMUP_JOBS) worker.close().then(resolve, reject);
    });
    worker.on('error', reject);
  });
  await queue.close();
}

async function enqueue(connection, n, producers) {
  const queue = new Queue(QUEUE, { connection });
  await queue.waitUntilReady();
  await warmProducer(connection, false);
  console.log('ready');
  await waitForGo();
  const latencies = [];
  const shares = Array.from({ length: producers },
    (_, p) => Math.floor(n / producers) + (p < n % producers ? 1 : 0));
  const wall0 = nowNs();
  const cpu0 = cpuNs();
  await Promise.all(shares.map((share) => produce(queue, share, latencies)));
  const elapsed = Number(nowNs() - wall0);
  const cpu = cpuNs() - cpu0;
  const queued = await queue.count();
  await queue.close();
  return { ops: n, elapsed_ns: elapsed, cpu_ns: cpu, latencies_ns: latencies, queued };
}

async function bulk(connection, n, batch) {
  const queue = new Queue(QUEUE, { connection });
  await queue.waitUntilReady();
  await warmProducer(connection, true);
  console.log('ready');
  await waitForGo();
  const wall0 = nowNs();
  const cpu0 = cpuNs();
  for (let start = 0; start < n; start += batch) {
    const jobs = [];
    for (let i = start; i < Math.min(n, start + batch); i += 1) {
      jobs.push({ name: TASK, data: params(i) });
    }
    await queue.addBulk(jobs);  // the jobs are built inside the timed window, as a caller would
  }
  const elapsed = Number(nowNs() - wall0);
  const cpu = cpuNs() - cpu0;
  const queued = await queue.count();
  await queue.close();
  return { ops: n, elapsed_ns: elapsed, cpu_ns: cpu, latencies_ns: [], queued };
}

function work(connection, n, concurrency) {
  return new Promise((resolve, reject) => {
    let completed = 0;
    let failed = 0;
    let cpu0 = cpuNs();
    const worker = new Worker(QUEUE, async () => null,
      { connection, concurrency, autorun: false });
    const finish = () => {
      const report = { completed, failed, cpu_ns: cpuNs() - cpu0 };
      console.log(`done ${JSON.stringify(report)}`);
      worker.close().then(() => resolve(null), reject);
    };
    worker.on('completed', () => {
      completed += 1;
      if (completed === n) finish();
    });
    worker.on('failed', () => {
      failed += 1;
      completed += 1;
      if (completed === n) finish();
    });
    worker.on('error', reject);
    worker.waitUntilReady().then(() => {
      worker.run().catch(reject);
      cpu0 = cpuNs();
      console.log('ready');
    }, reject);
  });
}

async function main() {
  const [mode, portText, nText, kText] = process.argv.slice(2);
  const connection = { host: '127.0.0.1', port: Number(portText) };
  const n = Number(nText);
  const k = Number(kText);
  if (!['enqueue', 'bulk', 'worker'].includes(mode) || !(n > 0) || !(k > 0)) {
    throw new Error('usage: bullmq_driver.js enqueue|bulk|worker PORT N K');
  }
  const timer = setTimeout(() => {
    console.error(`bullmq_driver ${mode}: gave up after ${TIMEOUT_MS} ms`);
    process.exit(2);
  }, TIMEOUT_MS);
  if (mode === 'worker') {
    await warmWorker(connection, k);
    await work(connection, n, k);
  } else {
    const result = mode === 'enqueue' ? await enqueue(connection, n, k)
      : await bulk(connection, n, k);
    console.log(JSON.stringify(result));
  }
  clearTimeout(timer);
}

main().then(() => process.exit(0), (error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
