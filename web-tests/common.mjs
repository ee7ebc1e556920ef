// What run.mjs (the store's browser scenarios) and sdk.mjs (the web SDK's) share.

/** `--name value` from the command line, or `fallback`. */
export function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 && at + 1 < process.argv.length ? process.argv[at + 1] : fallback;
}

export const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

/** The system's Chromium, headless, with nothing of its own going to the network. */
export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
