// The Tidemark demo chat page: plain DOM code over the web SDK (/tidemark/index.js).
//
// Every piece of data reaches the page through textContent or attributes, never innerHTML:
// message texts, user names and conversation ids come from other users.
//
// Tests and measurements read `window.tidemarkDemo`: the session and `marks`, the
// performance.now() times of the page script start, login, the first rendered conversation
// list and every role change.

import { login } from '/tidemark/index.js';

const marks = { scriptStart: performance.now(), roles: [], syncProgress: null };
// `recovered`: messages or statuses the page found in the store without having had their event.
// `acked`: the client ids of every messageSent this tab received.
const demo = { session: null, marks, errors: [], recovered: 0, acked: new Set() };
window.tidemarkDemo = demo;

/** How many conversations one list page asks for. */
const LIST_PAGE = 50;
/** How many messages one history page asks for. */
const HISTORY_PAGE = 30;
/** Above this many changed conversations at once, the loaded list is fetched again instead. */
const REFETCH_ABOVE = 40;

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'className') node.className = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

function describe(error) {
  return error && error.code ? `${error.code}: ${error.message}` : String(error && error.message ? error.message : error);
}

function showBanner(text) {
  const banner = $('banner');
  banner.textContent = text;
  banner.hidden = false;
}

function report(what, error) {
  demo.errors.push({ what, code: error && error.code, message: describe(error) });
  showBanner(`${what}: ${describe(error)}`);
  console.error(what, error);
}

function clock(millis) {
  if (!millis) return '';
  const d = new Date(millis);
  const now = new Date();
  const pad = (n) => String(n).padStart(2, '0');
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return d.toDateString() === now.toDateString() ? time : `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${time}`;
}

/** A one-line text for a message kind that carries no text of its own. */
function kindText(kind, text) {
  switch (kind.type) {
    case 'text': return text ?? '';
    case 'revoke': return 'revoked a message';
    case 'edit': return 'edited a message';
    case 'image': return '[image]';
    case 'file': return '[file]';
    case 'custom': return `[${kind.name}]`;
    default: return `[${kind.type}]`;
  }
}

// ----- login -----

let session = null;

async function fetchJson(url) {
  const response = await fetch(url, { cache: 'no-store' });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function start() {
  const params = new URLSearchParams(location.search);
  const user = params.get('user');
  if (user) {
    await signIn(user, params);
    return;
  }
  let config;
  try {
    config = await fetchJson('/demo/config');
  } catch (error) {
    report('cannot read /demo/config', error);
    return;
  }
  const users = $('users');
  users.replaceChildren();
  for (const name of config.users) {
    const button = el('button', { type: 'button', 'data-testid': 'pick-user', 'data-user': name }, name);
    button.addEventListener('click', () => {
      const next = new URLSearchParams(location.search);
      next.set('user', name);
      // The URL names the user, so a reload signs the same user in again.
      history.replaceState(null, '', `?${next}`);
      $('login').hidden = true;
      signIn(name, next);
    });
    users.append(el('li', {}, button));
  }
  $('login').hidden = false;
}

async function signIn(user, params) {
  $('user').textContent = user;
  let ticket;
  try {
    ticket = await fetchJson(`/demo/session?user=${encodeURIComponent(user)}`);
  } catch (error) {
    report('cannot get a demo session', error);
    return;
  }
  const options = { server: ticket.server, user: ticket.user, token: ticket.token };
  // ?storage=indexeddb and ?sync=full reach login as they are (the SDK checks them), and
  // ?timeout=MS as callTimeoutMs.
  for (const name of ['storage', 'sync']) {
    const value = params.get(name);
    if (value) options[name] = value;
  }
  if (params.get('timeout')) options.callTimeoutMs = Number(params.get('timeout'));
  try {
    marks.loginCalled = performance.now();
    session = await login(options);
  } catch (error) {
    report('login failed', error);
    return;
  }
  demo.session = session;
  marks.loginResolved = performance.now();
  setRole(session.role);
  listen();
  $('chat').hidden = false;
  $('logout').hidden = false;
  // Both start at once: the list is what the user waits for.
  refreshState();
  refreshTotal();
  await loadList();
}

$('logout').addEventListener('click', async () => {
  if (!session) return;
  try {
    await session.logout();
  } catch (error) {
    report('logout failed', error);
  }
  location.search = '';
});

// ----- header: unread, connection, sync, role -----

function setTotal(total) {
  const node = $('total-unread');
  node.dataset.total = String(total);
  node.textContent = `${total} unread`;
  const user = session ? session.user : '';
  document.title = total > 0 ? `(${total}) Tidemark · ${user}` : `Tidemark · ${user}`;
}

function setConnection(state) {
  const node = $('connection');
  node.dataset.state = state;
  node.textContent = state;
}

function setSync(state, progress) {
  const node = $('sync-state');
  node.dataset.state = state;
  if (progress) {
    node.dataset.done = String(progress.done);
    node.dataset.total = String(progress.total);
    node.textContent = `syncing ${progress.done}/${progress.total}`;
  } else {
    node.textContent = state === 'storeUnusable' ? 'store unusable' : state;
  }
}

function setRole(role) {
  marks.roles.push({ role, at: performance.now(), epoch: performance.timeOrigin + performance.now() });
  const node = $('role');
  node.dataset.role = role;
  node.textContent = role === 'leader' ? 'this tab: leader' : 'this tab: follower';
}

async function refreshState() {
  try {
    const state = await session.state();
    setConnection(state.connection);
    if (state.sync !== 'syncing' || !marks.syncProgress) setSync(state.sync);
    setTotal(state.totalUnread);
  } catch (error) {
    report('cannot read the state', error);
  }
}

async function refreshTotal() {
  try {
    setTotal(await session.totalUnread());
  } catch (error) {
    report('cannot read the unread total', error);
  }
}

// ----- events -----

function listen() {
  session.on('connectionChanged', ({ state }) => {
    setConnection(state);
    if (state !== 'connected') setSync('offline');
  });
  session.on('syncStarted', () => setSync('syncing'));
  session.on('syncProgress', (progress) => {
    marks.syncProgress = { done: progress.done, total: progress.total, at: performance.now() };
    setSync('syncing', progress);
  });
  session.on('syncFinished', () => {
    marks.syncFinished = performance.now();
    setSync('synced');
  });
  session.on('totalUnreadChanged', ({ total }) => setTotal(total));
  session.on('roleChanged', ({ role }) => setRole(role));
  session.on('handedOver', () => {
    // Events the old leader's engine emitted as its tab closed may never have reached this
    // tab: what is shown is read again from the store.
    refreshState();
    conversationsChanged([...list.byId.keys()]);
    reconcileOpen();
  });
  session.on('conversationsChanged', ({ conversationIds }) => conversationsChanged(conversationIds));
  session.on('messages', ({ conversationId, messages }) => {
    if (conversationId !== view.id) return;
    for (const message of messages) {
      // Older than the loaded history: the history pages bring it in order.
      if (message.seq !== null && view.oldestSeq !== null && message.seq < view.oldestSeq) continue;
      upsert(message);
    }
    scheduleMarkRead();
  });
  session.on('messageSent', ({ conversationId, clientMsgId, seq }) => {
    demo.acked.add(clientMsgId);
    if (conversationId !== view.id) return;
    const key = keyOf(session.user, clientMsgId);
    const known = view.messages.get(key);
    if (known) upsert({ ...known, seq, status: 'sent', failure: null, serverTime: known.serverTime ?? Date.now() });
    else view.earlyAcks.set(key, seq);
  });
  session.on('sendFailed', ({ conversationId, clientMsgId, code, reason }) => {
    if (conversationId !== view.id) return;
    const known = view.messages.get(keyOf(session.user, clientMsgId));
    if (known) upsert({ ...known, status: 'failed', failure: `${code}: ${reason}` });
  });
  session.on('messageUpdated', ({ conversationId, seq, change }) => {
    if (conversationId !== view.id) return;
    const known = [...view.messages.values()].find((m) => m.seq === seq);
    if (!known) return;
    if (change.type === 'revoked') upsert({ ...known, revoked: true, text: null });
    else upsert({ ...known, edited: true, text: change.text });
  });
  session.on('messagesDeleted', ({ conversationId, seqs }) => {
    if (conversationId !== view.id) return;
    for (const [key, message] of [...view.messages]) {
      if (message.seq !== null && seqs.some(([from, to]) => message.seq >= from && message.seq <= to)) {
        view.messages.delete(key);
        view.rows.get(key)?.remove();
        view.rows.delete(key);
      }
    }
  });
  session.on('kicked', ({ reason }) => showBanner(`Signed out by the server: ${reason}`));
  session.on('storageFailed', ({ error }) => showBanner(`A write failed, the engine restarts: ${error}`));
  session.on('storeUnusable', ({ error }) => {
    setSync('storeUnusable');
    showBanner(`The local store cannot be used: ${error}`);
  });
  document.addEventListener('visibilitychange', scheduleMarkRead);
}

// ----- the conversation list -----

/** The loaded part of the list: newest activity first, `next` where the server's list goes on. */
const list = { byId: new Map(), rows: new Map(), next: null, loading: false, pending: new Set(), timer: 0, flushing: false };

function newerFirst(a, b) {
  if (a.lastActivity !== b.lastActivity) return b.lastActivity - a.lastActivity;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Reads one page of the list: the first (`after` null) replaces what is shown. */
async function loadPage(after) {
  list.loading = true;
  try {
    const page = await session.conversations({ after, limit: LIST_PAGE });
    if (!after) list.byId.clear();
    for (const c of page.conversations) list.byId.set(c.id, c);
    list.next = page.next;
  } catch (error) {
    report('cannot read the conversation list', error);
  } finally {
    list.loading = false;
  }
  renderList();
}

const loadList = () => loadPage(null);

function loadMore() {
  if (!list.loading && list.next) loadPage(list.next);
}

$('more-conversations').addEventListener('click', loadMore);
document.querySelector('.sidebar').addEventListener('scroll', (event) => {
  const bar = event.currentTarget;
  if (bar.scrollHeight - bar.scrollTop - bar.clientHeight < 200) loadMore();
});

function conversationsChanged(ids) {
  for (const id of ids) list.pending.add(id);
  if (!list.timer) list.timer = setTimeout(flushChanges, 80);
}

/** Brings the changed conversations' rows up to date, a batch at a time (a sync changes many). */
async function flushChanges() {
  list.timer = 0;
  if (list.flushing) {
    list.timer = setTimeout(flushChanges, 80);
    return;
  }
  list.flushing = true;
  const ids = [...list.pending];
  list.pending.clear();
  try {
    if (ids.length > REFETCH_ABOVE) {
      await refetchLoaded();
    } else {
      const fresh = await Promise.all(ids.map((id) => session.conversation(id)));
      const last = lastLoaded();
      for (const [i, c] of fresh.entries()) {
        if (!c) {
          list.byId.delete(ids[i]);
        } else if (list.byId.has(c.id) || !list.next || !last || newerFirst(c, last) < 0) {
          // Inside the loaded part of the list (or the list is whole): shown; further down, the
          // next page brings it.
          list.byId.set(c.id, c);
        }
      }
    }
  } catch (error) {
    report('cannot refresh the conversation list', error);
  }
  list.flushing = false;
  renderList();
  const open = view.id && list.byId.get(view.id);
  if (open && open.unread > 0) scheduleMarkRead();
}

function lastLoaded() {
  let last = null;
  for (const c of list.byId.values()) if (!last || newerFirst(c, last) > 0) last = c;
  return last;
}

/** Reads again as many conversations as are loaded, from the top. */
async function refetchLoaded() {
  const want = Math.max(LIST_PAGE, list.byId.size);
  const byId = new Map();
  let after = null;
  let next = null;
  do {
    const page = await session.conversations({ after, limit: Math.min(100, want - byId.size) });
    for (const c of page.conversations) byId.set(c.id, c);
    next = page.next;
    after = next;
  } while (next && byId.size < want);
  list.byId = byId;
  list.next = next;
}

function preview(c) {
  if (!c.latest) return 'no messages yet';
  const who = c.latest.sender === session.user ? 'You' : c.latest.sender;
  const text = c.latest.kind.type === 'text' ? c.latest.preview ?? '' : kindText(c.latest.kind, c.latest.preview);
  return `${who}: ${text}`;
}

function conversationRow(c) {
  let row = list.rows.get(c.id);
  if (!row) {
    row = el('li', { 'data-testid': 'conversation', 'data-id': c.id, role: 'option', tabindex: 0 },
      el('span', { className: 'name' }),
      el('span', { className: 'time' }),
      el('span', { className: 'preview', 'data-testid': 'preview' }),
      el('span', { className: 'badge', 'data-testid': 'unread-badge' }));
    row.addEventListener('click', () => openConversation(c.id));
    row.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') openConversation(c.id);
    });
    list.rows.set(c.id, row);
  }
  const [name, time, text, badge] = row.children;
  name.textContent = c.kind === 'group' ? `# ${c.id}` : c.id;
  time.textContent = clock(c.latest ? c.latest.time : c.lastActivity);
  text.textContent = preview(c);
  badge.textContent = String(c.unread);
  badge.dataset.count = String(c.unread);
  row.dataset.unread = String(c.unread);
  row.dataset.maxSeq = String(c.maxSeq);
  row.setAttribute('aria-selected', c.id === view.id ? 'true' : 'false');
  return row;
}

function renderList() {
  const container = $('conversations');
  const ordered = [...list.byId.values()].sort(newerFirst);
  const keep = new Set(ordered.map((c) => c.id));
  for (const [id, row] of list.rows) {
    if (!keep.has(id)) {
      row.remove();
      list.rows.delete(id);
    }
  }
  // Moves only the rows that are out of place: a new message lifts one row to the top.
  ordered.forEach((c, i) => {
    const row = conversationRow(c);
    if (container.children[i] !== row) container.insertBefore(row, container.children[i] ?? null);
  });
  $('more-conversations').hidden = !list.next;
  container.dataset.count = String(ordered.length);
  if (marks.firstRender === undefined) marks.firstRender = performance.now();
  if (marks.firstList === undefined && ordered.length > 0) marks.firstList = performance.now();
}

// ----- one open conversation -----

/** The open conversation: its messages by sender and client id, and where history paging is. */
const view = {
  id: null,
  generation: 0,
  messages: new Map(),
  rows: new Map(),
  earlyAcks: new Map(),
  oldestSeq: null,
  reachedStart: false,
  loading: false,
  readTimer: 0,
};

const keyOf = (sender, clientMsgId) => `${sender}\u0000${clientMsgId}`;
const scroller = $('scroller');
const messageList = $('messages');

function nearBottom() {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
}

function setHistoryState(state, text) {
  const node = $('history-state');
  node.dataset.state = state;
  node.textContent = text;
}

async function openConversation(id) {
  if (view.id === id) return;
  view.generation += 1;
  const generation = view.generation;
  Object.assign(view, { id, messages: new Map(), rows: new Map(), earlyAcks: new Map(), oldestSeq: null, reachedStart: false, loading: true });
  messageList.replaceChildren();
  const pane = $('conversation-view');
  pane.dataset.id = id;
  pane.dataset.loaded = 'false';
  $('placeholder').hidden = true;
  document.querySelector('.conversation-head').hidden = false;
  scroller.hidden = false;
  $('composer-form').hidden = false;
  const known = list.byId.get(id);
  $('conversation-title').textContent = known && known.kind === 'group' ? `# ${id}` : id;
  $('conversation-kind').textContent = known ? known.kind : '';
  for (const [rowId, row] of list.rows) row.setAttribute('aria-selected', rowId === id ? 'true' : 'false');
  setHistoryState('loading', 'loading…');
  let page;
  try {
    page = await session.loadHistory(id, { limit: HISTORY_PAGE });
  } catch (error) {
    if (generation === view.generation) {
      view.loading = false;
      setHistoryState('error', `cannot load messages (${describe(error)})`);
    }
    return;
  }
  if (generation !== view.generation) return;
  for (const message of page.messages) upsert(message, { stick: false });
  takePage(page);
  scroller.scrollTop = scroller.scrollHeight;
  pane.dataset.loaded = 'true';
  view.loading = false;
  scheduleMarkRead();
  $('composer').focus();
  fillScreen();
}

/** Notes where the next older page starts and whether the beginning is reached. */
function takePage(page) {
  for (const message of page.messages) {
    if (message.seq !== null && (view.oldestSeq === null || message.seq < view.oldestSeq)) view.oldestSeq = message.seq;
  }
  view.reachedStart = page.reachedStart;
  if (page.reachedStart) setHistoryState('start', 'beginning of the conversation');
  else if (!page.complete) setHistoryState('incomplete', 'offline: older messages load when connected');
  else setHistoryState('more', 'scroll up for older messages');
}

async function loadOlder() {
  if (view.loading || view.reachedStart || !view.id || view.oldestSeq === null) return;
  view.loading = true;
  const generation = view.generation;
  setHistoryState('loading', 'loading older messages…');
  let page;
  try {
    page = await session.loadHistory(view.id, { before: view.oldestSeq, limit: HISTORY_PAGE });
  } catch (error) {
    if (generation === view.generation) {
      view.loading = false;
      setHistoryState('error', `cannot load older messages (${describe(error)})`);
    }
    return;
  }
  if (generation !== view.generation) return;
  // Keeps what the user looks at in place while rows are added above it.
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  const before = view.oldestSeq;
  for (const message of page.messages) upsert(message, { stick: false });
  takePage(page);
  scroller.scrollTop = scroller.scrollHeight - fromBottom;
  view.loading = false;
  // A complete page that brought nothing older would ask for the same page again.
  if (view.oldestSeq === before && !view.reachedStart) return;
  fillScreen();
}

/** Loads older pages while the messages do not fill the pane (no scroll bar, no scroll event). */
function fillScreen() {
  if (scroller.scrollHeight <= scroller.clientHeight + 40 && !view.reachedStart) loadOlder();
}

scroller.addEventListener('scroll', () => {
  if (scroller.scrollTop < 60) loadOlder();
});

/** Where a message goes: by seq; unsent ones after every sent one, by creation time. */
function order(a, b) {
  if (a.seq !== null && b.seq !== null) return a.seq - b.seq;
  if (a.seq !== null) return -1;
  if (b.seq !== null) return 1;
  return a.createdAt - b.createdAt;
}

/** Adds or updates a message of the open conversation, merging a pending row with its ack. */
function upsert(incoming, { stick = true } = {}) {
  const key = keyOf(incoming.sender, incoming.clientMsgId);
  const known = view.messages.get(key);
  let message = incoming;
  if (known && known.status === 'sent' && incoming.status !== 'sent') {
    // An answer that left before the ack: the ack wins.
    message = { ...incoming, seq: known.seq, status: 'sent', failure: null, serverTime: known.serverTime };
  }
  const ack = view.earlyAcks.get(key);
  if (ack !== undefined && message.status !== 'sent') {
    message = { ...message, seq: ack, status: 'sent', failure: null, serverTime: message.serverTime ?? Date.now() };
    view.earlyAcks.delete(key);
  }
  const wasBottom = nearBottom();
  view.messages.set(key, message);
  let row = view.rows.get(key);
  const moved = !row || !known || known.seq !== message.seq;
  if (!row) {
    row = el('li', { 'data-testid': 'message' });
    view.rows.set(key, row);
  }
  fillMessageRow(row, message);
  if (moved) place(row, message);
  if (stick && wasBottom) scroller.scrollTop = scroller.scrollHeight;
}

function place(row, message) {
  row.remove();
  const rows = messageList.children;
  const orderOf = (node) => order(view.messages.get(node.dataset.key), message);
  // Most rows go last (new messages) or first (older pages): the ends are checked first.
  let at = rows.length;
  if (at > 0 && orderOf(rows[at - 1]) > 0) {
    if (orderOf(rows[0]) > 0) at = 0;
    else while (at > 0 && orderOf(rows[at - 1]) > 0) at -= 1;
  }
  messageList.insertBefore(row, rows[at] ?? null);
}

function fillMessageRow(row, m) {
  row.dataset.key = keyOf(m.sender, m.clientMsgId);
  row.dataset.seq = m.seq === null ? '' : String(m.seq);
  row.dataset.clientMsgId = m.clientMsgId;
  row.dataset.sender = m.sender;
  row.dataset.status = m.status;
  row.dataset.kind = m.kind.type;
  row.dataset.revoked = String(m.revoked);
  row.className = [m.own ? 'own' : '', m.kind.type === 'text' ? '' : 'system'].join(' ').trim();

  const status = m.status === 'pending' ? 'sending…' : m.status === 'failed' ? `failed${m.failure ? ` (${m.failure})` : ''}` : clock(m.serverTime ?? m.createdAt);
  const meta = el('div', { className: 'meta' },
    el('span', { className: 'sender' }, m.own ? 'You' : m.sender),
    el('span', { className: 'status', 'data-testid': 'message-status' }, status),
    m.edited && !m.revoked ? el('span', {}, '(edited)') : null);
  const body = el('div', { className: 'body', 'data-testid': 'message-text' },
    m.revoked ? 'message revoked' : kindText(m.kind, m.text));
  const actions = el('span', { className: 'actions' });
  if (m.status === 'failed') {
    const retry = el('button', { type: 'button', 'data-testid': 'retry' }, 'Retry');
    retry.addEventListener('click', () => retrySend(m));
    actions.append(retry);
  }
  if (m.own && m.status === 'sent' && m.seq !== null && !m.revoked && m.kind.type === 'text') {
    const revoke = el('button', { type: 'button', 'data-testid': 'revoke' }, 'Revoke');
    revoke.addEventListener('click', () => revokeMessage(m));
    actions.append(revoke);
  }
  meta.append(actions);
  row.replaceChildren(meta, body);
}

async function retrySend(m) {
  const conversationId = view.id;
  try {
    await session.retry(conversationId, m.clientMsgId);
    if (view.id === conversationId) upsert({ ...m, status: 'pending', failure: null });
  } catch (error) {
    report('retry failed', error);
  }
}

async function revokeMessage(m) {
  try {
    await session.revokeMessage(view.id, m.seq);
  } catch (error) {
    report('revoke failed', error);
  }
}

/** Reads the open conversation's newest stored messages again and merges them into the view. */
async function reconcileOpen() {
  const { id, generation } = view;
  if (!id) return;
  let newest;
  try {
    newest = await session.messages(id, { limit: HISTORY_PAGE });
  } catch {
    return; // A follower between leaders: the next round asks again.
  }
  if (generation !== view.generation) return;
  for (const message of newest) {
    if (view.oldestSeq !== null && message.seq !== null && message.seq < view.oldestSeq) continue;
    const known = view.messages.get(keyOf(message.sender, message.clientMsgId));
    // Counted for the tests: each is an event this tab never got.
    if (!known || known.status !== message.status) demo.recovered += 1;
    upsert(message);
  }
}

function scheduleMarkRead() {
  if (!view.id || document.visibilityState !== 'visible') return;
  clearTimeout(view.readTimer);
  const id = view.id;
  view.readTimer = setTimeout(async () => {
    if (view.id !== id || document.visibilityState !== 'visible') return;
    try {
      await session.markRead(id);
    } catch (error) {
      report('mark read failed', error);
    }
  }, 150);
}

$('composer-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = $('composer');
  const text = input.value;
  const conversationId = view.id;
  if (!text.trim() || !conversationId) return;
  input.value = '';
  try {
    const draft = session.createTextMessage(text);
    const pending = await session.sendMessage(conversationId, draft);
    if (view.id === conversationId) upsert(pending);
  } catch (error) {
    // Nothing was stored: the text goes back into the composer.
    if (!input.value) input.value = text;
    report('send failed', error);
  }
});

start().catch((error) => report('the page failed', error));
