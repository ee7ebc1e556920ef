// Tidemark for the web: the TypeScript declarations of every call, event and type.
//
// Numbers: seqs, counts and times are JavaScript numbers. They are exact up to
// Number.MAX_SAFE_INTEGER (2^53 - 1). A seq or count above that cannot be represented: the
// call that would return it rejects with code "OutOfRange" instead of rounding, and a
// number passed in that is not a non-negative safe integer rejects with "BadArgument".

/** A server-assigned position in a conversation: 1, 2, 3, ... */
export type Seq = number;

/** Milliseconds since 1970-01-01 UTC. */
export type Millis = number;

/** Where the file layer keeps the database in this browser. */
export type StorageLayer = "opfs" | "indexeddb";

/** How a session reaches the server and where it keeps its data. */
export interface LoginOptions {
  /** The server's WebSocket URL, e.g. "ws://127.0.0.1:9000". */
  server: string;
  /** The user. */
  user: string;
  /** The user's token. */
  token: string;
  /**
   * This browser's device id for the user. Default: one made once and kept in localStorage
   * (every tab of this origin shares it: they are one device).
   */
  device?: string;
  /** The database name (default: "tidemark-" + user). */
  database?: string;
  /**
   * Where the worker keeps SQLite. Default: "opfs" (the Origin Private File System) where
   * the browser offers synchronous access handles in workers, else "indexeddb". A database
   * lives in one layer: keep the choice once made.
   */
  storage?: StorageLayer;
  /**
   * What the first sync pulls: "recent" (default) the newest messages of each conversation,
   * older ones on demand with loadHistory; "full" every message.
   */
  sync?: "recent" | "full";
  /** How long a call may wait for an answer, in ms (default 15000). */
  callTimeoutMs?: number;
  /** The worker script (default: worker.js beside this module). */
  workerUrl?: string | URL;
}

/** The codes of {@link TidemarkError}. Stable: match on them, not on messages. */
export type ErrorCode =
  | "BadArgument" // a value passed in is out of range or malformed
  | "OutOfRange" // a value to return does not fit a JavaScript number
  | "UnknownConversation"
  | "UnknownMessage"
  | "NotFailed" // retry of a message that has not failed
  | "Stopped" // the engine is restarting after a storage failure: try again
  | "Restarted" // a history load was cut by a restart: ask again
  | "Closed" // logged out, or the session ended
  | "StoreUnusable" // the store is damaged or cannot be written: see the storeUnusable event
  // No answer in callTimeoutMs (the leader tab hangs, is frozen or went away). The call may
  // still take effect: every call is safe to repeat (sendMessage with the same draft sends
  // it once).
  | "Timeout"
  | "LoggedInElsewhere" // login in this tab as another user while one is signed in
  | "Unsupported" // this browser lacks what Tidemark needs (Web Locks, workers, OPFS)
  // Storage errors (StorageError::code in Rust):
  | "Corrupt"
  | "Full"
  | "UnsupportedVersion"
  | "ReadOnly"
  | "Gone"
  | "InUse"
  | "Rejected"
  | "Backend"
  | "Internal";

/** Every rejection is one of these. */
export declare class TidemarkError extends Error {
  readonly name: "TidemarkError";
  readonly code: ErrorCode;
}

export type ConversationKind = "direct" | "group";

/** What a message is. Edits and revokes are messages too; they change `target`. */
export type MessageKind =
  | { type: "text" }
  | { type: "image" }
  | { type: "file" }
  | { type: "custom"; name: string }
  | { type: "edit"; target: Seq }
  | { type: "revoke"; target: Seq };

export type MessageStatus = "pending" | "sent" | "failed";

export interface Message {
  conversationId: string;
  /** null while pending or failed. */
  seq: Seq | null;
  /** The sender's id for it, unique per sender and conversation. */
  clientMsgId: string;
  sender: string;
  kind: MessageKind;
  /** The content as text when it is valid UTF-8 (always for text messages), else null. */
  text: string | null;
  /** The raw content. */
  content: Uint8Array;
  /** The sender's clock when it was created. */
  createdAt: Millis;
  /** When the server accepted it (null while pending). */
  serverTime: Millis | null;
  status: MessageStatus;
  /** Why it failed (status "failed"), else null. */
  failure: string | null;
  /** Whether an edit replaced its content. */
  edited: boolean;
  /** Whether it was revoked (its content is cleared). */
  revoked: boolean;
  /** Whether the signed-in user sent it. */
  own: boolean;
}

export interface LatestMessage {
  seq: Seq | null;
  clientMsgId: string;
  sender: string;
  kind: MessageKind;
  /** The first bytes of the content, as text when valid UTF-8. */
  preview: string | null;
  time: Millis;
}

export interface Conversation {
  id: string;
  kind: ConversationKind;
  unread: number;
  /** The user's read position. */
  readSeq: Seq;
  /** The highest seq the server is known to have. */
  maxSeq: Seq;
  /** Seqs below this are gone on the server (0 or 1: none). */
  minSeq: Seq;
  latest: LatestMessage | null;
  lastActivity: Millis;
}

/** Where the next page of conversations starts. Pass it back as it is. */
export interface ConversationCursor {
  lastActivity: Millis;
  id: string;
}

export interface ConversationPage {
  conversations: Conversation[];
  /** The cursor of the next page, or null when this page is the last. */
  next: ConversationCursor | null;
}

export interface HistoryPage {
  /** Ascending by seq: the newest `limit` messages below `before`. */
  messages: Message[];
  /** Whether everything asked for is held (false: the connection dropped first). */
  complete: boolean;
  /** Whether nothing older exists: the start of the conversation (or its history floor). */
  reachedStart: boolean;
}

/** A message made by createTextMessage, not sent yet. */
export interface Draft {
  kind: MessageKind;
  text: string | null;
  content: Uint8Array;
}

export type ConnectionState = "disconnected" | "connecting" | "connected";
export type SyncState = "offline" | "syncing" | "synced" | "storeUnusable";

export interface State {
  connection: ConnectionState;
  sync: SyncState;
  totalUnread: number;
  /** This device's sends neither acked nor failed. */
  pendingSends: number;
  /** Whether this tab owns the engine ("leader") or talks to the tab that does. */
  role: Role;
}

export type Role = "leader" | "follower";

/** The events, by name, with what their listeners receive. */
export interface EventMap {
  /** New messages of one conversation, ascending by seq; each at most once. */
  messages: { conversationId: string; messages: Message[] };
  /** A stored message was edited or revoked. */
  messageUpdated: {
    conversationId: string;
    seq: Seq;
    change: { type: "edited"; editSeq: Seq; text: string | null } | { type: "revoked" };
  };
  /** Seqs no longer exist on the server; their messages were removed. */
  messagesDeleted: { conversationId: string; seqs: Array<[Seq, Seq]> };
  /** A send was acked. */
  messageSent: { conversationId: string; clientMsgId: string; seq: Seq };
  /** A send failed for good. */
  sendFailed: { conversationId: string; clientMsgId: string; code: string; reason: string };
  /** These conversations' list entries changed (latest, unread, activity, new). */
  conversationsChanged: { conversationIds: string[] };
  totalUnreadChanged: { total: number };
  connectionChanged: { state: ConnectionState };
  syncStarted: Record<string, never>;
  syncProgress: { done: number; total: number };
  syncFinished: Record<string, never>;
  /** The server ended the session (another login, a revoked token). */
  kicked: { reason: string };
  /** A write failed; the engine restarts from the store. */
  storageFailed: { error: string };
  /** The store cannot be used; every command fails with "StoreUnusable". */
  storeUnusable: { error: string; damaged: boolean };
  /** This tab became the leader (the leader tab closed or logged out: hand-over). */
  roleChanged: { role: Role };
  /**
   * Another tab (or this one, see `role`) took over from a leader that went. Events the old
   * leader emitted just before its tab closed may not have arrived: read again what the page
   * shows. This tab's own sends still waiting for their outcome are looked up in the store,
   * and their messageSent or sendFailed comes now if the store has it.
   */
  handedOver: { role: Role };
  /** Something failed outside any call (the engine worker crashed). */
  error: { code: ErrorCode; message: string };
}

export type EventName = keyof EventMap;

/** One signed-in user in this tab. Every method is safe to call from any tab of the origin. */
export interface Session {
  readonly user: string;
  readonly device: string;
  /** This tab's current role. */
  readonly role: Role;

  /** Registers a listener; returns the function that removes it. */
  on<E extends EventName>(event: E, listener: (payload: EventMap[E]) => void): () => void;
  off<E extends EventName>(event: E, listener: (payload: EventMap[E]) => void): void;

  /** A page of the conversation list, newest activity first. */
  conversations(options?: { after?: ConversationCursor | null; limit?: number }): Promise<ConversationPage>;
  /** One conversation, or null. */
  conversation(conversationId: string): Promise<Conversation | null>;
  /**
   * Held messages, ascending by seq: the newest `limit` below `before` (default: the newest
   * of all), or with `after` the oldest `limit` above it. No network.
   */
  messages(conversationId: string, options?: { before?: Seq; after?: Seq; limit?: number }): Promise<Message[]>;
  /**
   * Older messages: makes sure the `limit` seqs below `before` (default: the newest) are held,
   * pulling the gaps from the server, then returns that page.
   */
  loadHistory(conversationId: string, options?: { before?: Seq | null; limit?: number }): Promise<HistoryPage>;

  /** A text message to send with sendMessage. Local: no network, no store. */
  createTextMessage(text: string): Draft;
  /**
   * Sends a draft. Resolves with the stored pending message (its clientMsgId) once it is in
   * the store's outbox; the messageSent or sendFailed event follows. Exactly once even when
   * the leader tab closes during the call (the call is repeated on the new leader under the
   * same clientMsgId, which the engine recognises).
   */
  sendMessage(conversationId: string, draft: Draft): Promise<Message>;
  /** createTextMessage + sendMessage. */
  sendText(conversationId: string, text: string): Promise<Message>;
  /** Replaces the text of the user's message at `seq`. */
  editMessage(conversationId: string, seq: Seq, text: string): Promise<Message>;
  /** Withdraws the user's message at `seq`. */
  revokeMessage(conversationId: string, seq: Seq): Promise<Message>;
  /** Sends a failed message again. */
  retry(conversationId: string, clientMsgId: string): Promise<void>;
  /** Cancels a send that is not acked. */
  cancel(conversationId: string, clientMsgId: string): Promise<void>;
  /** Marks the conversation read up to `seq` (default: everything). */
  markRead(conversationId: string, seq?: Seq): Promise<void>;

  /** The sum of unread counts. */
  totalUnread(): Promise<number>;
  /** Connection, sync, unread and role, now. */
  state(): Promise<State>;

  /**
   * Leaves: a leader tab shuts its engine down and hands the database to another tab of the
   * user, a follower stops listening. Later calls reject with "Closed".
   */
  logout(): Promise<void>;
}

/**
 * Signs a user in, in this tab. The first tab of the origin for that user becomes the leader:
 * it runs the engine in a dedicated worker; other tabs talk to it. Calling login again with
 * the same user (a framework that mounts twice) returns the same session; after logout (even
 * one not awaited, as a framework's unmount does) a new one. With another user while a
 * session is open it rejects with "LoggedInElsewhere".
 */
export declare function login(options: LoginOptions): Promise<Session>;
