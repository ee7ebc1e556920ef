// The round-trip bench's in-browser baseline: a plain JavaScript WebSocket in a classic
// dedicated worker of the same page, speaking the protocol's JSON frames to the same server
// with one request in flight, as Tidemark's transport does from its worker. What it measures
// is the browser's own cost (its WebSocket, its worker event loop); the difference to
// Tidemark's figure is ours (wasm, the codec, the futures between socket and caller).
self.onmessage = async ({ data: { url, user, device, token, count, warmup } }) => {
  try {
    const ws = new WebSocket(url);
    let answer = null;
    ws.onmessage = ({ data }) => {
      const frame = JSON.parse(data);
      const settle = answer;
      answer = null;
      settle?.(frame);
    };
    await new Promise((ok, fail) => {
      ws.onopen = ok;
      ws.onerror = () => fail(new Error(`cannot connect to ${url}`));
    });
    const next = () => new Promise((ok) => { answer = ok; });
    let reply = next();
    ws.send(JSON.stringify({ type: 'hello', version: 1, user, device, token }));
    const welcome = await reply;
    if (welcome.type !== 'welcome') throw new Error(`no welcome: ${JSON.stringify(welcome)}`);
    const ping = async (id) => {
      reply = next();
      ws.send(JSON.stringify({ type: 'request', id, request: 'Ping' }));
      const frame = await reply;
      if (frame.type !== 'response' || frame.id !== id || frame.response?.Pong === undefined) {
        throw new Error(`not a pong: ${JSON.stringify(frame)}`);
      }
    };
    for (let i = 1; i <= warmup; i++) await ping(i);
    const started = performance.now();
    for (let i = 1; i <= count; i++) await ping(warmup + i);
    const meanUs = ((performance.now() - started) * 1000) / count;
    ws.close();
    self.postMessage({ ok: true, value: { count, mean_us: meanUs } });
  } catch (error) {
    self.postMessage({ ok: false, error: { code: 'Baseline', message: String(error) } });
  }
};
