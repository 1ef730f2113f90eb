// The quicft dashboard (served by server/src/http/dashboard.rs). A client of the JSON API only:
// GET /api/v1/transfers, /api/v1/files, /api/v1/clients and /metrics, every REFRESH_MS.
//
// Client ids and file names are chosen by devices: they reach the page through textContent,
// property assignments and data-* attributes only: no string is ever parsed as HTML.
// With `[http] token` configured the API answers 401: the page then asks for the token, keeps it
// in sessionStorage (this tab only) and sends it as `Authorization: Bearer` on every fetch,
// downloads included (fetched with the header and saved through a Blob URL).
'use strict';

(function () {
  const REFRESH_MS = 2000;
  const TOKEN_KEY = 'quicft-dashboard-token';
  /** Finished files kept and shown, newest first. */
  const KEEP_FILES = 25;
  /** Pages of the file list read in one refresh at most (1000 files each). */
  const MAX_FILE_PAGES = 10;
  const TRANSPORTS = ['quic', 'tls', 'tcp'];

  const $ = (id) => document.getElementById(id);

  let token = readToken();
  let timer = null;
  let running = false;
  /** The previous /metrics scrape, for rates: { t: ms, in, out, cmds }. */
  let prev = null;
  /**
   * The file list is oldest first with cursor paging; the newest are on the last page. We keep the
   * cursor that starts the last page seen (`tailCursor`, null = the beginning), the files before it
   * (`prefix`, the last KEEP_FILES only) and that page (`tail`): each refresh re-reads from
   * `tailCursor` and moves on while pages are full.
   */
  let files = { prefix: [], tail: [], tailCursor: null };

  class Unauthorized extends Error {}

  function readToken() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (_) {
      return '';
    }
  }

  function saveToken(t) {
    token = t;
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      else sessionStorage.removeItem(TOKEN_KEY);
    } catch (_) {
      /* storage disabled: the token lives until the page is reloaded */
    }
  }

  function authHeaders() {
    return token ? { Authorization: 'Bearer ' + token } : {};
  }

  async function api(path) {
    const r = await fetch(path, {
      headers: authHeaders(),
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
    });
    if (r.status === 401) throw new Unauthorized();
    if (!r.ok) {
      const e = new Error(path + ': HTTP ' + r.status);
      e.status = r.status;
      throw e;
    }
    return r;
  }

  // ---- formatting -------------------------------------------------------------------------

  function fmtBytes(n) {
    if (n == null || !isFinite(n)) return '?';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    let i = 0;
    let v = Number(n);
    while (Math.abs(v) >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? String(Math.round(v)) : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[i];
  }

  function fmtRate(bps) {
    return bps > 0 ? fmtBytes(bps) + '/s' : '–';
  }

  function fmtCount(n) {
    return n == null ? '–' : Math.round(n).toLocaleString('en-US');
  }

  function fmtDuration(s) {
    if (s == null || !isFinite(s) || s < 0) return '?';
    s = Math.round(s);
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
    if (s < 86400) return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
    return Math.floor(s / 86400) + ' d ' + Math.floor((s % 86400) / 3600) + ' h';
  }

  function fmtTime(unix) {
    const d = new Date(unix * 1000);
    const now = new Date();
    const time = d.toLocaleTimeString('en-GB');
    return d.toDateString() === now.toDateString() ? time : d.toISOString().slice(0, 10) + ' ' + time;
  }

  // ---- DOM helpers (text only) ------------------------------------------------------------

  /** An element with a class and text content; `text` is never parsed as markup. */
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  }

  function td(cls, ...children) {
    const c = el('td', cls);
    for (const ch of children) c.append(ch instanceof Node ? ch : String(ch));
    return c;
  }

  function setText(id, text) {
    $(id).textContent = text;
  }

  function setStatus(kind, text) {
    const s = $('status');
    s.className = 'status ' + kind;
    s.textContent = text;
  }

  /**
   * A path segment for an id. Browsers resolve `.` and `..` segments (also as %2E) before
   * sending, so such ids cannot be addressed by URL: null.
   */
  function segment(id) {
    const s = encodeURIComponent(id);
    return /^(\.|%2e){1,2}$/i.test(s) ? null : s;
  }

  // ---- /metrics ---------------------------------------------------------------------------

  /** Prometheus text format → [{ name, labels, value }]. */
  function parseMetrics(text) {
    const out = [];
    const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
    const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    for (const l of text.split('\n')) {
      if (!l || l[0] === '#') continue;
      const m = line.exec(l);
      if (!m) continue;
      const labels = {};
      if (m[2]) {
        for (const lm of m[2].matchAll(label)) labels[lm[1]] = lm[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
      }
      out.push({ name: m[1], labels, value: Number(m[3]) });
    }
    return out;
  }

  function sum(samples, name, pred) {
    let s = 0;
    for (const x of samples) if (x.name === name && (!pred || pred(x.labels))) s += x.value;
    return s;
  }

  function renderCounters(samples) {
    const now = Date.now();
    const cur = {
      t: now,
      in: sum(samples, 'quicft_received_bytes_total'),
      out: sum(samples, 'quicft_sent_bytes_total'),
      cmds: sum(samples, 'quicft_file_commands_total'),
    };
    const dt = prev ? (now - prev.t) / 1000 : 0;
    const rate = (k) => (prev && dt > 0 && cur[k] >= prev[k] ? (cur[k] - prev[k]) / dt : null);

    setText('c-conn', fmtCount(sum(samples, 'quicft_connections')));
    setText(
      'c-conn-sub',
      TRANSPORTS.map((t) => t + ' ' + fmtCount(sum(samples, 'quicft_connections', (l) => l.transport === t))).join(' · ') +
        ' · accepted ' + fmtCount(sum(samples, 'quicft_connections_accepted_total'))
    );
    setText('c-clients', fmtCount(sum(samples, 'quicft_clients_connected')));
    setText('c-clients-sub', 'with an open session');
    setText('c-in', fmtBytes(cur.in));
    setText('c-in-sub', rate('in') == null ? 'rate after the next refresh' : fmtBytes(rate('in')) + '/s now');
    setText('c-out', fmtBytes(cur.out));
    setText('c-out-sub', rate('out') == null ? 'rate after the next refresh' : fmtBytes(rate('out')) + '/s now');
    const refused = sum(samples, 'quicft_file_commands_total', (l) => l.code !== '0x00');
    setText('c-cmds', fmtCount(cur.cmds));
    setText(
      'c-cmds-sub',
      fmtCount(refused) + ' refused (not 0x00)' + (rate('cmds') == null ? '' : ' · ' + rate('cmds').toFixed(1) + '/s')
    );
    $('c-cmds-sub').classList.toggle('warn', refused > 0);
    setText('c-held', fmtBytes(sum(samples, 'quicft_transfer_bytes_held')));
    setText(
      'c-held-sub',
      fmtCount(sum(samples, 'quicft_transfers', (l) => l.state !== 'complete')) + ' in progress · ' +
        fmtCount(sum(samples, 'quicft_transfers', (l) => l.state === 'complete')) + ' complete'
    );
    prev = cur;
  }

  // ---- transfers --------------------------------------------------------------------------

  /** The held ranges of a transfer as a strip: filled where the server holds bytes. */
  function rangeStrip(t) {
    const total = t.size != null ? t.size : t.ranges.reduce((m, r) => Math.max(m, r[1]), 0);
    const c = el('canvas', 'strip');
    const cssW = 220;
    const cssH = 14;
    const dpr = window.devicePixelRatio || 1;
    c.width = Math.round(cssW * dpr);
    c.height = Math.round(cssH * dpr);
    c.setAttribute('role', 'img');
    const described = t.ranges.slice(0, 8).map((r) => '[' + r[0] + ', ' + r[1] + ')').join(' ');
    const label = t.ranges.length + ' range' + (t.ranges.length === 1 ? '' : 's') + ' held' +
      (t.ranges.length ? ': ' + described + (t.ranges.length > 8 ? ' …' : '') : '');
    c.setAttribute('aria-label', label);
    c.title = label;
    c.dataset.ranges = JSON.stringify(t.ranges);
    const g = c.getContext('2d');
    if (!g) return c;
    const styles = getComputedStyle(document.documentElement);
    g.fillStyle = styles.getPropertyValue('--strip-empty').trim() || '#ddd';
    g.fillRect(0, 0, c.width, c.height);
    if (total > 0) {
      g.fillStyle = styles.getPropertyValue('--strip-held').trim() || '#2da44e';
      for (const [a, b] of t.ranges) {
        const x = (a / total) * c.width;
        const w = Math.max(((b - a) / total) * c.width, 1);
        g.fillRect(x, 0, w, c.height);
      }
    }
    return c;
  }

  function progressCell(t) {
    const bar = el('div', 'bar');
    const fill = el('div', 'fill');
    bar.append(fill);
    let text;
    if (t.size != null && t.size > 0) {
      const pct = Math.min(100, (t.bytes_held / t.size) * 100);
      fill.style.width = pct.toFixed(2) + '%'; // CSSOM: allowed by style-src 'self'
      bar.setAttribute('role', 'progressbar');
      bar.setAttribute('aria-valuemin', '0');
      bar.setAttribute('aria-valuemax', '100');
      bar.setAttribute('aria-valuenow', pct.toFixed(1));
      text = fmtBytes(t.bytes_held) + ' of ' + fmtBytes(t.size) + ' (' + pct.toFixed(1) + '%)';
    } else if (t.size === 0) {
      fill.style.width = '100%';
      text = 'empty file';
    } else {
      bar.classList.add('unknown');
      text = fmtBytes(t.bytes_held) + ' of an undeclared size';
    }
    return td('progress', bar, el('div', 'sub pct', text));
  }

  function renderTransfers(list) {
    const body = $('transfers').tBodies[0];
    const rows = [];
    const now = Date.now() / 1000;
    for (const t of list) {
      const tr = el('tr');
      tr.dataset.clientId = t.client_id;
      tr.dataset.fileId = t.file_id;
      tr.dataset.bytesHeld = String(t.bytes_held);
      const transport = t.transport ? el('span', 'badge ' + t.transport, t.transport) : el('span', 'badge offline', 'offline');
      tr.append(
        td('client', el('span', 'id', t.client_id), ' ', transport),
        td('file', el('div', 'name', t.name), el('div', 'sub', 'id ' + t.file_id)),
        progressCell(t),
        td('ranges', rangeStrip(t)),
        td(
          'num rate',
          el('div', null, fmtRate(t.rate_bytes_per_sec)),
          el(
            'div',
            'sub',
            t.rate_bytes_per_sec > 0 && t.size != null && t.size > t.bytes_held
              ? 'done in ~' + fmtDuration((t.size - t.bytes_held) / t.rate_bytes_per_sec)
              : ''
          )
        ),
        td('state', el('div', 'state-' + t.state, t.state), el('div', 'sub', 'last data ' + fmtDuration(now - t.updated_at) + ' ago'))
      );
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    $('transfers-empty').hidden = list.length > 0;
    setText('transfers-count', String(list.length));
  }

  // ---- finished files ---------------------------------------------------------------------

  async function loadFiles() {
    for (let i = 0; i < MAX_FILE_PAGES; i++) {
      const q = '/api/v1/files?limit=1000' + (files.tailCursor ? '&cursor=' + encodeURIComponent(files.tailCursor) : '');
      let page;
      try {
        page = await (await api(q)).json();
      } catch (e) {
        if (e.status === 400) files = { prefix: [], tail: [], tailCursor: null }; // cursor refused: start over
        throw e;
      }
      if (page.next_cursor) {
        files.prefix = files.prefix.concat(page.files).slice(-KEEP_FILES);
        files.tail = [];
        files.tailCursor = page.next_cursor;
      } else {
        files.tail = page.files;
        break;
      }
    }
    const now = Date.now() / 1000;
    return files.prefix
      .concat(files.tail)
      .filter((f) => f.expire_at == null || f.expire_at > now)
      .slice(-KEEP_FILES)
      .reverse();
  }

  /** A download link; with a token the click fetches with the header and saves a Blob. */
  function downloadLink(f) {
    const c = segment(f.client_id);
    const id = segment(f.file_id);
    if (c == null || id == null) return el('span', 'sub', 'id not addressable by URL');
    const a = el('a', 'download', 'Download');
    a.href = '/api/v1/files/' + c + '/' + id + '/content';
    a.download = f.name || f.file_id;
    a.rel = 'noopener';
    a.addEventListener('click', (ev) => {
      if (!token) return; // open API: the plain link works
      ev.preventDefault();
      download(a, f);
    });
    return a;
  }

  async function download(a, f) {
    a.classList.add('busy');
    try {
      const r = await api(a.getAttribute('href'));
      const blob = await r.blob();
      const url = URL.createObjectURL(blob);
      const tmp = document.createElement('a');
      tmp.href = url;
      tmp.download = f.name || f.file_id;
      document.body.append(tmp);
      tmp.click();
      tmp.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (e) {
      if (e instanceof Unauthorized) askToken('The token was refused.');
      else setStatus('error', 'download failed: ' + e.message);
    } finally {
      a.classList.remove('busy');
    }
  }

  function renderFiles(list) {
    const body = $('files').tBodies[0];
    const rows = list.map((f) => {
      const tr = el('tr');
      tr.dataset.clientId = f.client_id;
      tr.dataset.fileId = f.file_id;
      const sha = el('code', 'sha', f.sha256.slice(0, 12) + '…');
      sha.title = f.sha256;
      tr.append(
        td('time', fmtTime(f.finished_at)),
        td('client', el('span', 'id', f.client_id)),
        td('file', el('div', 'name', f.name), el('div', 'sub', 'id ' + f.file_id + ' · took ' + fmtDuration(f.finished_at - f.started_at))),
        td('num', fmtBytes(f.size)),
        td(null, sha),
        td(null, downloadLink(f))
      );
      return tr;
    });
    body.replaceChildren(...rows);
    $('files-empty').hidden = list.length > 0;
    setText('files-count', list.length >= KEEP_FILES ? 'last ' + KEEP_FILES : String(list.length));
  }

  // ---- clients ----------------------------------------------------------------------------

  function renderClients(list) {
    const now = Date.now() / 1000;
    const groups = new Map(TRANSPORTS.map((t) => [t, []]));
    for (const c of list) {
      if (!groups.has(c.transport)) groups.set(c.transport, []);
      groups.get(c.transport).push(c);
    }
    const parts = [];
    for (const [transport, cs] of groups) {
      const box = el('div', 'group');
      box.dataset.transport = transport;
      box.append(el('h3', null, transport.toUpperCase() + ' · ' + cs.length));
      if (cs.length) {
        const table = el('table', 'clients');
        const head = el('tr');
        for (const h of ['Client', 'Address', 'Connected', 'Streams', 'In', 'Out']) head.append(el('th', null, h));
        table.append(el('thead'), el('tbody'));
        table.tHead.append(head);
        for (const c of cs) {
          const tr = el('tr');
          tr.dataset.clientId = c.client_id;
          tr.append(
            td('client', el('span', 'id', c.client_id)),
            td('addr', c.address),
            td(null, fmtDuration(now - c.connected_at)),
            td('num', fmtCount(c.streams)),
            td('num', fmtBytes(c.bytes_in)),
            td('num', fmtBytes(c.bytes_out))
          );
          table.tBodies[0].append(tr);
        }
        box.append(table);
      }
      parts.push(box);
    }
    $('clients').replaceChildren(...parts);
    $('clients-empty').hidden = list.length > 0;
    setText('clients-count', String(list.length));
  }

  // ---- the loop ---------------------------------------------------------------------------

  async function refresh() {
    timer = null;
    running = true;
    try {
      const [transfers, clients, metrics] = await Promise.all([
        api('/api/v1/transfers').then((r) => r.json()),
        api('/api/v1/clients').then((r) => r.json()),
        api('/metrics').then((r) => r.text()),
      ]);
      const recent = await loadFiles();
      renderCounters(parseMetrics(metrics));
      renderTransfers(transfers.transfers);
      renderFiles(recent);
      renderClients(clients.clients);
      $('login').hidden = true;
      $('main').hidden = false;
      $('forget').hidden = !token;
      setStatus('ok', 'live · updated ' + new Date().toLocaleTimeString('en-GB'));
      document.title = 'quicft · ' + transfers.transfers.length + ' in progress';
    } catch (e) {
      if (e instanceof Unauthorized) {
        askToken(token ? 'The token was refused.' : null);
        return; // no polling until a token is entered
      }
      setStatus('error', 'cannot reach the server (' + (e.message || e) + '); retrying');
    } finally {
      running = false;
    }
    schedule(REFRESH_MS);
  }

  function schedule(ms) {
    if (timer != null) clearTimeout(timer);
    timer = setTimeout(refresh, ms);
  }

  /** Shows the token form and hides every figure: nothing is on screen without the token. */
  function askToken(message) {
    if (timer != null) clearTimeout(timer);
    timer = null;
    saveToken('');
    prev = null;
    files = { prefix: [], tail: [], tailCursor: null };
    for (const id of ['transfers', 'files']) $(id).tBodies[0].replaceChildren();
    $('clients').replaceChildren();
    $('main').hidden = true;
    $('forget').hidden = true;
    $('login').hidden = false;
    if (message) setText('login-msg', message);
    setStatus('locked', 'token needed');
    $('token').value = '';
    $('token').focus();
  }

  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    if (!t) return;
    if (!/^[\x20-\x7e]+$/.test(t)) {
      setText('login-msg', 'A token is printable ASCII (it goes in an HTTP header).');
      return;
    }
    saveToken(t);
    $('login').hidden = true;
    setStatus('', 'checking the token…');
    if (!running) refresh();
  });

  $('forget').addEventListener('click', () => askToken(null));

  document.addEventListener('visibilitychange', () => {
    // Catch up at once when the tab comes back (timers are throttled in background tabs).
    if (!document.hidden && timer != null && !running) schedule(0);
  });

  refresh();
})();
