// Tidemark for the web: the page's side. See index.d.ts for the API and README.md for how it
// works. Nothing here blocks: the engine runs in a dedicated worker (worker.js) owned by one
// tab of the origin per user, the leader, chosen with a Web Lock. The other tabs, followers,
// send their calls to the leader over a BroadcastChannel and receive its events the same way.
// When the leader tab closes, the browser releases its lock and the next tab in the lock's
// queue starts its own worker on the same database: the hand-over. Every call has a timeout,
// so a frozen or dead leader cannot wedge a follower, and a call cut off by a hand-over is
// sent again to the new leader (every call is safe to repeat: sends carry a client id
// reserved beforehand, which the engine recognises).

const DEFAULT_TIMEOUT_MS = 15_000;
// Opening the store waits for the previous leader's worker to let it go.
const START_TIMEOUT_MS = 60_000;
// After this tab failed to start the engine, before it queues for leadership again.
const RETRY_LEAD_MS = 1_000;

/** A rejection with a stable `code`. */
export class TidemarkError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'TidemarkError';
    this.code = code;
  }
}

function toError(failure) {
  if (failure instanceof TidemarkError) return failure;
  return new TidemarkError(failure?.code ?? 'Internal', failure?.message ?? String(failure));
}

function badArgument(message) {
  return new TidemarkError('BadArgument', message);
}

function requireString(value, name) {
  if (typeof value !== 'string' || value === '') throw badArgument(`${name} must be a non-empty string`);
  return value;
}

/**
 * The device id of this browser for `user`: one per origin, shared by its tabs. Made once,
 * under a Web Lock, so two tabs of a first visit cannot make two.
 */
function deviceFor(user) {
  const key = `tidemark-device:${user}`;
  return navigator.locks.request(key, () => {
    try {
      let device = localStorage.getItem(key);
      if (!device) {
        device = `web-${crypto.randomUUID()}`;
        localStorage.setItem(key, device);
      }
      return device;
    } catch {
      // No localStorage (storage blocked): one device per page load.
      return `web-${crypto.randomUUID()}`;
    }
  });
}

const sessions = new Map();

/**
 * Signs `options.user` in, in this tab. Again with the same user: the same session (a
 * framework that mounts twice logs in twice).
 */
export function login(options) {
  try {
    if (!options || typeof options !== 'object') throw badArgument('login needs options');
    requireString(options.server, 'server');
    requireString(options.user, 'user');
    requireString(options.token, 'token');
    if (!globalThis.navigator?.locks || typeof BroadcastChannel === 'undefined' || typeof Worker === 'undefined') {
      throw new TidemarkError('Unsupported', 'this browser lacks Web Locks, BroadcastChannel or workers');
    }
  } catch (err) {
    return Promise.reject(err);
  }
  const existing = sessions.get(options.user);
  if (existing) return existing;
  for (const [user] of sessions) {
    return Promise.reject(new TidemarkError('LoggedInElsewhere', `${user} is signed in in this tab; log out first`));
  }
  const session = new TabSession(options);
  // Forgets this session, not a newer one of the same user made since.
  const forget = () => {
    if (sessions.get(options.user) === ready) sessions.delete(options.user);
  };
  const ready = session.ready.then(
    () => new Session(session),
    (err) => {
      session.close();
      throw err;
    },
  );
  sessions.set(options.user, ready);
  session.onClosed = forget;
  return ready;
}

class TabSession {
  constructor(options) {
    this.user = options.user;
    this.device = options.device ?? null; // set by elect() before anything else
    this.options = options;
    this.timeoutMs = options.callTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.tab = crypto.randomUUID();
    this.role = 'follower';
    this.leader = null; // the leader tab's id, when known (followers)
    this.worker = null; // leaders
    this.spare = null; // a worker loading the engine while the election runs (see elect)
    this.listeners = new Map();
    this.pending = new Map();
    this.nextId = 1;
    this.closed = false;
    this.onClosed = null;
    this.drafts = new WeakMap(); // draft -> its reserved client id: a draft is sent once
    this.ownPending = new Map(); // this tab's sends awaiting messageSent/sendFailed: id -> conversation
    this.lastLeader = null; // the last leader known, kept across `bye`: a new one is a hand-over
    this.channel = new BroadcastChannel(`tidemark:${this.user}`);
    this.channel.onmessage = (event) => this.onChannel(event.data);
    this.abort = new AbortController();
    let settle;
    this.ready = new Promise((resolve, reject) => {
      settle = { resolve, reject };
    });
    this.settle = settle;
    this.readyTimer = setTimeout(
      () => settle.reject(new TidemarkError('Timeout', `no leader tab answered in ${this.timeoutMs} ms`)),
      this.timeoutMs,
    );
    this.ready.then(() => clearTimeout(this.readyTimer), () => clearTimeout(this.readyTimer));
    this.leaving = new Promise((resolve) => {
      this.leave = resolve;
    });
    this.onPageHide = () => {
      if (this.role === 'leader') this.channel.postMessage({ type: 'bye', tab: this.tab });
    };
    globalThis.addEventListener?.('pagehide', this.onPageHide);
    this.elect();
  }

  // ----- leadership -----

  async elect() {
    const name = `tidemark-leader:${this.user}`;
    // Most tabs become the leader: the worker fetches and compiles the engine's wasm while
    // the device id and the lock are settled, instead of after (tens of milliseconds off the
    // first list). A follower gives it up at once: an idle engine per tab is memory for
    // nothing, and a hand-over starts its own.
    this.spare ??= this.spawnWorker();
    try {
      this.device ??= await deviceFor(this.user);
      // Leader at once if nobody is; otherwise a follower until the lock comes free.
      const took = await navigator.locks.request(name, { ifAvailable: true }, (lock) =>
        lock ? this.lead() : false,
      );
      if (took !== false || this.closed) return;
      this.spare?.terminate();
      this.spare = null;
      this.channel.postMessage({ type: 'who', tab: this.tab });
      await navigator.locks.request(name, { signal: this.abort.signal }, () => this.lead());
    } catch (err) {
      if (err?.name !== 'AbortError') this.settle.reject(toError(err));
    }
  }

  /** A new engine worker; it loads the wasm at once and waits for `start`. */
  spawnWorker() {
    return new Worker(this.options.workerUrl ?? new URL('./worker.js', import.meta.url), { type: 'module' });
  }

  /** Holds the lock: runs the engine until logout or until the tab goes away. */
  async lead() {
    if (this.closed) return true;
    // Starting has its own, longer timeout: the previous owner may still be letting go.
    clearTimeout(this.readyTimer);
    const worker = this.spare ?? this.spawnWorker();
    this.spare = null;
    worker.onmessage = (event) => this.onWorker(event.data);
    worker.onerror = (event) => {
      this.emit('error', { code: 'Internal', message: `the engine worker failed: ${event.message ?? event}` });
    };
    this.worker = worker;
    try {
      await this.request('start', {
        server: this.options.server,
        user: this.user,
        token: this.options.token,
        device: this.device,
        database: this.options.database,
        storage: this.options.storage,
        sync: this.options.sync,
      }, { local: true, timeoutMs: START_TIMEOUT_MS });
    } catch (err) {
      // Let another tab try; this one stays a follower and queues for the lock again (a
      // login still waiting fails with the error).
      worker.terminate();
      this.worker = null;
      this.settle.reject(toError(err));
      this.emit('error', { code: toError(err).code, message: `the engine did not start: ${err?.message ?? err}` });
      setTimeout(() => {
        if (!this.closed) this.elect();
      }, RETRY_LEAD_MS);
      return true;
    }
    this.role = 'leader';
    this.leader = this.tab;
    this.channel.postMessage({ type: 'leader', tab: this.tab });
    this.emit('roleChanged', { role: 'leader' });
    this.settle.resolve();
    this.redispatch();
    this.newLeader(this.tab);
    await this.leaving;
    return true;
  }

  // ----- calls -----

  /** One call: to this tab's worker (leader) or to the leader tab, with a timeout. */
  request(method, args, { local = false, timeoutMs = this.timeoutMs } = {}) {
    if (this.closed) return Promise.reject(new TidemarkError('Closed', 'logged out'));
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      const entry = { method, args, resolve, reject, local, sentTo: null };
      entry.timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new TidemarkError('Timeout', `${method}: no answer in ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, entry);
      this.dispatch(id, entry);
    });
  }

  dispatch(id, entry) {
    if (entry.local || this.role === 'leader') {
      entry.sentTo = this.tab;
      this.worker.postMessage({ id, method: entry.method, args: entry.args });
    } else if (this.leader) {
      entry.sentTo = this.leader;
      this.channel.postMessage({ type: 'call', to: this.leader, from: this.tab, id, method: entry.method, args: entry.args });
    }
    // Else it waits for a leader: redispatch() sends it.
  }

  /** A new leader: calls sent elsewhere (or nowhere) go to it. */
  redispatch() {
    for (const [id, entry] of this.pending) {
      if (!entry.local && entry.sentTo !== this.leader) this.dispatch(id, entry);
    }
  }

  settleCall(id, reply) {
    const entry = this.pending.get(id);
    if (!entry) return; // timed out, or answered already (a call sent twice)
    this.pending.delete(id);
    clearTimeout(entry.timer);
    if (reply.ok) entry.resolve(reply.value);
    else entry.reject(toError(reply.error));
  }

  onWorker(message) {
    if (message.type === 'event') {
      this.emit(message.name, message.payload);
      this.channel.postMessage({ type: 'event', name: message.name, payload: message.payload });
    } else if (message.type === 'reply') {
      const forward = this.forwarded?.get(message.id);
      if (forward) {
        this.forwarded.delete(message.id);
        this.channel.postMessage({ type: 'reply', to: forward.from, id: forward.id, ok: message.ok, value: message.value, error: message.error });
      } else {
        this.settleCall(message.id, message);
      }
    }
  }

  onChannel(message) {
    if (this.closed || !message || typeof message !== 'object') return;
    switch (message.type) {
      case 'who':
        if (this.role === 'leader') this.channel.postMessage({ type: 'leader', tab: this.tab });
        break;
      case 'leader':
        if (this.role === 'leader' || message.tab === this.leader) break;
        this.leader = message.tab;
        this.settle.resolve();
        this.redispatch();
        this.newLeader(message.tab);
        break;
      case 'bye':
        if (message.tab === this.leader && this.role !== 'leader') this.leader = null;
        break;
      case 'call':
        if (this.role === 'leader' && message.to === this.tab) this.forward(message);
        break;
      case 'reply':
        if (message.to === this.tab) this.settleCall(message.id, message);
        break;
      case 'event':
        if (this.role !== 'leader') this.emit(message.name, message.payload);
        break;
    }
  }

  /** A follower's call: to the worker under an id of our own, answered on the channel. */
  forward(message) {
    this.forwarded ??= new Map();
    const id = `f${this.nextId++}`;
    this.forwarded.set(id, { from: message.from, id: message.id });
    // A worker that never answers leaves the follower to its own timeout; forget it then.
    setTimeout(() => this.forwarded?.delete(id), START_TIMEOUT_MS);
    this.worker.postMessage({ id, method: message.method, args: message.args });
  }

  /**
   * A leader is known. After a hand-over, what the old leader's engine emitted as its tab
   * closed may never have arrived (it stored an ack, then the tab went before the event
   * left it): the page is told to read again, and this tab's own sends still waiting for
   * their outcome are looked up in the store, which has it.
   */
  newLeader(tab) {
    const previous = this.lastLeader;
    this.lastLeader = tab;
    if (previous === null || previous === tab) return;
    this.emit('handedOver', { role: this.role });
    for (const [clientMsgId, conversationId] of this.ownPending) {
      this.request('ownMessage', { conversationId, clientMsgId }).then(
        (message) => {
          if (!this.ownPending.has(clientMsgId) || !message) return;
          if (message.status === 'sent') {
            this.emit('messageSent', { conversationId, clientMsgId, seq: message.seq });
          } else if (message.status === 'failed') {
            this.emit('sendFailed', { conversationId, clientMsgId, code: 'Failed', reason: message.failure ?? '' });
          }
        },
        () => {
          // The next hand-over, or the new leader's own resend and its event, settles it.
        },
      );
    }
  }

  // ----- events -----

  on(event, listener) {
    if (typeof listener !== 'function') throw badArgument('listener must be a function');
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this.listeners.get(event)?.delete(listener);
  }

  emit(name, payload) {
    if (name === 'messageSent' || name === 'sendFailed') this.ownPending.delete(payload.clientMsgId);
    for (const listener of this.listeners.get(name) ?? []) {
      try {
        listener(payload);
      } catch (err) {
        // One listener's bug must not keep the event from the others.
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  // ----- leaving -----

  async logout() {
    if (this.closed) return;
    // A login from now on (a framework that unmounts and mounts again) makes a new session,
    // which takes over once this one has let the database go.
    this.onClosed?.();
    if (this.role === 'leader') {
      try {
        await this.request('shutdown', {}, { local: true });
      } catch {
        // The worker is terminated below either way, which releases what it held.
      }
      this.channel.postMessage({ type: 'bye', tab: this.tab });
    }
    this.close();
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.abort.abort();
    this.worker?.terminate();
    this.worker = null;
    this.spare?.terminate();
    this.spare = null;
    this.leave();
    this.channel.close();
    globalThis.removeEventListener?.('pagehide', this.onPageHide);
    for (const [, entry] of this.pending) {
      clearTimeout(entry.timer);
      entry.reject(new TidemarkError('Closed', 'logged out'));
    }
    this.pending.clear();
    this.onClosed?.();
  }
}

/** What `login` resolves with: the calls of index.d.ts's `Session`. */
class Session {
  #tab;

  constructor(tab) {
    this.#tab = tab;
  }

  get user() {
    return this.#tab.user;
  }

  get device() {
    return this.#tab.device;
  }

  get role() {
    return this.#tab.role;
  }

  on(event, listener) {
    return this.#tab.on(event, listener);
  }

  off(event, listener) {
    this.#tab.off(event, listener);
  }

  conversations({ after = null, limit } = {}) {
    return this.#tab.request('conversations', { after, limit });
  }

  conversation(conversationId) {
    return this.#tab.request('conversation', { conversationId });
  }

  messages(conversationId, { before, after, limit } = {}) {
    return this.#tab.request('messages', { conversationId, before, after, limit });
  }

  loadHistory(conversationId, { before = null, limit } = {}) {
    return this.#tab.request('loadHistory', { conversationId, before, limit });
  }

  createTextMessage(text) {
    if (typeof text !== 'string') throw badArgument('text must be a string');
    return { kind: { type: 'text' }, text, content: new TextEncoder().encode(text) };
  }

  async sendMessage(conversationId, draft) {
    if (!draft || typeof draft !== 'object' || !(draft.content instanceof Uint8Array)) {
      throw badArgument('sendMessage needs a draft from createTextMessage');
    }
    const drafts = this.#tab.drafts;
    let clientMsgId = drafts.get(draft);
    if (!clientMsgId) {
      clientMsgId = await this.#tab.request('newClientMsgId', { conversationId });
      drafts.set(draft, clientMsgId);
    }
    const message = await this.#tab.request('send', { conversationId, clientMsgId, kind: draft.kind, content: draft.content });
    // Its outcome is owed to this tab, also across a hand-over (see newLeader).
    if (message.status === 'pending') this.#tab.ownPending.set(clientMsgId, conversationId);
    return message;
  }

  sendText(conversationId, text) {
    return this.sendMessage(conversationId, this.createTextMessage(text));
  }

  editMessage(conversationId, seq, text) {
    const draft = this.createTextMessage(text);
    return this.sendMessage(conversationId, { ...draft, kind: { type: 'edit', target: seq } });
  }

  revokeMessage(conversationId, seq) {
    return this.sendMessage(conversationId, { kind: { type: 'revoke', target: seq }, text: null, content: new Uint8Array() });
  }

  retry(conversationId, clientMsgId) {
    return this.#tab.request('retry', { conversationId, clientMsgId });
  }

  cancel(conversationId, clientMsgId) {
    return this.#tab.request('cancel', { conversationId, clientMsgId });
  }

  markRead(conversationId, seq) {
    return this.#tab.request('markRead', { conversationId, seq });
  }

  totalUnread() {
    return this.#tab.request('totalUnread', {});
  }

  async state() {
    const state = await this.#tab.request('state', {});
    return { ...state, role: this.#tab.role };
  }

  logout() {
    return this.#tab.logout();
  }
}
