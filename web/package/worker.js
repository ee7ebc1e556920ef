// Tidemark's engine worker: a dedicated worker that the leader tab starts (index.js). It
// holds the whole engine (tidemark-web's wasm: the client, the browser store, the WebSocket
// transport) and answers the page's messages:
//
//   page -> worker  { id, method, args }           method "start" first, then any call
//   worker -> page  { type: "reply", id, ok, value | error }
//                   { type: "event", name, payload }
//
// Errors are plain `{ code, message }` objects (the page makes TidemarkErrors of them).

import init, { WebClient } from './wasm/tidemark_web.js';

const ready = init();
let client = null;
let starting = null;

function failure(err) {
  if (err && typeof err === 'object' && typeof err.code === 'string') {
    return { code: err.code, message: String(err.message ?? err.code) };
  }
  // A wasm trap (a bug) or a JavaScript exception: no stable code to give.
  return { code: 'Internal', message: String(err?.message ?? err) };
}

function emit(name, payload) {
  self.postMessage({ type: 'event', name, payload });
}

async function start(args) {
  await ready;
  if (!client) {
    starting ??= WebClient.start(args, emit).finally(() => {
      starting = null;
    });
    client = await starting;
  }
  return null;
}

async function handle({ id, method, args }) {
  try {
    let value;
    if (method === 'start') {
      value = await start(args);
    } else if (!client) {
      throw { code: 'Closed', message: 'the engine is not running in this worker' };
    } else {
      value = await client.call(method, args);
      if (method === 'shutdown') {
        client.free();
        client = null;
      }
    }
    self.postMessage({ type: 'reply', id, ok: true, value });
  } catch (err) {
    self.postMessage({ type: 'reply', id, ok: false, error: failure(err) });
  }
}

self.onmessage = (event) => {
  handle(event.data);
};
