// cloudqueue dashboard: plain JavaScript, no framework, no build step; it talks to this server
// only. Credentials live in sessionStorage and travel as request headers (never cookies, never
// in a URL). Views are chosen by the URL's hash: #/apps/<app>/overview|tasks|schedules|audit,
// #/apps/<app>/tasks/<uniqueId>.
'use strict';

(() => {
  const BASE = '/1.1/engine/cloud-queue';
  const STATES = ['queued', 'running', 'retry_wait', 'success', 'failed', 'cancelled'];
  const STATE_LABELS = {
    queued: 'Queued', running: 'Running', retry_wait: 'Retry wait', success: 'Success',
    failed: 'Failed', cancelled: 'Cancelled',
  };
  const FINAL = new Set(['success', 'failed', 'cancelled']);
  const STORE_KEY = 'cloudqueue.dashboard';
  const PAGE_SIZE = 50;
  const ACTOR = 'dashboard';

  const $ = (id) => document.getElementById(id);

  // ------------------------------------------------------------------ DOM helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }

  function setAttrs(el, attrs) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'testid') el.dataset.testid = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key.startsWith('on') && typeof value === 'function') {
        el.addEventListener(key.slice(2), value);
      } else el.setAttribute(key, value === true ? '' : String(value));
    }
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function fill(el, ...children) {
    el.replaceChildren();
    return append(el, children);
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    return el;
  }

  // ------------------------------------------------------------------ formatting

  const pad = (n, w = 2) => String(n).padStart(w, '0');

  function fmtTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return '–';
    const abs = Math.abs(ms);
    if (abs < 1000) return `${Math.round(ms)} ms`;
    if (abs < 60_000) return `${(ms / 1000).toFixed(abs < 10_000 ? 2 : 1)} s`;
    const s = Math.round(abs / 1000);
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function fmtAgo(iso, now = Date.now()) {
    if (!iso) return '';
    const ms = now - Date.parse(iso);
    if (Number.isNaN(ms)) return '';
    if (Math.abs(ms) < 1500) return 'just now';
    return ms >= 0 ? `${fmtDuration(ms).replace(/ \d+ (s|min)$/, '')} ago`
      : `in ${fmtDuration(-ms).replace(/ \d+ (s|min)$/, '')}`;
  }

  function fmtNumber(n, digits = 0) {
    if (n === null || n === undefined) return '–';
    return Number(n).toLocaleString('en-US', {maximumFractionDigits: digits});
  }

  function timeEl(iso) {
    if (!iso) return h('span', {class: 'muted'}, '–');
    return h('time', {datetime: iso, title: `${iso} (${fmtAgo(iso)})`}, fmtTime(iso));
  }

  function percentOf(progress) {
    if (!progress) return null;
    if (typeof progress.percent === 'number') return Math.max(0, Math.min(100, progress.percent));
    if (typeof progress.done === 'number' && typeof progress.total === 'number' && progress.total > 0) {
      return Math.max(0, Math.min(100, (100 * progress.done) / progress.total));
    }
    return null;
  }

  const stateOf = (info) => info.state || info.status;

  function badge(state, testid) {
    return h('span', {class: `badge ${state}`, testid, dataset: {state}},
      STATE_LABELS[state] || state);
  }

  function json(value) {
    return JSON.stringify(value, null, 2);
  }

  // local datetime-local input value <-> ISO (UTC) string
  function toLocalInput(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return '';
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function fromLocalInput(value) {
    if (!value) return '';
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? '' : d.toISOString();
  }

  // ------------------------------------------------------------------ session

  let auth = loadAuth();

  function loadAuth() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null');
      return saved && typeof saved.secret === 'string' ? saved : null;
    } catch {
      return null;
    }
  }

  function saveAuth(value) {
    auth = value;
    if (value) sessionStorage.setItem(STORE_KEY, JSON.stringify(value));
    else sessionStorage.removeItem(STORE_KEY);
  }

  const canAct = () => Boolean(auth) && auth.role !== 'viewer';

  function credentialHeaders(app, who = auth) {
    const headers = {};
    if (app) headers['X-LC-Id'] = app;
    if (who.mode === 'master') {
      headers['X-LC-Id'] = app || who.appId;
      headers['X-LC-Key'] = `${who.secret},master`;
    } else {
      headers.Authorization = `Bearer ${who.secret}`;
    }
    return headers;
  }

  // ------------------------------------------------------------------ API

  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  function url(path, query) {
    let out = BASE + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(query)) {
        if (value !== '' && value !== null && value !== undefined) params.set(key, value);
      }
      const text = params.toString();
      if (text) out += `?${text}`;
    }
    return out;
  }

  async function readError(response) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    const message = body && typeof body.error === 'string' ? body.error
      : `${response.status} ${response.statusText || 'error'}`;
    return new ApiError(response.status, message, body);
  }

  // One request to the API: the JSON answer, or an ApiError carrying the server's message.
  async function api(method, path, options = {}) {
    const {app = route.app, body, query, signal, headers: given} = options;
    const headers = {...(given || credentialHeaders(app))};
    if (method !== 'GET') headers['X-CloudQueue-Actor'] = ACTOR;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(url(path, query), {
        method, headers, signal, cache: 'no-store', credentials: 'omit',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      if (error.name === 'AbortError') throw error;
      throw new ApiError(0, `the server could not be reached (${error.message})`);
    }
    if (!response.ok) {
      const error = await readError(response);
      if (response.status === 401 && !given && auth) sessionExpired(error.message);
      throw error;
    }
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }

  // ------------------------------------------------------------------ live streams (SSE)

  // Reads a text/event-stream with fetch (headers carry the credentials; EventSource cannot
  // send them), calling onMessage(event, data) for each message. Reconnects with backoff when
  // the stream ends or fails, while keepGoing() and until the signal aborts.
  async function stream(path, {app, signal, onMessage, onStatus, keepGoing = () => true}) {
    let delay = 500;
    const status = (state, text) => onStatus && onStatus(state, text);
    while (!signal.aborted && keepGoing()) {
      status('connecting', 'connecting');
      let received = false;
      try {
        const response = await fetch(url(path), {
          headers: {...credentialHeaders(app), Accept: 'text/event-stream'},
          signal, cache: 'no-store', credentials: 'omit',
        });
        if (!response.ok) {
          const error = await readError(response);
          if (response.status === 401 && auth) {
            sessionExpired(error.message);
            return;
          }
          throw error;
        }
        status('live', 'live');
        streamProblem(null);
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        let event = 'message';
        let data = [];
        for (;;) {
          const {value, done} = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, {stream: true});
          let newline;
          while ((newline = buffer.indexOf('\n')) >= 0) {
            let line = buffer.slice(0, newline);
            buffer = buffer.slice(newline + 1);
            if (line.endsWith('\r')) line = line.slice(0, -1);
            if (line === '') {
              if (data.length) {
                received = true;
                let parsed;
                try {
                  parsed = JSON.parse(data.join('\n'));
                } catch {
                  parsed = data.join('\n');
                }
                onMessage(event, parsed);
              }
              event = 'message';
              data = [];
            } else if (line.startsWith(':')) {
              continue; // a keep-alive comment
            } else {
              const colon = line.indexOf(':');
              const field = colon < 0 ? line : line.slice(0, colon);
              let value = colon < 0 ? '' : line.slice(colon + 1);
              if (value.startsWith(' ')) value = value.slice(1);
              if (field === 'event') event = value;
              else if (field === 'data') data.push(value);
            }
          }
        }
      } catch (error) {
        if (signal.aborted) return;
        streamProblem(`Live updates interrupted: ${error.message}. Reconnecting…`);
      }
      if (signal.aborted || !keepGoing()) return;
      if (received) delay = 500;
      status('reconnecting', `reconnecting in ${Math.round(delay / 100) / 10} s`);
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 15_000);
    }
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener('abort', () => {
        clearTimeout(timer);
        resolve();
      }, {once: true});
    });
  }

  function setLive(state, text) {
    const live = $('live');
    live.dataset.state = state;
    live.textContent = text || '';
  }

  // ------------------------------------------------------------------ banners, toast, confirm

  function showError(message) {
    $('error-text').textContent = message;
    $('error-banner').hidden = false;
  }

  function clearError() {
    $('error-banner').hidden = true;
    $('error-text').textContent = '';
  }

  function reportError(error, what) {
    if (error && error.name === 'AbortError') return;
    const text = error instanceof ApiError || error instanceof Error ? error.message : String(error);
    showError(what ? `${what}: ${text}` : text);
  }

  function streamProblem(message) {
    const banner = $('stream-banner');
    banner.textContent = message || '';
    banner.hidden = !message;
  }

  let toastTimer = null;
  function toast(message) {
    const el = $('toast');
    el.textContent = message;
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
  }

  let modalDone = null;
  function confirmDialog(title, body, okLabel = 'OK', danger = false) {
    if (modalDone) modalDone(false);
    $('modal-title').textContent = title;
    fill($('modal-body'), body);
    const ok = $('modal-ok');
    ok.textContent = okLabel;
    ok.className = `button primary${danger ? ' danger' : ''}`;
    $('modal').hidden = false;
    ok.focus();
    return new Promise((resolve) => {
      modalDone = (answer) => {
        modalDone = null;
        $('modal').hidden = true;
        resolve(answer);
      };
    });
  }

  function wireModal() {
    $('modal-ok').addEventListener('click', () => modalDone && modalDone(true));
    $('modal-cancel').addEventListener('click', () => modalDone && modalDone(false));
    $('modal').addEventListener('click', (e) => {
      if (e.target === $('modal') && modalDone) modalDone(false);
    });
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && modalDone) modalDone(false);
    });
  }

  // An action button: confirm, call, report (the error's text in the banner), then `after`.
  function actionButton({label, testid, title, body, okLabel, danger, call, after}) {
    const button = h('button', {type: 'button', class: `button${danger ? ' danger' : ''}`, testid},
      label);
    button.addEventListener('click', async () => {
      if (!(await confirmDialog(title, body, okLabel || label, danger))) return;
      button.disabled = true;
      try {
        const answer = await call();
        clearError();
        if (after) await after(answer);
      } catch (error) {
        reportError(error, `${label} failed`);
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }

  // ------------------------------------------------------------------ routing and shell

  const route = {app: null, view: null, id: null, query: new URLSearchParams()};
  let current = null; // {abort: AbortController}

  function parseHash() {
    const raw = location.hash.replace(/^#/, '');
    const [path, query] = raw.split('?');
    const parts = path.split('/').filter(Boolean).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
    return {parts, query: new URLSearchParams(query || '')};
  }

  function appPath(app, ...rest) {
    return `#/apps/${encodeURIComponent(app)}/${rest.map(encodeURIComponent).join('/')}`;
  }

  function go(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  }

  function sessionExpired(message) {
    saveAuth(null);
    loginMessage = `Signed out: ${message}`;
    go('#/login');
  }

  let loginMessage = null;

  function render() {
    if (current) current.abort();
    current = new AbortController();
    const signal = current.signal;
    clearError();
    streamProblem(null);
    setLive('off');
    if (modalDone) modalDone(false);
    $('sidebar').classList.remove('open');
    const view = $('view');
    view.replaceChildren();
    for (const key of Object.keys(view.dataset)) if (key !== 'testid') delete view.dataset[key];
    const {parts, query} = parseHash();
    if (!auth) {
      shell(false);
      loginView(view);
      return;
    }
    if (parts[0] === 'login') {
      go(`#/apps/${encodeURIComponent(auth.apps[0] || '')}/overview`);
      return;
    }
    if (parts[0] !== 'apps' || !parts[1]) {
      if (!auth.apps.length) {
        shell(true);
        fill(view, h('div', {class: 'panel'}, 'These credentials cover no app.'));
        return;
      }
      go(appPath(auth.apps[0], 'overview'));
      return;
    }
    route.app = parts[1];
    route.view = parts[2] || 'overview';
    route.id = parts[3] || null;
    route.query = query;
    shell(true);
    if (!auth.apps.includes(route.app)) {
      showError(`No app ${JSON.stringify(route.app)} for these credentials; ` +
        `they cover ${auth.apps.join(', ') || 'none'}.`);
      return;
    }
    const ctx = {app: route.app, signal, query, view};
    if (route.view === 'overview') overviewView(ctx);
    else if (route.view === 'tasks' && route.id) taskView(ctx, route.id);
    else if (route.view === 'tasks') tasksView(ctx);
    else if (route.view === 'schedules') schedulesView(ctx);
    else if (route.view === 'audit') auditView(ctx);
    else showError(`No such view: ${route.view}`);
  }

  function shell(signedIn) {
    $('sidebar').hidden = !signedIn;
    $('topbar').hidden = !signedIn;
    if (!signedIn) return;
    const role = $('role');
    role.textContent = auth.role === 'viewer' ? 'viewer (read-only)' : auth.role;
    role.className = `role ${auth.role}`;
    role.dataset.role = auth.role;
    const picker = $('app-picker');
    if (picker.dataset.apps !== auth.apps.join('\n')) {
      fill(picker, auth.apps.map((app) => h('option', {value: app}, app)));
      picker.dataset.apps = auth.apps.join('\n');
    }
    picker.value = route.app || auth.apps[0] || '';
    $('app-picker-label').hidden = auth.apps.length < 2;
    for (const link of $('nav').querySelectorAll('a')) {
      link.href = appPath(route.app || auth.apps[0] || '', link.dataset.view);
      link.classList.toggle('active', link.dataset.view === route.view);
    }
  }

  function setTitle(...parts) {
    $('title').textContent = parts.filter(Boolean).join(' · ');
    document.title = `${parts.filter(Boolean).join(' · ')} — cloudqueue`;
  }

  // ------------------------------------------------------------------ login

  async function appsFor(headers) {
    const response = await fetch(url('/apps'), {headers, cache: 'no-store', credentials: 'omit'});
    if (response.ok) return response.json();
    throw await readError(response);
  }

  // The secret as a Bearer token first; if refused and an App ID is given, as its master key.
  async function login(appId, secret) {
    const token = {mode: 'token', secret};
    try {
      const answer = await appsFor(credentialHeaders(null, token));
      return {...token, role: answer.role, apps: answer.apps};
    } catch (error) {
      if (!(error instanceof ApiError) || (error.status !== 401 && error.status !== 403)) {
        throw error;
      }
      if (!appId) {
        throw new ApiError(401, 'Not a valid token. For an app\'s master key, give its App ID too.');
      }
    }
    const master = {mode: 'master', secret, appId};
    try {
      const answer = await appsFor(credentialHeaders(appId, master));
      return {...master, role: answer.role, apps: answer.apps};
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        throw new ApiError(401, `Neither a valid token nor the master key of app "${appId}".`);
      }
      throw error;
    }
  }

  function loginView(view) {
    setTitle('Sign in');
    const appId = h('input', {id: 'login-app-id', testid: 'login-app-id', autocomplete: 'username',
      placeholder: 'only for a master key', spellcheck: 'false'});
    const secret = h('input', {id: 'login-secret', testid: 'login-secret', type: 'password',
      autocomplete: 'current-password', required: true});
    const message = h('div', {class: 'banner error', testid: 'login-error', hidden: true});
    const submit = h('button', {type: 'submit', class: 'button primary', testid: 'login'}, 'Sign in');
    const form = h('form', {class: 'panel', testid: 'login-form'},
      h('h1', {}, h('img', {src: 'favicon.svg', alt: '', width: 26, height: 26}), 'cloudqueue'),
      h('div', {class: 'hint'}, 'Sign in with the server\'s operator or viewer token, or with ' +
        'an app\'s master key and its App ID. The credentials stay in this tab only.'),
      h('label', {class: 'field', for: 'login-app-id'}, 'App ID', appId),
      h('label', {class: 'field', for: 'login-secret'}, 'Master key or token', secret),
      message, submit);
    if (loginMessage) {
      message.textContent = loginMessage;
      message.hidden = false;
      loginMessage = null;
    }
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      submit.disabled = true;
      message.hidden = true;
      try {
        const who = await login(appId.value.trim(), secret.value.trim());
        saveAuth(who);
        const first = who.apps.includes(appId.value.trim()) ? appId.value.trim() : who.apps[0];
        go(first ? appPath(first, 'overview') : '#/');
      } catch (error) {
        message.textContent = error.message;
        message.hidden = false;
      } finally {
        submit.disabled = false;
      }
    });
    fill(view, h('div', {class: 'login'}, form));
    secret.focus();
  }

  // ------------------------------------------------------------------ charts

  // A small SVG line chart: series [{name, color, values: [number|null], unit}] over the same
  // points; a null value breaks its line. Labels are HTML around the SVG (which stretches).
  function lineChart(title, points, series, unit, digits = 1) {
    const width = 300;
    const height = 100;
    const values = series.flatMap((s) => s.values.filter((v) => typeof v === 'number'));
    const max = Math.max(...values, 0) || 1;
    const top = niceCeil(max);
    const n = points.length;
    const x = (i) => (n <= 1 ? width : (i * width) / (n - 1));
    const y = (v) => height - (v / top) * (height - 4) - 2;
    const plot = svg('svg', {viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none',
      role: 'img', 'aria-label': title});
    for (const f of [0.25, 0.5, 0.75]) {
      plot.append(svg('line', {x1: 0, x2: width, y1: height * f, y2: height * f,
        stroke: '#eef2f7', 'stroke-width': 1, 'vector-effect': 'non-scaling-stroke'}));
    }
    for (const s of series) {
      let d = '';
      let pen = false;
      s.values.forEach((v, i) => {
        if (typeof v !== 'number') {
          pen = false;
          return;
        }
        d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      });
      if (d) {
        const line = {d, fill: 'none', stroke: s.color, 'stroke-width': 2,
          'stroke-linejoin': 'round', 'vector-effect': 'non-scaling-stroke'};
        if (s.dashed) line['stroke-dasharray'] = '5 4'; // visible where it runs over another
        plot.append(svg('path', line));
      }
      // a value with no neighbour draws no line: a dot shows it
      s.values.forEach((v, i) => {
        const alone = typeof v === 'number' && typeof s.values[i - 1] !== 'number' &&
          typeof s.values[i + 1] !== 'number';
        if (alone) {
          plot.append(svg('circle', {cx: Math.min(Math.max(x(i), 2), width - 2), cy: y(v), r: 2.5,
            fill: s.color}));
        }
      });
    }
    const last = (s) => [...s.values].reverse().find((v) => typeof v === 'number');
    const legend = h('div', {class: 'legend'}, series.map((s) => {
      const i = h('i');
      i.style.background = s.color;
      const latest = last(s);
      return h('span', {}, i, s.name,
        h('b', {}, latest === undefined ? '–' : `${fmtNumber(latest, digits)} ${unit}`));
    }));
    const span = n > 1 ? Date.parse(points[n - 1].at) - Date.parse(points[0].at) : 0;
    const body = values.length ? h('div', {class: 'plot'},
      h('div', {class: 'ymax'}, `${fmtNumber(top, digits)} ${unit}`), plot)
      : h('div', {class: 'empty'}, 'no data yet');
    return h('div', {class: 'panel chart', testid: 'chart'}, h('h3', {}, title), legend, body,
      h('div', {class: 'xaxis'}, h('span', {}, span ? `−${fmtDuration(span)}` : ''),
        h('span', {}, 'now')));
  }

  function niceCeil(v) {
    const exp = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * exp) return m * exp;
    return 10 * exp;
  }

  // ------------------------------------------------------------------ overview

  function overviewView({app, signal, view}) {
    setTitle('Overview', app);
    const pauseButton = canAct() ? actionButton({
      label: 'Pause dispatch', testid: 'pause', danger: true, okLabel: 'Pause',
      title: `Pause app ${app}?`,
      body: 'No run starts while the app is paused; enqueues are still taken and runs in ' +
        'flight finish. Resume to let tasks run again.',
      call: () => api('POST', '/pause'), after: () => refresh(),
    }) : null;
    const resumeButton = canAct() ? actionButton({
      label: 'Resume', testid: 'resume', okLabel: 'Resume', title: `Resume app ${app}?`,
      body: 'Queued tasks start again, up to the app\'s concurrency.',
      call: () => api('POST', '/resume'), after: () => refresh(),
    }) : null;
    const pausedText = h('span', {class: 'grow'});
    const paused = h('div', {class: 'banner paused', testid: 'paused-banner', hidden: true},
      h('b', {}, 'Paused'), pausedText, resumeButton);
    const head = h('div', {class: 'toolbar'},
      h('div', {class: 'muted small', testid: 'overview-updated'}), h('div', {class: 'spacer'}),
      pauseButton);
    const cards = h('div', {class: 'cards', testid: 'state-cards'});
    const stats = h('div', {class: 'stats'});
    const charts = h('div', {class: 'charts', testid: 'charts'});
    fill(view, head, paused, cards, stats, charts);

    const draw = (o) => {
      view.dataset.paused = String(Boolean(o.paused));
      head.firstChild.textContent = `Updated ${fmtTime(o.now)}`;
      paused.hidden = !o.paused;
      pausedText.textContent = o.paused
        ? `Dispatch has been paused since ${fmtTime(o.pausedAt)} (${fmtAgo(o.pausedAt, Date.parse(o.now))}): ` +
          'tasks are taken but none starts.' : '';
      if (pauseButton) pauseButton.hidden = Boolean(o.paused);
      drawCards(cards, app, o.tasks || {});
      drawStats(stats, app, o);
      drawCharts(charts, o);
    };
    const refresh = async () => {
      try {
        draw(await api('GET', '/overview', {signal}));
      } catch (error) {
        reportError(error, 'Overview');
      }
    };
    refresh();
    stream('/events', {app, signal, onStatus: setLive,
      onMessage: (event, data) => { if (event === 'overview') draw(data); }});
  }

  function drawCards(cards, app, tasks) {
    fill(cards, STATES.map((state) => h('a', {class: `card state-${state}`,
      href: `${appPath(app, 'tasks')}?state=${state}`},
    h('div', {class: 'label'}, STATE_LABELS[state]),
    h('div', {class: 'value', testid: `state-count-${state}`, dataset: {count: tasks[state] ?? 0}},
      fmtNumber(tasks[state] ?? 0)))),
    h('a', {class: 'card total', href: appPath(app, 'tasks')},
      h('div', {class: 'label'}, 'Total held'),
      h('div', {class: 'value', testid: 'state-count-total'}, fmtNumber(tasks.total ?? 0))));
  }

  function stat(label, value, sub, testid, meter) {
    return h('div', {class: 'panel stat', testid},
      h('h3', {}, label), h('div', {class: 'value'}, value), sub ? h('div', {class: 'sub'}, sub) : null,
      meter || null);
  }

  function meterOf(used, limit) {
    if (!limit) return null;
    const ratio = Math.max(0, Math.min(1, used / limit));
    const bar = h('div');
    bar.style.width = `${(ratio * 100).toFixed(1)}%`;
    return h('div', {class: `meter${ratio >= 1 ? ' full' : ratio >= 0.8 ? ' warn' : ''}`}, bar);
  }

  function drawStats(stats, app, o) {
    const host = o.host || {};
    const hostValue = !host.configured ? h('span', {}, h('span', {class: 'dot'}), 'in-process')
      : host.up === false ? h('span', {}, h('span', {class: 'dot down'}), 'down')
        : h('span', {}, h('span', {class: 'dot up'}), 'up');
    const hostSub = !host.configured ? 'functions run in the server'
      : host.up === false ? 'dispatch waits while the host is probed' : 'the function host answers';
    const running = (o.tasks && o.tasks.running) || 0;
    const limited = o.runLimit !== undefined && o.runLimit < o.concurrency;
    const q = o.quotas || {};
    const quotaLines = [
      `today ${fmtNumber(q.today)}${q.perDay ? ` of ${fmtNumber(q.perDay)}` : ''}`,
      `unfinished ${fmtNumber(q.unfinished)}${q.held ? ` of ${fmtNumber(q.held)}` : ''}`,
      q.ratePerS ? `rate ≤ ${fmtNumber(q.ratePerS)}/s` : 'no rate limit',
    ];
    const quotaMeter = q.perDay ? meterOf(q.today, q.perDay) : q.held ? meterOf(q.unfinished, q.held) : null;
    fill(stats,
      stat('Function host', hostValue, hostSub, 'host-status'),
      stat('Runs in flight', `${fmtNumber(running)} / ${fmtNumber(o.runLimit)}`,
        limited ? `limit lowered to ${o.runLimit} of concurrency ${o.concurrency} (adaptive)`
          : `run limit ${fmtNumber(o.runLimit)} · concurrency ${fmtNumber(o.concurrency)}`,
        'run-limit', meterOf(running, o.runLimit)),
      stat('Oldest ready task', o.oldestReadyAgeMs === null || o.oldestReadyAgeMs === undefined ? '–'
        : o.oldestReadyAgeMs ? fmtDuration(o.oldestReadyAgeMs) : 'none waiting',
        'how long the longest-waiting ready task has waited', 'oldest-ready'),
      stat('Quotas', quotaLines[0], quotaLines.slice(1).join(' · '), 'quotas', quotaMeter),
      stat('Schedules', h('a', {href: appPath(app, 'schedules')}, fmtNumber(o.schedules)),
        'cron and interval schedules', 'schedules-count'));
  }

  function drawCharts(charts, o) {
    if (o.metrics === false) {
      fill(charts, h('div', {class: 'panel muted'},
        'The server runs without metrics (metrics = false), so there are no rate or latency charts.'));
      return;
    }
    const points = (o.series && o.series.points) || [];
    charts.dataset.points = String(points.length);
    const col = (key) => points.map((p) => p[key]);
    fill(charts,
      lineChart('Throughput', points, [
        {name: 'enqueued', color: '#2563eb', values: col('enqueuedPerS')},
        {name: 'finished', color: '#059669', values: col('finishedPerS'), dashed: true},
        {name: 'failed', color: '#dc2626', values: col('failedPerS')},
      ], '/s', 2),
      lineChart('Enqueue ack latency', points, [
        {name: 'p50', color: '#0891b2', values: col('ackP50Ms')},
        {name: 'p99', color: '#7c3aed', values: col('ackP99Ms')},
      ], 'ms', 1),
      lineChart('Run duration', points, [
        {name: 'p50', color: '#059669', values: col('runP50Ms')},
        {name: 'p95', color: '#d97706', values: col('runP95Ms')},
      ], 'ms', 0));
  }

  // ------------------------------------------------------------------ task list

  function tasksView({app, signal, query, view}) {
    setTitle('Tasks', app);
    const filters = {
      state: query.get('state') || '', function: query.get('function') || '',
      createdFrom: query.get('createdFrom') || '', createdTo: query.get('createdTo') || '',
    };
    const filtered = Object.values(filters).some(Boolean);
    const toHash = (f) => {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(f)) if (value) params.set(key, value);
      const text = params.toString();
      return appPath(app, 'tasks') + (text ? `?${text}` : '');
    };

    // state tabs, with counts from the overview messages
    const tabCounts = {};
    const tabs = h('div', {class: 'tabs', testid: 'state-tabs'},
      [['', 'All'], ...STATES.map((s) => [s, STATE_LABELS[s]])].map(([state, label]) => {
        const count = h('span', {class: 'count'});
        tabCounts[state || 'total'] = count;
        return h('a', {href: toHash({...filters, state}), class: filters.state === state ? 'active' : '',
          testid: `tab-${state || 'all'}`}, label, count);
      }));

    // filters
    const fn = h('input', {id: 'filter-function', testid: 'filter-function', value: filters.function,
      placeholder: 'any', spellcheck: 'false'});
    const stateSelect = h('select', {id: 'filter-state', testid: 'filter-state'},
      h('option', {value: ''}, 'any'), STATES.map((s) => h('option', {value: s}, STATE_LABELS[s])));
    stateSelect.value = filters.state;
    const from = h('input', {type: 'datetime-local', id: 'filter-from', testid: 'filter-from',
      value: toLocalInput(filters.createdFrom)});
    const to = h('input', {type: 'datetime-local', id: 'filter-to', testid: 'filter-to',
      value: toLocalInput(filters.createdTo)});
    const filterForm = h('form', {class: 'toolbar', testid: 'filters'},
      h('label', {class: 'field'}, 'State', stateSelect),
      h('label', {class: 'field'}, 'Function', fn),
      h('label', {class: 'field'}, 'Created from', from),
      h('label', {class: 'field'}, 'Created to', to),
      h('button', {type: 'submit', class: 'button primary', testid: 'apply-filters'}, 'Apply'),
      filtered ? h('a', {class: 'button ghost', href: toHash({}), testid: 'clear-filters'}, 'Clear') : null);
    filterForm.addEventListener('submit', (e) => {
      e.preventDefault();
      go(toHash({state: stateSelect.value, function: fn.value.trim(),
        createdFrom: fromLocalInput(from.value), createdTo: fromLocalInput(to.value)}));
    });

    // search by uniqueId
    const searchInput = h('input', {id: 'search-id', testid: 'search-id', placeholder: 'uniqueId',
      spellcheck: 'false'});
    const searchError = h('span', {class: 'muted', testid: 'search-error', hidden: true});
    const search = h('form', {class: 'row', testid: 'search'}, searchInput,
      h('button', {type: 'submit', class: 'button', testid: 'search-open'}, 'Open task'), searchError);
    search.addEventListener('submit', async (e) => {
      e.preventDefault();
      const id = searchInput.value.trim();
      searchError.hidden = true;
      if (!id) return;
      try {
        await api('GET', `/tasks/${encodeURIComponent(id)}`, {signal});
        go(appPath(app, 'tasks', id));
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          searchError.textContent = `No such task: there is no task "${id}" in app ${app}.`;
          searchError.hidden = false;
        } else reportError(error, 'Search');
      }
    });

    // bulk actions by the current filter
    const bulk = canAct() ? h('div', {class: 'row', testid: 'bulk-actions'},
      h('span', {class: 'muted small'}, 'By this filter:'),
      bulkButton(app, 'retry', 'Retry…', filters, () => load(cursor)),
      bulkButton(app, 'cancel', 'Cancel…', filters, () => load(cursor)),
      bulkButton(app, 'purge', 'Purge…', filters, () => load(null))) : null;

    const tbody = h('tbody', {testid: 'task-rows'});
    const summary = h('span', {class: 'muted small', testid: 'task-count'});
    const firstButton = h('button', {type: 'button', class: 'button', testid: 'first-page'}, '« First page');
    const nextButton = h('button', {type: 'button', class: 'button', testid: 'next-page'}, 'Next page »');
    const table = h('div', {class: 'panel flush'},
      h('div', {class: 'panel-head'}, tabs),
      h('div', {class: 'table-wrap'}, h('table', {testid: 'task-table'},
        h('thead', {}, h('tr', {}, h('th', {}, 'uniqueId'), h('th', {}, 'Function'), h('th', {}, 'State'),
          h('th', {class: 'nowrap'}, 'Attempt'), h('th', {}, 'Created'), h('th', {}, 'Progress'))),
        tbody)),
      h('div', {class: 'pager'}, summary, h('span', {class: 'spacer'}), firstButton, nextButton));
    fill(view, h('div', {class: 'panel'}, h('div', {class: 'toolbar'}, filterForm,
      h('div', {class: 'spacer'}), search)), bulk, table);

    let cursor = null;
    let next = null;
    let shown = new Map(); // uniqueId -> <tr>
    let loading = null;

    const load = async (at) => {
      const mine = {};
      loading = mine;
      try {
        const page = await api('GET', '/tasks', {signal, query: {
          state: filters.state, function: filters.function, createdFrom: filters.createdFrom,
          createdTo: filters.createdTo, cursor: at || '', limit: PAGE_SIZE}});
        if (loading !== mine) return;
        cursor = at;
        next = page.next || null;
        shown = new Map();
        const rows = (page.results || []).map((info) => {
          const tr = taskRow(app, info);
          shown.set(info.uniqueId, tr);
          return tr;
        });
        fill(tbody, rows.length ? rows : emptyRow(filtered ? 'No task matches these filters.' : 'No tasks yet.'));
        summary.textContent = typeof page.count === 'number'
          ? `${fmtNumber(page.count)} task${page.count === 1 ? '' : 's'}${cursor ? ' · a later page' : ''}`
          : `${rows.length} shown${cursor ? ' · a later page' : ''}`;
        nextButton.disabled = !next;
        firstButton.disabled = !cursor;
        view.dataset.loaded = String(Date.now());
      } catch (error) {
        reportError(error, 'Tasks');
      }
    };
    firstButton.addEventListener('click', () => load(null));
    nextButton.addEventListener('click', () => next && load(next));

    const matches = (info) => {
      if (filters.state && stateOf(info) !== filters.state) return false;
      if (filters.function && info.function !== filters.function) return false;
      const created = Date.parse(info.createdAt);
      if (filters.createdFrom && created < Date.parse(filters.createdFrom)) return false;
      if (filters.createdTo && created > Date.parse(filters.createdTo)) return false;
      return true;
    };

    // live: rows updated in place, new tasks on the first page at the top; at most one
    // re-render per 250 ms, at most one refetch per second when the server left some out
    const pending = new Map();
    let flushTimer = null;
    let refetchTimer = null;
    let lastRefetch = 0;
    const flush = () => {
      flushTimer = null;
      const added = [];
      for (const info of pending.values()) {
        const row = shown.get(info.uniqueId);
        if (row) {
          const fresh = taskRow(app, info);
          fresh.classList.add('flash');
          // still shown where it was, marked when it no longer matches the filters
          fresh.classList.toggle('out', !matches(info));
          row.replaceWith(fresh);
          shown.set(info.uniqueId, fresh);
        } else if (!cursor && matches(info)) {
          added.push(info);
        }
      }
      pending.clear();
      if (added.length) {
        const empty = tbody.querySelector('.empty-row');
        if (empty) empty.remove();
        for (const info of added) {
          // newest first: before the first row created earlier; a task older than every row
          // shown belongs to a later page, unless this is the last one
          const created = Date.parse(info.createdAt);
          const later = [...tbody.querySelectorAll('tr[data-testid=task-row]')]
            .find((tr) => Number(tr.dataset.created) < created);
          if (!later && next) continue;
          const tr = taskRow(app, info);
          tr.classList.add('flash');
          tbody.insertBefore(tr, later || null);
          shown.set(info.uniqueId, tr);
        }
        if (shown.size > PAGE_SIZE * 3) scheduleRefetch();
      }
    };
    const scheduleRefetch = () => {
      if (refetchTimer) return;
      const wait = Math.max(0, lastRefetch + 1000 - Date.now());
      refetchTimer = setTimeout(async () => {
        refetchTimer = null;
        lastRefetch = Date.now();
        await load(cursor);
      }, wait);
    };
    signal.addEventListener('abort', () => {
      clearTimeout(flushTimer);
      clearTimeout(refetchTimer);
    });
    const onTasks = (data) => {
      for (const info of data.tasks || []) pending.set(info.uniqueId, info);
      if (data.more) scheduleRefetch();
      if (!flushTimer) flushTimer = setTimeout(flush, 250);
    };
    const onOverview = (o) => {
      const tasks = o.tasks || {};
      for (const [key, el] of Object.entries(tabCounts)) el.textContent = fmtNumber(tasks[key] ?? 0);
    };
    load(null);
    stream('/events', {app, signal, onStatus: setLive, onMessage: (event, data) => {
      if (event === 'tasks') onTasks(data);
      else if (event === 'overview') onOverview(data);
    }});
  }

  function emptyRow(text) {
    return h('tr', {class: 'empty-row'}, h('td', {colspan: 6}, text));
  }

  function progressBar(progress, big, testid) {
    const percent = percentOf(progress);
    const bar = h('div');
    bar.style.width = `${percent ?? 0}%`;
    return h('div', {class: `progress${big ? ' big' : ''}${percent === 100 ? ' done' : ''}`,
      testid, dataset: {percent: percent === null ? '' : String(Math.round(percent * 10) / 10)},
      role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': 100,
      'aria-valuenow': percent ?? undefined}, bar);
  }

  function taskRow(app, info) {
    const state = stateOf(info);
    const percent = percentOf(info.progress);
    return h('tr', {testid: 'task-row', dataset: {uniqueId: info.uniqueId, state,
      created: String(Date.parse(info.createdAt) || 0)}},
      h('td', {class: 'id mono'}, h('a', {href: appPath(app, 'tasks', info.uniqueId),
        title: info.uniqueId}, info.uniqueId)),
      h('td', {}, info.function || ''),
      h('td', {}, badge(state, 'task-state')),
      h('td', {class: 'nowrap'}, `${info.attempt ?? '–'} / ${info.maxRuns ?? '–'}`),
      h('td', {class: 'nowrap'}, timeEl(info.createdAt)),
      h('td', {}, info.progress ? h('div', {class: 'progress-cell'},
        progressBar(info.progress, false, 'row-progress'),
        percent === null ? (info.progress.message || '') : `${Math.round(percent)}%`) : null));
  }

  function describeFilter(f) {
    const parts = [];
    if (f.state) parts.push(`state ${f.state}`);
    if (f.function) parts.push(`function ${f.function}`);
    if (f.createdFrom) parts.push(`created from ${fmtTime(f.createdFrom)}`);
    if (f.createdTo) parts.push(`created to ${fmtTime(f.createdTo)}`);
    return parts.length ? parts.join(', ') : 'no filter';
  }

  const BULK = {
    retry: {verb: 'Retry', done: 'Retried', states: ['failed', 'cancelled'],
      what: 'queued again, now'},
    cancel: {verb: 'Cancel', done: 'Cancelled', states: ['queued', 'retry_wait'],
      what: 'cancelled; they will not run'},
    purge: {verb: 'Purge', done: 'Purged', states: ['success', 'failed', 'cancelled'],
      what: 'deleted with their results; this cannot be undone'},
  };

  function bulkButton(app, action, label, filters, after) {
    const spec = BULK[action];
    const button = h('button', {type: 'button', class: `button small${action === 'retry' ? '' : ' danger'}`,
      testid: `bulk-${action}`}, label);
    if (filters.state && !spec.states.includes(filters.state)) {
      button.disabled = true; // the server would refuse it: say why beforehand
      button.title = `${spec.verb} applies to ${spec.states.join(', ')} tasks, not ${filters.state}`;
      return button;
    }
    button.addEventListener('click', async () => {
      const body = {};
      for (const key of ['state', 'function', 'createdFrom', 'createdTo']) {
        if (filters[key]) body[key] = filters[key];
      }
      button.disabled = true;
      try {
        const dry = await api('POST', `/tasks/${action}`, {body: {...body, dryRun: true}});
        const states = filters.state ? filters.state : spec.states.join(' or ');
        if (!dry.count) {
          toast(`No ${states} task matches (${describeFilter(filters)}): nothing to ${action}.`);
          return;
        }
        const more = dry.matched > dry.count ? ` (${fmtNumber(dry.matched)} match; one request ` +
          `takes ${fmtNumber(dry.count)})` : '';
        const ok = await confirmDialog(`${spec.verb} ${fmtNumber(dry.count)} task${dry.count === 1 ? '' : 's'}?`,
          h('div', {}, h('p', {}, h('b', {testid: 'bulk-count'}, fmtNumber(dry.count)),
            ` ${states} task${dry.count === 1 ? '' : 's'}${more} will be ${spec.what}.`),
          h('p', {class: 'small'}, `Filter: ${describeFilter(filters)}.`)),
          spec.verb, action !== 'retry');
        if (!ok) return;
        const done = await api('POST', `/tasks/${action}`, {body});
        clearError();
        toast(`${spec.done} ${fmtNumber(done.count)} task${done.count === 1 ? '' : 's'}.`);
        await after();
      } catch (error) {
        reportError(error, `${spec.verb} by filter`);
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }

  // ------------------------------------------------------------------ task page

  function taskView({app, signal, view}, id) {
    setTitle('Task', app);
    const actions = h('div', {class: 'actions'});
    const stateBadge = h('span');
    const head = h('div', {class: 'task-head'},
      h('a', {href: appPath(app, 'tasks'), class: 'button ghost small'}, '← Tasks'),
      h('h2', {class: 'mono', testid: 'task-id'}, id), stateBadge, actions);
    const waiting = h('div', {class: 'waiting', testid: 'waiting', hidden: true});
    const facts = h('dl', {class: 'facts', testid: 'task-facts'});
    const progressBox = h('div', {class: 'panel', testid: 'progress', hidden: true});
    const outcome = h('div', {class: 'panel', testid: 'outcome', hidden: true});
    const params = h('pre', {testid: 'params'});
    const options = h('pre', {testid: 'options'});
    const timeline = h('tbody', {testid: 'timeline'});
    const main = h('div', {class: 'task-body'},
      h('div', {class: 'grid2'}, h('div', {class: 'panel'}, h('h2', {}, 'Task'), facts),
        h('div', {class: 'panel'}, h('h2', {}, 'Params'), params, h('h2', {class: 'spaced'}, 'Options'),
          options)),
      progressBox, outcome,
      h('div', {class: 'panel flush'}, h('div', {class: 'panel-head'}, h('h2', {}, 'Run history')),
        h('div', {class: 'table-wrap'}, h('table', {testid: 'run-history'},
          h('thead', {}, h('tr', {}, ['When', 'Attempt', 'Slice', 'Duration', 'Outcome', 'Status', 'Error']
            .map((t) => h('th', {}, t)))), timeline))));
    const missing = h('div', {class: 'panel not-found', testid: 'not-found', hidden: true});
    fill(view, head, waiting, main, missing);
    main.hidden = true;

    let detail = null;
    let streaming = false;

    const draw = () => {
      const d = detail;
      const state = stateOf(d);
      view.dataset.state = state;
      fill(stateBadge, badge(state, 'task-state'));
      setTitle(d.function || 'Task', app);
      drawActions(d);
      const reason = d.waiting && (state === 'queued' || state === 'retry_wait') ? d.waiting : null;
      waiting.hidden = !reason;
      if (reason) {
        waiting.dataset.reason = reason.reason || '';
        fill(waiting, h('b', {}, 'Why it waits: '), reason.message || reason.reason,
          reason.until ? h('span', {class: 'muted'}, ` (until ${fmtTime(reason.until)})`) : null);
      }
      const fact = (label, value) => (value === null || value === undefined || value === '' ? []
        : [h('dt', {}, label), h('dd', {}, value)]);
      fill(facts,
        fact('State', badge(state)), fact('Status', d.status), fact('Function', h('code', {}, d.function)),
        fact('Attempt', d.attempt ? `${d.attempt} of ${d.maxRuns ?? '–'} runs`
          : `not run yet (up to ${d.maxRuns ?? '–'} runs)`),
        fact('Slices', d.slices), fact('Created', timeEl(d.createdAt)),
        fact('Started', d.startedAt ? timeEl(d.startedAt) : null),
        fact('Finished', d.finishedAt ? timeEl(d.finishedAt) : null),
        fact('Retry at', d.retryAt ? timeEl(d.retryAt) : null),
        fact('Expires', d.expiresAt ? timeEl(d.expiresAt) : null),
        fact('Schedule', d.schedule ? h('a', {href: appPath(app, 'schedules')}, d.schedule) : null),
        fact('Status code', d.statusCode));
      params.textContent = d.params === undefined ? '(not shown)' : json(d.params);
      options.textContent = d.options ? json(d.options) : '(not shown)';
      drawProgress(d);
      drawOutcome(d);
      drawTimeline(d);
    };

    const drawProgress = (d) => {
      const p = d.progress;
      progressBox.hidden = !p;
      if (!p) return;
      const percent = percentOf(p);
      const label = percent !== null ? `${Math.round(percent * 10) / 10}%`
        : (typeof p.done === 'number' ? `${fmtNumber(p.done)}${p.total ? ` / ${fmtNumber(p.total)}` : ''}` : '');
      const messages = (p.messages || []).slice(-20).reverse();
      fill(progressBox, h('h2', {}, 'Progress'),
        h('div', {class: 'progress-line'}, progressBar(p, true, 'progress-bar'),
          h('span', {class: 'pct', testid: 'progress-percent'}, label)),
        h('div', {class: 'small', testid: 'progress-message'}, p.message || ''),
        p.detail !== undefined ? h('pre', {class: 'small'}, json(p.detail)) : null,
        messages.length ? h('ul', {class: 'messages'}, messages.map((m) =>
          h('li', {}, h('time', {datetime: m.at}, fmtTime(m.at)), m.message))) : null);
    };

    const drawOutcome = (d) => {
      const state = stateOf(d);
      const failedRun = [...(d.runs || [])].reverse().find((r) => r.traceback);
      const parts = [];
      if (d.result !== undefined) parts.push(h('h2', {}, 'Result'), h('pre', {testid: 'result'}, json(d.result)));
      if (d.error) parts.push(h('h2', {}, state === 'success' ? 'Last error' : 'Error'),
        h('pre', {testid: 'error'}, d.error));
      if (failedRun && state !== 'success') { // (a success's earlier tracebacks: in the history)
        parts.push(h('h2', {}, `Traceback (attempt ${failedRun.attempt})`),
          h('pre', {testid: 'traceback'}, failedRun.traceback));
      }
      outcome.hidden = !parts.length;
      fill(outcome, parts);
    };

    const drawTimeline = (d) => {
      const entries = [];
      for (const run of d.runs || []) entries.push({at: run.startedAt, run});
      for (const action of d.actions || []) entries.push({at: action.at, action});
      // by time; at the same millisecond an action goes first (a retry starts the run after it)
      entries.sort((a, b) => (Date.parse(a.at) - Date.parse(b.at)) ||
        (a.action ? -1 : 0) - (b.action ? -1 : 0));
      if (!entries.length) {
        fill(timeline, h('tr', {class: 'empty-row'}, h('td', {colspan: 7}, 'No run yet.')));
        return;
      }
      fill(timeline, entries.map((e) => (e.run ? runRows(e.run) : actionRow(e.action))));
    };

    const runRows = (run) => {
      const outcomeName = run.outcome || (run.finishedAt ? '' : 'running');
      const rows = [h('tr', {testid: 'run-row', dataset: {attempt: run.attempt, outcome: outcomeName}},
        h('td', {class: 'nowrap'}, timeEl(run.startedAt)),
        h('td', {}, run.attempt), h('td', {}, run.slice),
        h('td', {class: 'nowrap'}, run.durationMs === undefined ? '–' : fmtDuration(run.durationMs)),
        h('td', {}, badge(outcomeName)),
        h('td', {}, run.statusCode ?? ''),
        h('td', {testid: 'run-error'}, run.error || ''))];
      if (run.traceback) {
        rows.push(h('tr', {class: 'traceback-row'}, h('td', {colspan: 7},
          h('details', {}, h('summary', {}, 'Traceback'), h('pre', {}, run.traceback)))));
      }
      return rows;
    };

    const actionRow = (action) => h('tr', {class: 'action-row', testid: 'action-row',
      dataset: {action: action.action}},
    h('td', {class: 'nowrap'}, timeEl(action.at)),
    h('td', {colspan: 6}, h('b', {}, ACTION_LABELS[action.action] || action.action),
      ` by ${action.by}${action.via ? ` via ${action.via}` : ''}${action.bulk ? ' (by filter)' : ''}`));

    const drawActions = (d) => {
      actions.replaceChildren();
      if (!canAct()) return;
      const state = stateOf(d);
      const path = (verb) => `/tasks/${encodeURIComponent(id)}/${verb}`;
      const after = async (info) => {
        if (info) toast(`Task is now ${STATE_LABELS[stateOf(info)] || stateOf(info)}.`);
        await load();
        startStream();
      };
      if (state === 'failed' || state === 'cancelled') {
        actions.append(actionButton({label: 'Retry', testid: 'retry', title: 'Retry this task?',
          body: 'It is queued again now, with a fresh set of runs; its run history is kept.',
          call: () => api('POST', path('retry')), after}));
      }
      const delayed = state === 'queued' && d.waiting && d.waiting.reason === 'delay';
      if (delayed || state === 'retry_wait') {
        actions.append(actionButton({label: 'Run now', testid: 'run-now', title: 'Run this task now?',
          body: state === 'retry_wait' ? 'Its backoff is skipped: it is ready at once.'
            : 'Its delay is skipped: it is ready at once.',
          call: () => api('POST', path('run-now')), after}));
      }
      if (state === 'queued' || state === 'retry_wait') {
        actions.append(actionButton({label: 'Cancel', testid: 'cancel', danger: true,
          okLabel: 'Cancel task', title: 'Cancel this task?', body: 'It will not run.',
          call: () => api('POST', path('cancel')), after}));
      }
    };

    let reloadTimer = null;
    let pollTimer = null;
    const load = async () => {
      try {
        detail = await api('GET', `/tasks/${encodeURIComponent(id)}/detail`, {signal});
        main.hidden = false;
        missing.hidden = true;
        draw();
        view.dataset.loaded = String(Date.now());
        clearTimeout(pollTimer);
        // "why it waits" can change without a task event (a pause, a resume, the host)
        if (!FINAL.has(stateOf(detail)) && stateOf(detail) !== 'running') {
          pollTimer = setTimeout(load, 3000);
        }
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          main.hidden = true;
          waiting.hidden = true;
          missing.hidden = false;
          fill(missing, h('h2', {}, 'No such task'),
            h('p', {class: 'muted'}, `There is no task "${id}" in app ${app} (or its result has expired).`),
            h('a', {href: appPath(app, 'tasks'), class: 'button'}, 'Back to the task list'));
        } else reportError(error, 'Task');
      }
    };
    const reloadSoon = () => {
      if (!reloadTimer) reloadTimer = setTimeout(() => { reloadTimer = null; load(); }, 200);
    };
    signal.addEventListener('abort', () => {
      clearTimeout(reloadTimer);
      clearTimeout(pollTimer);
    });

    const startStream = () => {
      if (streaming || signal.aborted) return;
      streaming = true;
      stream(`/tasks/${encodeURIComponent(id)}/events`, {
        app, signal, onStatus: setLive,
        keepGoing: () => !(detail && FINAL.has(stateOf(detail))),
        onMessage: (event, data) => {
          if (!data || !data.task || !detail) return;
          const {runs, ...task} = data.task;
          detail = {...detail, ...task, ...(runs ? {runs} : {})};
          if (!task.progress) delete detail.progress;
          if (!task.error) delete detail.error;
          if (event === 'progress') {
            drawProgress(detail);
          } else {
            draw();
            reloadSoon(); // actions, waiting and options come with the detail
          }
        },
      }).finally(() => {
        streaming = false;
        if (!signal.aborted) setLive('off');
      });
    };
    load().then(() => { if (detail) startStream(); });
  }

  const ACTION_LABELS = {retry: 'Retried', run_now: 'Run now', cancel: 'Cancelled',
    pause: 'Paused', resume: 'Resumed', purge: 'Purged'};

  // ------------------------------------------------------------------ schedules

  function schedulesView({app, signal, view}) {
    setTitle('Schedules', app);
    const tbody = h('tbody', {testid: 'schedule-rows'});
    const refreshButton = h('button', {type: 'button', class: 'button small'}, 'Refresh');
    fill(view, h('div', {class: 'panel flush'},
      h('div', {class: 'panel-head'}, h('h2', {}, 'Schedules'), refreshButton),
      h('div', {class: 'table-wrap'}, h('table', {},
        h('thead', {}, h('tr', {}, ['Name', 'Function', 'When', 'State', 'Next fire times', 'Last fired', '']
          .map((t) => h('th', {}, t)))), tbody))));
    const load = async () => {
      try {
        const answer = await api('GET', '/schedules', {signal});
        const rows = answer.results || [];
        fill(tbody, rows.length ? rows.map(scheduleRow)
          : h('tr', {class: 'empty-row'}, h('td', {colspan: 7}, 'No schedules.')));
        view.dataset.loaded = String(Date.now());
      } catch (error) {
        reportError(error, 'Schedules');
      }
    };
    const scheduleRow = (s) => {
      const path = (verb) => `/schedules/${encodeURIComponent(s.name)}/${verb}`;
      const buttons = canAct() ? h('div', {class: 'row'},
        s.paused ? actionButton({label: 'Resume', testid: 'schedule-resume', title: `Resume schedule ${s.name}?`,
          body: 'It fires again at its next time.', call: () => api('POST', path('resume')), after: load})
          : actionButton({label: 'Pause', testid: 'schedule-pause', title: `Pause schedule ${s.name}?`,
            body: 'It fires no task until resumed.', call: () => api('POST', path('pause')), after: load}),
        actionButton({label: 'Run now', testid: 'schedule-run-now', title: `Run ${s.name} now?`,
          body: `One task of ${s.function} now, outside the schedule's times.`,
          call: () => api('POST', path('run-now')),
          after: (answer) => {
            toast(`Queued ${answer && answer.uniqueId ? answer.uniqueId : 'a task'}.`);
            if (answer && answer.uniqueId) go(appPath(app, 'tasks', answer.uniqueId));
          }})) : null;
      const when = s.cron !== undefined ? h('span', {}, h('code', {}, s.cron), h('span', {class: 'muted small'}, ` ${s.timezone || ''}`))
        : `every ${fmtDuration(s.interval)}`;
      return h('tr', {testid: 'schedule-row', dataset: {name: s.name, paused: String(Boolean(s.paused))}},
        h('td', {}, h('b', {}, s.name)), h('td', {}, h('code', {}, s.function)), h('td', {}, when),
        h('td', {}, s.paused ? h('span', {class: 'badge paused'}, 'paused') : h('span', {class: 'badge active'}, 'active')),
        h('td', {class: 'small'}, (s.nextFireTimes || []).slice(0, 3).map((t) => h('div', {}, timeEl(t)))),
        h('td', {class: 'nowrap'}, s.lastFiredAt ? timeEl(s.lastFiredAt) : h('span', {class: 'muted'}, 'never')),
        h('td', {}, buttons));
    };
    refreshButton.addEventListener('click', load);
    load();
  }

  // ------------------------------------------------------------------ audit

  function auditView({app, signal, view}) {
    setTitle('Audit', app);
    const tbody = h('tbody', {testid: 'audit-rows'});
    const refreshButton = h('button', {type: 'button', class: 'button small', testid: 'audit-refresh'}, 'Refresh');
    fill(view, h('div', {class: 'panel flush'},
      h('div', {class: 'panel-head'}, h('h2', {}, 'Operator actions'),
        h('span', {class: 'muted small'}, 'newest first'), refreshButton),
      h('div', {class: 'table-wrap'}, h('table', {},
        h('thead', {}, h('tr', {}, ['When', 'Who', 'Via', 'Action', 'Target or filter', 'Tasks']
          .map((t) => h('th', {}, t)))), tbody))));
    const load = async () => {
      try {
        const answer = await api('GET', '/audit', {signal, query: {limit: 200}});
        const rows = answer.results || [];
        fill(tbody, rows.length ? rows.map((e) => h('tr', {testid: 'audit-row', dataset: {action: e.action}},
          h('td', {class: 'nowrap'}, timeEl(e.at)), h('td', {}, e.by), h('td', {}, e.via || h('span', {class: 'muted'}, '–')),
          h('td', {}, h('b', {}, e.action)),
          h('td', {class: 'mono small'}, e.uniqueId ? h('a', {href: appPath(app, 'tasks', e.uniqueId)}, e.uniqueId)
            : e.filter ? describeAuditFilter(e.filter) : h('span', {class: 'muted'}, 'the app')),
          h('td', {}, fmtNumber(e.count))))
          : h('tr', {class: 'empty-row'}, h('td', {colspan: 6}, 'No operator action yet.')));
        view.dataset.loaded = String(Date.now());
      } catch (error) {
        reportError(error, 'Audit');
      }
    };
    refreshButton.addEventListener('click', load);
    load();
  }

  function describeAuditFilter(filter) {
    return Object.entries(filter).map(([key, value]) =>
      `${key}=${Array.isArray(value) ? value.join(',') : key.startsWith('created') ? fmtTime(value) : value}`).join(' ');
  }

  // ------------------------------------------------------------------ start

  async function revalidate() {
    // the saved credentials may have changed role or apps (or stopped working) since
    if (!auth) return;
    try {
      const answer = await appsFor(credentialHeaders(auth.mode === 'master' ? auth.appId : null));
      const changed = answer.role !== auth.role || answer.apps.join('\n') !== auth.apps.join('\n');
      saveAuth({...auth, role: answer.role, apps: answer.apps});
      if (changed) render();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) sessionExpired(error.message);
    }
  }

  function start() {
    wireModal();
    $('error-close').addEventListener('click', clearError);
    $('logout').addEventListener('click', () => {
      saveAuth(null);
      go('#/login');
    });
    $('menu').addEventListener('click', () => $('sidebar').classList.toggle('open'));
    $('app-picker').addEventListener('change', (e) => {
      const view = route.view === 'tasks' && route.id ? 'tasks' : route.view || 'overview';
      go(appPath(e.target.value, view));
    });
    window.addEventListener('hashchange', render);
    render();
    revalidate();
  }

  start();
})();
