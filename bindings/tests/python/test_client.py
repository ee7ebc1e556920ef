"""The Tidemark client through its generated Python bindings, against the real reference
server (conftest.py starts it and seeds `big` with 3,000 messages from bob)."""

import asyncio
import gc
import os
import threading

import pytest

from conftest import BIG, Recorder, free_port, tm, wait_until


def sent(client_msg_id):
    return lambda e: e.is_MESSAGE_SENT() and e.client_msg_id == client_msg_id


async def all_messages(client, conversation):
    """Every held message of a conversation, paging forward from the start."""
    held, anchor = [], None
    while True:
        page = await client.messages(conversation, anchor, tm.Direction.AFTER, 500)
        if not page:
            return held
        held.extend(page)
        anchor = page[-1].seq


def test_log_in(inbox):
    async def body():
        client, events = await inbox.start_synced("alice", "login")
        assert client.user_id() == "alice"
        assert client.connection_state() == tm.ConnectionState.CONNECTED
        assert client.sync_state() == tm.SyncState.SYNCED()
        connected = events.matching(
            lambda e: e.is_CONNECTION_CHANGED() and e.state == tm.ConnectionState.CONNECTED
        )
        assert len(connected) == 1
        ids = {c.id for c in await client.conversations(None, 50)}
        assert ids == {"ab", "big"}
        # Events come on one thread of the bindings' (in order), never on the caller's.
        assert len(events.threads) == 1
        assert threading.get_ident() not in events.threads
        await client.shutdown()
        assert client.is_closed()
        with pytest.raises(tm.TidemarkError.Closed) as closed:
            await client.send_text("ab", "too late")
        assert closed.value.code == "Closed"
        # Reads still work after the shutdown.
        assert len(await client.conversations(None, 50)) == 2

    asyncio.run(body())


def test_full_sync_of_thousands_of_messages(inbox):
    async def body():
        client, events = await inbox.start_synced(
            "carol", "full", sync_policy=tm.SyncPolicy.FULL()
        )
        big = await client.conversation("big")
        assert big.server_max_seq >= BIG
        held = await all_messages(client, "big")
        assert [m.seq for m in held] == list(range(1, big.server_max_seq + 1))
        seeded = [m for m in held if m.content.startswith(b"seed ")]
        assert len(seeded) == BIG
        assert all(m.status == tm.MessageStatus.SENT() and m.sender == "bob" for m in seeded)
        # Each message was announced once, in ascending order within each event.
        announced = [
            m.seq
            for e in events.matching(
                lambda e: e.is_MESSAGES_RECEIVED() and e.conversation == "big"
            )
            for m in e.messages
        ]
        assert sorted(announced) == [m.seq for m in held]
        assert big.unread == len([m for m in held if m.sender != "carol"])
        assert client.total_unread() >= big.unread
        await client.shutdown()

    asyncio.run(body())


def test_a_send_is_acked_exactly_once(inbox):
    async def body():
        alice, events = await inbox.start_synced("alice", "once")
        bob, _ = await inbox.start_synced("bob", "once")
        client_msg_id = await alice.send_text("ab", "exactly once")
        pending = await alice.own_message("ab", client_msg_id)
        assert pending.content == b"exactly once"
        ack = await events.wait_for(sent(client_msg_id), what="the ack")
        # Time for a duplicate ack or echo to show up, if one were coming.
        await asyncio.sleep(1.0)
        assert len(events.matching(sent(client_msg_id))) == 1
        mine = await alice.own_message("ab", client_msg_id)
        assert mine.status == tm.MessageStatus.SENT() and mine.seq == ack.seq
        assert alice.pending_sends() == 0
        # The server holds it once: bob's copy, under the same client id.
        theirs = []
        for _ in range(200):
            theirs = [m for m in await all_messages(bob, "ab") if m.client_msg_id == client_msg_id]
            if theirs:
                break
            await asyncio.sleep(0.05)
        assert [m.seq for m in theirs] == [ack.seq]
        await alice.shutdown()
        await bob.shutdown()

    asyncio.run(body())


def test_a_message_from_another_user_arrives_through_the_listener(inbox):
    async def body():
        alice, events = await inbox.start_synced("alice", "listen")
        bob, _ = await inbox.start_synced("bob", "talk")
        client_msg_id = await bob.send_text("ab", "hello alice, from bob")
        arrived = await events.wait_for(
            lambda e: e.is_MESSAGES_RECEIVED()
            and any(m.client_msg_id == client_msg_id for m in e.messages),
            what="bob's message",
        )
        message = next(m for m in arrived.messages if m.client_msg_id == client_msg_id)
        assert arrived.conversation == "ab"
        assert message.sender == "bob"
        assert message.content == b"hello alice, from bob"
        assert message.kind == tm.ContentKind.TEXT()
        # The event follows the commit: the store already holds what it announced.
        assert await alice.message("ab", message.seq) == message
        await alice.shutdown()
        await bob.shutdown()

    asyncio.run(body())


def test_unread_moves_with_mark_read(inbox):
    async def body():
        alice, events = await inbox.start_synced("alice", "unread")
        bob, _ = await inbox.start_synced("bob", "unread")
        before = alice.total_unread()
        ab_before = (await alice.conversation("ab")).unread
        ids = [await bob.send_text("ab", f"unread {i}") for i in range(3)]
        await wait_until(
            lambda: alice.total_unread() == before + 3, what="three more unread"
        )
        await events.wait_for(
            lambda e: e.is_TOTAL_UNREAD_CHANGED() and e.total == before + 3,
            what="the total's event",
        )
        ab = await alice.conversation("ab")
        assert ab.unread == ab_before + 3
        newest = await alice.messages("ab", None, tm.Direction.BEFORE, 1)
        assert newest[0].client_msg_id == ids[-1]
        await alice.mark_read("ab", newest[0].seq)
        assert alice.total_unread() == before + 3 - ab.unread
        await events.wait_for(
            lambda e: e.is_TOTAL_UNREAD_CHANGED() and e.total == before + 3 - ab.unread,
            what="the total after mark read",
        )
        ab = await alice.conversation("ab")
        assert ab.unread == 0 and ab.read_seq == newest[0].seq
        await alice.shutdown()
        await bob.shutdown()

    asyncio.run(body())


def test_a_pending_send_goes_out_after_a_restart_on_the_same_store(inbox):
    async def body():
        path = inbox.store_path("alice-restart")
        # First run: online, to learn the conversations.
        client, _ = await inbox.start_synced("alice", "restart", path=path)
        await client.shutdown()
        del client
        gc.collect()
        # Second run: the server cannot be reached; the start still succeeds (offline
        # first), and the send is stored as pending.
        offline_url = f"ws://127.0.0.1:{free_port()}"
        client, _ = await inbox.start("alice", "restart", path=path, url=offline_url)
        assert client.connection_state() != tm.ConnectionState.CONNECTED
        client_msg_id = await client.send_text("ab", "written offline")
        assert client.pending_sends() == 1
        assert (await client.own_message("ab", client_msg_id)).status == tm.MessageStatus.PENDING()
        await client.shutdown()
        del client
        gc.collect()
        # Third run on the same file, against the server: the send goes out by itself.
        client, events = await inbox.start("alice", "restart", path=path)
        assert client.pending_sends() == 1
        ack = await events.wait_for(sent(client_msg_id), what="the restarted send's ack")
        assert len(events.matching(sent(client_msg_id))) == 1
        await wait_until(lambda: client.pending_sends() == 0, what="an empty outbox")
        mine = await client.own_message("ab", client_msg_id)
        assert mine.status == tm.MessageStatus.SENT() and mine.seq == ack.seq
        assert await client.unsent_messages("ab") == []
        await client.shutdown()

    asyncio.run(body())


def test_a_damaged_store_is_a_clear_exception(inbox):
    async def body():
        garbage = inbox.store_path("garbage")
        with open(garbage, "wb") as f:
            f.write(b"this is not a database " * 400)
        with pytest.raises(tm.TidemarkError.Storage) as refused:
            await tm.open_store(garbage)
        assert refused.value.code == "Corrupt"
        assert "corrupt" in str(refused.value).lower()

        # A real store damaged in the middle of the file (pages overwritten): found by the
        # check at open, before anything is written.
        path = inbox.store_path("damaged")
        client, _ = await inbox.start_synced(
            "carol", "damaged", path=path, sync_policy=tm.SyncPolicy.FULL()
        )
        await client.shutdown()
        del client
        gc.collect()
        size = os.path.getsize(path)
        assert size > 64 * 1024
        with open(path, "r+b") as f:
            f.seek(size // 2)
            f.write(b"\xde\xad\xbe\xef" * 4096)
        with pytest.raises(tm.TidemarkError.Storage) as damaged:
            await tm.open_store(path)
        assert damaged.value.code == "Corrupt"

        # The way back: set it aside, start fresh, sync again.
        report = await tm.recover_store(path)
        assert os.path.exists(report.set_aside) and report.set_aside != path
        assert report.outbox_lost == 0
        client, _ = await inbox.start_synced(
            "carol", "damaged", path=path, sync_policy=tm.SyncPolicy.FULL()
        )
        assert (await client.conversation("big")).held_count >= BIG
        await client.shutdown()

    asyncio.run(body())


def test_a_bad_token_is_a_clear_exception(inbox):
    async def body():
        store = await tm.open_store(inbox.store_path("alice-bad-token"))
        with pytest.raises(tm.TidemarkError.LoginRefused) as refused:
            await tm.start_client(
                store, inbox.config("alice", "bad-token", token="not-a-token"), Recorder()
            )
        assert refused.value.code == "unauthorized"

    asyncio.run(body())


def test_typed_errors_for_refused_commands(inbox):
    async def body():
        alice, _ = await inbox.start_synced("alice", "errors")
        with pytest.raises(tm.TidemarkError.Command) as unknown:
            await alice.retry("ab", "no-such-id")
        assert unknown.value.code == "UnknownMessage"
        with pytest.raises(tm.TidemarkError.InvalidArgument) as invalid:
            await alice.conversations(None, 0)
        assert invalid.value.code == "InvalidArgument"
        await alice.shutdown()

    asyncio.run(body())


def test_a_listener_that_raises_still_gets_the_later_events(inbox):
    class Raising(Recorder):
        def on_event(self, event):
            super().on_event(event)
            raise RuntimeError("a bug in the app's listener")

    async def body():
        store = await tm.open_store(inbox.store_path("alice-raising"))
        events = Raising()
        client = await tm.start_client(store, inbox.config("alice", "raising"), events)
        await events.wait_for(lambda e: e.is_SYNC_FINISHED(), what="the sync, after raising")
        assert len(events.snapshot()) > 2
        await client.shutdown()

    asyncio.run(body())
