// Type-checked (never run) by scripts/web-tests.sh with `tsc --noEmit --strict`: an app's use
// of every call, event and type that web/package/index.d.ts declares, so a declaration that
// does not parse, or does not fit together, fails the build.

import {
  login,
  TidemarkError,
  type ConnectionState,
  type Conversation,
  type ConversationPage,
  type Draft,
  type ErrorCode,
  type EventMap,
  type EventName,
  type HistoryPage,
  type Message,
  type MessageKind,
  type Session,
  type State,
} from '../web/package/index.js';

function describe(kind: MessageKind): string {
  switch (kind.type) {
    case 'text':
    case 'image':
    case 'file':
      return kind.type;
    case 'custom':
      return kind.name;
    case 'edit':
    case 'revoke':
      return `${kind.type} of ${kind.target}`;
  }
}

const events: EventName[] = [
  'messages', 'messageUpdated', 'messagesDeleted', 'messageSent', 'sendFailed',
  'conversationsChanged', 'totalUnreadChanged', 'connectionChanged', 'syncStarted',
  'syncProgress', 'syncFinished', 'kicked', 'storageFailed', 'storeUnusable', 'roleChanged',
  'handedOver',
  'error',
];

export async function app(server: string, token: string): Promise<void> {
  const session: Session = await login({
    server, user: 'alice', token, storage: 'opfs', sync: 'full', callTimeoutMs: 5_000,
  });
  const again: Session = await login({ server, user: 'alice', token });
  console.log(session === again, session.user, session.device, session.role);

  for (const name of events) {
    const off = session.on(name, (payload: EventMap[typeof name]) => console.log(name, payload));
    off();
  }
  session.on('messages', ({ conversationId, messages }) => {
    for (const m of messages) console.log(conversationId, m.seq, m.text, describe(m.kind), m.own);
  });
  session.on('messageUpdated', ({ change }) => {
    if (change.type === 'edited') console.log(change.editSeq, change.text);
  });
  session.on('messagesDeleted', ({ seqs }) => seqs.forEach(([from, to]) => console.log(from, to)));
  session.on('connectionChanged', ({ state }: { state: ConnectionState }) => console.log(state));

  const page: ConversationPage = await session.conversations({ limit: 20 });
  const next = page.next ? await session.conversations({ after: page.next, limit: 20 }) : null;
  const first: Conversation | undefined = page.conversations[0] ?? next?.conversations[0];
  if (!first) return;
  const one: Conversation | null = await session.conversation(first.id);
  console.log(one?.unread, one?.latest?.preview, first.readSeq, first.maxSeq, first.minSeq);

  const history: HistoryPage = await session.loadHistory(first.id, { limit: 30 });
  const oldest = history.messages[0]?.seq ?? null;
  if (!history.reachedStart && oldest !== null) {
    await session.loadHistory(first.id, { before: oldest, limit: 30 });
  }
  const held: Message[] = await session.messages(first.id, { after: 0, limit: 100 });
  console.log(held.map((m) => [m.status, m.failure, m.edited, m.revoked, m.createdAt, m.serverTime]));

  const draft: Draft = session.createTextMessage('hello');
  const sent: Message = await session.sendMessage(first.id, draft);
  await session.sendText(first.id, 'again');
  if (sent.seq !== null) {
    await session.editMessage(first.id, sent.seq, 'hello!');
    await session.revokeMessage(first.id, sent.seq);
  }
  await session.retry(first.id, sent.clientMsgId).catch((e: unknown) => {
    if (e instanceof TidemarkError) {
      const code: ErrorCode = e.code;
      console.log(code, e.message);
    }
  });
  await session.cancel(first.id, sent.clientMsgId);
  await session.markRead(first.id);
  await session.markRead(first.id, first.maxSeq);
  const total: number = await session.totalUnread();
  const state: State = await session.state();
  console.log(total, state.connection, state.sync, state.pendingSends, state.role);
  await session.logout();
}
