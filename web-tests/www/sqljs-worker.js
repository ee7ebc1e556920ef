// The bench's baseline: sql.js (SQLite compiled to wasm, the database in memory) in a classic
// dedicated worker of the same page. It inserts the rows the page hands it (exactly those
// `ingest` writes through Tidemark's store) in transactions of `perBatch`, each with the
// conversation's record as Tidemark's sync batches have, then exports the database: sql.js
// keeps nothing on disk, and an app persists it by exporting. Timed: the inserts and the
// export; not timed: loading sql.js, encoding the rows, and storing the export anywhere.
importScripts('/sqljs/sql-wasm.js');

const SCHEMA = `
CREATE TABLE conversations (
    id TEXT PRIMARY KEY NOT NULL, kind TEXT NOT NULL, server_max_seq INTEGER NOT NULL,
    held TEXT NOT NULL, unread INTEGER NOT NULL, last_activity INTEGER NOT NULL,
    latest_seq INTEGER, latest_sender TEXT, latest_preview BLOB);
CREATE INDEX conversations_by_activity ON conversations (last_activity DESC, id ASC);
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, conversation TEXT NOT NULL, seq INTEGER, client_msg_id TEXT NOT NULL,
    sender TEXT NOT NULL, kind TEXT NOT NULL, content BLOB NOT NULL, created_at INTEGER NOT NULL,
    server_time INTEGER, status TEXT NOT NULL,
    UNIQUE (conversation, seq), UNIQUE (conversation, sender, client_msg_id));`;

// `exportEach`: export after every transaction too, which is what a sql.js app must do for
// each batch to survive a reload (sql.js has no durability of its own); the bytes are not
// stored anywhere, so even this is cheaper than a durable commit.
self.onmessage = async ({ data: { conversation, rows, perBatch, exportEach } }) => {
  try {
    const SQL = await initSqlJs({ locateFile: (file) => `/sqljs/${file}` });
    const db = new SQL.Database();
    db.run(SCHEMA);
    const encoder = new TextEncoder();
    const contents = rows.map((r) => encoder.encode(r.content));
    const insert = db.prepare(`INSERT INTO messages (conversation, seq, client_msg_id, sender, kind,
        content, created_at, server_time, status) VALUES (?, ?, ?, ?, 'text', ?, ?, ?, 'sent')`);
    const record = db.prepare(`INSERT INTO conversations (id, kind, server_max_seq, held, unread,
        last_activity, latest_seq, latest_sender, latest_preview) VALUES (?, 'group', ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET server_max_seq = excluded.server_max_seq, held = excluded.held,
        unread = excluded.unread, last_activity = excluded.last_activity,
        latest_seq = excluded.latest_seq, latest_sender = excluded.latest_sender,
        latest_preview = excluded.latest_preview`);
    const started = performance.now();
    for (let at = 0; at < rows.length; at += perBatch) {
      db.run('BEGIN');
      const end = Math.min(at + perBatch, rows.length);
      for (let i = at; i < end; i++) {
        const r = rows[i];
        insert.run([conversation, r.seq, r.clientMsgId, r.sender, contents[i], r.createdAt, r.serverTime]);
      }
      const last = rows[end - 1];
      record.run([conversation, last.seq, `1-${last.seq}`, last.seq, last.serverTime, last.seq, last.sender,
        contents[end - 1].subarray(0, 64)]);
      db.run('COMMIT');
      if (exportEach && end < rows.length) db.export();
    }
    const inserted = performance.now();
    const bytes = db.export();
    const exported = performance.now();
    const count = db.exec('SELECT count(*) FROM messages')[0].values[0][0];
    insert.free();
    record.free();
    db.close();
    self.postMessage({
      ok: true,
      value: { insertMs: inserted - started, exportMs: exported - inserted, bytes: bytes.length, count },
    });
  } catch (error) {
    self.postMessage({ ok: false, error: { code: 'SqlJs', message: String(error?.stack || error) } });
  }
};
