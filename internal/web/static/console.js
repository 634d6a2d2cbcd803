// Toygres console: live updates, selections, confirmations, connection
// string reveal/copy and relative times. Plain JavaScript, no build step.
'use strict';

window.toygresConsole = { loadedAt: Date.now(), polls: 0, swaps: 0, errors: 0 };

(function () {
  const body = document.body;
  const pollMs = parseInt(body.dataset.poll || '0', 10);
  // A form post re-rendered with an error shows (and polls) its page's URL,
  // so that a reload does not post the form again.
  const pageURL = body.dataset.liveUrl || (location.pathname + location.search);
  if (pageURL !== location.pathname + location.search && history.replaceState) {
    history.replaceState(null, '', pageURL);
  }
  const liveStatus = document.getElementById('live-status');
  const selected = new Set(); // checked instance names (bulk delete)
  const lastHTML = {};
  let revealed = null; // the revealed connection string, kept across swaps
  let timer = null;

  // ---- relative times --------------------------------------------------
  function ago(ms) {
    const s = Math.round(ms / 1000);
    if (s < 0) return 'in ' + (-s) + ' s';
    if (s < 60) return s + ' s ago';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ago';
    const h = Math.floor(m / 60);
    if (h < 48) return h + ' h ago';
    return Math.floor(h / 24) + ' d ago';
  }
  function relTimes(root) {
    const now = Date.now();
    root.querySelectorAll('time[data-rel]').forEach(function (t) {
      const d = Date.parse(t.getAttribute('datetime'));
      if (!isNaN(d)) t.textContent = ago(now - d);
    });
  }

  // ---- bulk selection ----------------------------------------------------
  function boxes() {
    return Array.from(document.querySelectorAll('#bulk-delete input[type=checkbox][name=name]'));
  }
  function applySelection() {
    const present = new Set();
    boxes().forEach(function (b) {
      present.add(b.value);
      b.checked = selected.has(b.value);
    });
    Array.from(selected).forEach(function (v) { if (!present.has(v)) selected.delete(v); });
    const all = document.querySelector('[data-select-all]');
    const bs = boxes();
    if (all) {
      all.checked = bs.length > 0 && bs.every(function (b) { return b.checked; });
      all.indeterminate = !all.checked && bs.some(function (b) { return b.checked; });
    }
    document.querySelectorAll('[data-selected-count]').forEach(function (e) { e.textContent = String(selected.size); });
    const del = document.getElementById('delete-selected');
    if (del) del.disabled = selected.size === 0;
  }
  document.addEventListener('change', function (ev) {
    const t = ev.target;
    if (!(t instanceof HTMLInputElement) || t.type !== 'checkbox') return;
    if (t.matches('[data-select-all]')) {
      boxes().forEach(function (b) { if (t.checked) selected.add(b.value); else selected.delete(b.value); });
    } else if (t.name === 'name' && t.closest('#bulk-delete')) {
      if (t.checked) selected.add(t.value); else selected.delete(t.value);
    } else {
      return;
    }
    applySelection();
  });

  // ---- orchestration actions shown by status ---------------------------
  function orchState() {
    const el = document.querySelector('[data-orch-status]');
    if (!el) return;
    if (document.querySelector('[data-pending-page]') && el.dataset.orchStatus !== 'Pending') {
      location.replace(location.pathname); // it has started: load its actions
      return;
    }
    const terminal = el.dataset.terminal === 'true';
    document.querySelectorAll('[data-show-if]').forEach(function (x) {
      x.hidden = (x.dataset.showIf === 'terminal') !== terminal;
    });
  }

  // ---- confirmations ---------------------------------------------------
  const dialog = document.getElementById('confirm-dialog');
  document.addEventListener('submit', function (ev) {
    const form = ev.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
    if (form.dataset.confirmed === '1') return;
    ev.preventDefault();
    if (!dialog || typeof dialog.showModal !== 'function') {
      if (window.confirm(form.dataset.confirm)) { form.dataset.confirmed = '1'; form.submit(); }
      return;
    }
    document.getElementById('confirm-message').textContent = form.dataset.confirm;
    const list = document.getElementById('confirm-list');
    list.textContent = '';
    if (form.dataset.confirmList) {
      Array.from(form.querySelectorAll('input[type=checkbox][name="' + form.dataset.confirmList + '"]:checked')).forEach(function (b) {
        const li = document.createElement('li');
        li.textContent = b.value;
        list.appendChild(li);
      });
    }
    dialog.returnValue = '';
    dialog.onclose = function () {
      if (dialog.returnValue === 'ok') {
        form.dataset.confirmed = '1';
        form.submit();
      }
    };
    dialog.showModal();
    document.getElementById('confirm-cancel').focus();
  });

  // ---- connection string -------------------------------------------------
  async function connString(name) {
    if (revealed !== null) return revealed;
    const res = await fetch('/api/instances/' + encodeURIComponent(name) + '?events=0&checks=0',
      { credentials: 'same-origin', cache: 'no-store', headers: { 'Accept': 'application/json' } });
    const data = await res.json().catch(function () { return {}; });
    if (!res.ok) throw new Error(data.error || ('HTTP ' + res.status));
    if (!data.connection_string) throw new Error('no connection string yet');
    return data.connection_string;
  }
  function connMsg(box, msg) {
    const m = box.querySelector('[data-conn-msg]');
    if (m) m.textContent = msg;
  }
  function showConn(box) {
    const text = box.querySelector('[data-conn-text]');
    const btn = box.querySelector('[data-conn-reveal]');
    if (revealed !== null && text) {
      if (!text.dataset.masked) text.dataset.masked = text.textContent;
      text.textContent = revealed;
      if (btn) { btn.textContent = 'Hide password'; btn.setAttribute('aria-pressed', 'true'); }
    }
  }
  document.addEventListener('click', async function (ev) {
    const t = ev.target instanceof Element ? ev.target.closest('[data-conn-reveal],[data-conn-copy]') : null;
    if (!t) return;
    const box = t.closest('[data-conn]');
    const text = box.querySelector('[data-conn-text]');
    try {
      if (t.matches('[data-conn-reveal]')) {
        if (t.getAttribute('aria-pressed') === 'true') {
          text.textContent = text.dataset.masked || text.textContent;
          revealed = null;
          t.textContent = 'Reveal password';
          t.setAttribute('aria-pressed', 'false');
          connMsg(box, '');
          return;
        }
        text.dataset.masked = text.textContent;
        revealed = await connString(box.dataset.conn);
        showConn(box);
        return;
      }
      const s = await connString(box.dataset.conn);
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(s);
      } else {
        const ta = document.createElement('textarea');
        ta.value = s;
        ta.setAttribute('readonly', '');
        ta.className = 'skip';
        document.body.appendChild(ta);
        ta.select();
        document.execCommand('copy');
        ta.remove();
      }
      connMsg(box, 'Copied to the clipboard.');
    } catch (e) {
      connMsg(box, 'Failed: ' + e.message);
    }
  });

  // ---- live updates ----------------------------------------------------
  function setStatus(state, text) {
    if (!liveStatus) return;
    liveStatus.dataset.state = state;
    liveStatus.textContent = text;
  }

  function swap(el, html) {
    const openIDs = Array.from(el.querySelectorAll('details[id]')).map(function (d) { return [d.id, d.open]; });
    const scrolls = Array.from(el.querySelectorAll('[id]')).filter(function (e) { return e.scrollTop > 0 || e.scrollHeight > e.clientHeight; })
      .map(function (e) { return [e.id, e.scrollTop, e.scrollTop + e.clientHeight >= e.scrollHeight - 4]; });
    const focused = document.activeElement && el.contains(document.activeElement) ? document.activeElement.id : '';
    el.innerHTML = html;
    openIDs.forEach(function (p) { const d = document.getElementById(p[0]); if (d && d.tagName === 'DETAILS') d.open = p[1]; });
    scrolls.forEach(function (p) {
      const e = document.getElementById(p[0]);
      if (e) e.scrollTop = p[2] ? e.scrollHeight : p[1];
    });
    if (focused) { const f = document.getElementById(focused); if (f) f.focus(); }
    enhance(el);
    window.toygresConsole.swaps++;
  }

  function enhance(root) {
    relTimes(root);
    applySelection();
    orchState();
    root.querySelectorAll('[data-conn]').forEach(showConn);
    root.querySelectorAll('pre.log').forEach(function (p) {
      if (!p.dataset.scrolled) { p.scrollTop = p.scrollHeight; p.dataset.scrolled = '1'; }
    });
  }

  async function poll() {
    timer = null;
    if (document.hidden) { setStatus('paused', 'paused'); return; }
    try {
      const res = await fetch(pageURL, {
        credentials: 'same-origin', cache: 'no-store',
        headers: { 'X-Toygres-Live': '1', 'Accept': 'application/json' },
      });
      if (res.redirected && new URL(res.url).pathname === '/login') { location.assign('/login'); return; }
      const ct = res.headers.get('Content-Type') || '';
      if (!ct.startsWith('application/json')) throw new Error('HTTP ' + res.status);
      const data = await res.json();
      if (!res.ok) throw new Error(data.error || ('HTTP ' + res.status));
      Object.keys(data.regions || {}).forEach(function (name) {
        const html = data.regions[name];
        if (lastHTML[name] === html) return;
        lastHTML[name] = html;
        document.querySelectorAll('[data-live="' + name + '"]').forEach(function (el) { swap(el, html); });
      });
      window.toygresConsole.polls++;
      const at = data.at ? new Date(data.at) : new Date();
      setStatus('ok', 'live · ' + at.toLocaleTimeString());
    } catch (e) {
      window.toygresConsole.errors++;
      setStatus('error', 'update failed (' + e.message + '), retrying');
    }
    schedule();
  }
  function schedule(delay) {
    if (pollMs > 0 && timer === null) timer = setTimeout(poll, delay === undefined ? pollMs : delay);
  }
  document.addEventListener('visibilitychange', function () {
    if (!document.hidden && timer === null) poll();
  });

  enhance(document);
  setInterval(function () { relTimes(document); }, 5000);
  if (pollMs > 0 && document.querySelector('[data-live]')) schedule(Math.min(pollMs, 400));
})();
