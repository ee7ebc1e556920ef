// The page side of the harness: dedicated workers (each runs the wasm and holds at most one
// store) and a call that resolves with {ok, value} or {ok: false, error: {code, message}}, so
// errors cross page.evaluate intact. Progress values go to window.reportProgress (a Playwright
// binding) when the caller asks for them.
const workers = [];
const pending = new Map();
let nextId = 1;

function settleAll(index, error) {
  for (const [id, call] of pending) {
    if (call.worker === index) {
      pending.delete(id);
      call.resolve({ ok: false, error });
    }
  }
}

window.harness = {
  spawn() {
    const index = workers.length;
    const worker = new Worker('/worker.js', { type: 'module' });
    worker.onmessage = ({ data }) => {
      if ('panic' in data) {
        settleAll(index, { code: 'Panic', message: data.panic });
        return;
      }
      if ('progress' in data) {
        window.reportProgress?.(index, data.progress);
        return;
      }
      const call = pending.get(data.id);
      if (call) {
        pending.delete(data.id);
        call.resolve(data);
      }
    };
    worker.onerror = (event) => settleAll(index, { code: 'WorkerError', message: String(event.message) });
    workers.push(worker);
    return index;
  },
  call(index, fn, args = [], progress = false) {
    return new Promise((resolve) => {
      const id = nextId++;
      pending.set(id, { worker: index, resolve });
      workers[index].postMessage({ id, fn, args, progress });
    });
  },
  /**
   * The bench's baseline: the rows `ingest` writes (made by worker `index`'s wasm) inserted
   * into sql.js in a classic worker of this page; resolves like `call`, with the timings.
   */
  async sqljs(index, conversation, total, perBatch, exportEach) {
    const rows = await this.call(index, 'rows', [conversation, 1, total]);
    if (!rows.ok) return rows;
    const worker = new Worker('/sqljs-worker.js');
    try {
      return await new Promise((resolve) => {
        worker.onmessage = ({ data }) => resolve(data);
        worker.onerror = (event) => resolve({ ok: false, error: { code: 'WorkerError', message: String(event.message) } });
        worker.postMessage({ conversation, rows: rows.value, perBatch, exportEach });
      });
    } finally {
      worker.terminate();
    }
  },
  /** The round-trip bench's baseline: plain JavaScript pings from a classic worker. */
  async wsPings(url, user, device, token, count, warmup) {
    const worker = new Worker('/ws-worker.js');
    try {
      return await new Promise((resolve) => {
        worker.onmessage = ({ data }) => resolve(data);
        worker.onerror = (event) => resolve({ ok: false, error: { code: 'WorkerError', message: String(event.message) } });
        worker.postMessage({ url, user, device, token, count, warmup });
      });
    } finally {
      worker.terminate();
    }
  },
  terminate(index) {
    workers[index].terminate();
    settleAll(index, { code: 'Terminated', message: 'the worker was terminated' });
  },
};
