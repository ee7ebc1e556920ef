// A dedicated module worker that runs the harness's wasm and calls its exports on request.
// onmessage is set before the wasm is ready (messages must not be lost); each call awaits it.
import init, * as api from '/pkg/tidemark_web_tests.js';

// A panic in the wasm (src/lib.rs sets the hook) fails every call of this worker at once.
self.reportPanic = (message) => self.postMessage({ panic: message });
self.addEventListener('unhandledrejection', (event) => {
  self.postMessage({ panic: `unhandled rejection: ${event.reason?.stack || event.reason}` });
});

const ready = init();

self.onmessage = async ({ data: { id, fn, args, progress } }) => {
  try {
    await ready;
    if (typeof api[fn] !== 'function') throw { code: 'NoSuchFunction', message: fn };
    const all = progress ? [...args, (value) => self.postMessage({ progress: value })] : args;
    const value = await api[fn](...all);
    self.postMessage({ id, ok: true, value });
  } catch (error) {
    const typed = error && typeof error === 'object' && 'code' in error;
    self.postMessage({
      id,
      ok: false,
      error: typed ? error : { code: 'Exception', message: String((error && error.stack) || error) },
    });
  }
};
