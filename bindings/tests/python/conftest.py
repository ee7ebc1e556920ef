"""Fixtures of the Python suite: the real reference server, started once for the session.

The generated bindings (`tidemark_ffi`) are found through TIDEMARK_FFI_PY_DIR and the server
binary through TIDEMARK_SERVER_BIN; scripts/python-bindings-tests.sh sets both.
"""

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

sys.path.insert(0, os.environ["TIDEMARK_FFI_PY_DIR"])

import tidemark_ffi as tm  # noqa: E402

SERVER_BIN = os.environ["TIDEMARK_SERVER_BIN"]
# The messages bob writes into the group `big` before any test runs (the full-sync test
# pulls them all).
BIG = 3000


class Recorder(tm.ClientListener):
    """A listener that keeps every event, for tests to wait on and count."""

    def __init__(self):
        self.events = []
        self.lock = threading.Lock()
        self.threads = set()

    def on_event(self, event):
        with self.lock:
            self.events.append(event)
            self.threads.add(threading.get_ident())

    def snapshot(self):
        with self.lock:
            return list(self.events)

    def matching(self, pred):
        return [e for e in self.snapshot() if pred(e)]

    async def wait_for(self, pred, timeout=60.0, what="an event"):
        """The first event matching `pred`, waiting up to `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.matching(pred)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                kinds = [type(e).__name__ for e in self.snapshot()[-20:]]
                raise AssertionError(f"timed out waiting for {what}; last events: {kinds}")
            await asyncio.sleep(0.02)


async def wait_until(check, timeout=60.0, what="a condition"):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def is_synced(event):
    return event.is_SYNC_FINISHED()


class Inbox:
    """The running server: its URL, database and users' tokens."""

    def __init__(self, url, db, tokens, tmp):
        self.url = url
        self.db = db
        self.tokens = tokens
        self.tmp = tmp
        self._stores = 0

    def store_path(self, name):
        self._stores += 1
        return os.path.join(self.tmp, f"{name}-{self._stores}.db")

    def config(self, user, device, token=None, url=None, **extra):
        return tm.ClientConfig(
            server_url=url or self.url,
            user_id=user,
            device_id=device,
            token=self.tokens[user] if token is None else token,
            **extra,
        )

    async def start(self, user, device, path=None, **extra):
        """A client of `user` on a fresh store (or the one at `path`), with its recorder."""
        store = await tm.open_store(path or self.store_path(f"{user}-{device}"))
        recorder = Recorder()
        client = await tm.start_client(store, self.config(user, device, **extra), recorder)
        return client, recorder

    async def start_synced(self, user, device, **extra):
        client, recorder = await self.start(user, device, **extra)
        await recorder.wait_for(is_synced, what=f"{user}'s first sync")
        return client, recorder


def run_admin(db, *args):
    out = subprocess.run(
        [SERVER_BIN, *args, "--db", db], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1]


async def seed(inbox):
    """Bob writes BIG messages into `big` through his own client, acked before any test."""
    bob, _ = await inbox.start_synced("bob", "seeder")
    for start in range(0, BIG, 500):
        await asyncio.gather(
            *(bob.send_text("big", f"seed {i}") for i in range(start, min(start + 500, BIG)))
        )
    await wait_until(lambda: bob.pending_sends() == 0, timeout=300, what="the seed's acks")
    await bob.shutdown()


@pytest.fixture(scope="session")
def inbox():
    tmp = tempfile.mkdtemp(prefix="tidemark-py-")
    db = os.path.join(tmp, "inbox.db")
    tokens = {user: run_admin(db, "create-user", user) for user in ("alice", "bob", "carol")}
    run_admin(db, "create-conversation", "ab", "--kind", "direct", "alice", "bob")
    run_admin(db, "create-conversation", "big", "--kind", "group", "alice", "bob", "carol")
    server = subprocess.Popen(
        [SERVER_BIN, "serve", "--db", db, "--listen", "127.0.0.1:0", "--rate", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = server.stdout.readline()
        found = re.search(r"listening on (ws://\S+)", line)
        assert found, f"the server did not say where it listens: {line!r}"
        box = Inbox(found.group(1), db, tokens, tmp)
        started = time.monotonic()
        asyncio.run(seed(box))
        print(f"seeded {BIG} messages in {time.monotonic() - started:.1f} s")
        yield box
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def free_port():
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
