//! The inbox server core under arbitrary requests from several users, then every member's
//! client synced from it.
//!
//! The run is the conformance simulation (`tidemark_conformance::sim::Sim`) with the model
//! tests' participants (`model::topology`: alice on two devices, bob on one, carol and dave
//! without a device; two groups, two direct conversations). Every user also has a raw
//! connection (`model::hostile::RawClient`) that sends whatever the input says, as an
//! honest or a hostile member would: sends with any `created_at`, of any kind (custom kinds
//! with long names; edits and revokes of anyone's message, of seq 0, of huge, future,
//! deleted seqs, of another change), under fresh client ids or ids already used by itself or
//! others in any conversation, to conversations it is not in or that do not exist; mark-read
//! at any seq; pulls of any ranges of any conversations; max-seq pages; deletion lists.
//! Between them the devices send, the admin API deletes plain messages and raises floors,
//! devices crash, and time passes.
//!
//! Checked (a server rule violation is a crash by default; `TIDEMARK_FUZZ_SERVER_RULES=off`
//! skips the first two checks, for campaigns that study what clients make of a server that
//! breaks its rules while the server's own bugs are not fixed):
//! - every answer to a raw request against the rules a correct server applies
//!   (`model::hostile`: a resend gets its original ack, a client id taken in another
//!   conversation is refused, non-members are refused, `created_at` above `i64::MAX` is
//!   refused, an edit or revoke must name an existing message of the conversation that is
//!   not a change and was sent by the same user; pulls of foreign conversations are refused;
//!   what is acked is what is stored); a violation is a crash, never tolerated;
//! - no stored message holds a seq or time above `i64::MAX`;
//! - after healing, every device syncs to quiescence, and the simulation's invariants hold
//!   (`tidemark_conformance::invariants`: nothing lost or duplicated against the server,
//!   held ranges never claim a gap, local max = server max, content equal to the server's,
//!   no message showing text its author did not send, unread exact, every send ended).

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use futures::executor::block_on;
use libfuzzer_sys::fuzz_target;
use tidemark_conformance::model::hostile::{self, RawClient, MAX_STORABLE};
use tidemark_conformance::model::topology::{conversations_of, CONVERSATIONS, DEVICES};
use tidemark_conformance::server::ServerStore;
use tidemark_conformance::sim::{Sim, SimConfig};
use tidemark_conformance::MemoryBackend;
use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, PullRange, Request, Seq, SeqRanges, Timestamp, UserId,
};

/// Users with a raw connection: every member of some conversation.
const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// A conversation that does not exist.
const NOWHERE: &str = "nowhere";
/// Actions per run.
const MAX_ACTIONS: usize = 48;

#[derive(Arbitrary, Debug)]
struct Input {
    seed: u64,
    actions: Vec<Action>,
}

#[derive(Arbitrary, Debug)]
enum Action {
    /// User `user` sends a raw request.
    Raw { user: u8, request: RawRequest },
    /// Device `device` sends a text to its user's `conv`-th conversation.
    DeviceSend { device: u8, conv: u8 },
    /// The admin deletes the `pick`-th plain message of `conv`.
    Delete { conv: u8, pick: u8 },
    /// The admin raises `conv`'s floor by `by`.
    RaiseFloor { conv: u8, by: u8 },
    /// Device `device` crashes and restarts from its store.
    Crash { device: u8 },
    /// Time passes.
    Tick { ms: u16 },
}

#[derive(Arbitrary, Debug)]
enum RawRequest {
    Send {
        conv: u8,
        id: IdChoice,
        kind: KindChoice,
        len: u8,
        at: TimeChoice,
    },
    MarkRead {
        conv: u8,
        seq: SeqChoice,
    },
    Pull {
        ranges: Vec<(u8, SeqChoice, SeqChoice)>,
    },
    GetDeletions {
        convs: Vec<u8>,
    },
    GetMaxSeqs {
        limit: u32,
    },
}

#[derive(Arbitrary, Debug)]
enum IdChoice {
    /// A client id never used.
    Fresh,
    /// The `n`-th client id this user's stored messages carry (any conversation).
    Own(u8),
    /// The `n`-th client id any stored message carries.
    Any(u8),
}

#[derive(Arbitrary, Debug)]
enum KindChoice {
    Text,
    Image,
    File,
    /// A custom kind whose name is `n` times 32 characters long.
    Custom(u8),
    Edit(SeqChoice),
    Revoke(SeqChoice),
}

#[derive(Arbitrary, Debug)]
enum TimeChoice {
    Now,
    Zero,
    I64Max,
    AboveI64,
    U64Max,
    Any(u64),
}

#[derive(Arbitrary, Debug)]
enum SeqChoice {
    /// A small seq (0 too).
    Small(u8),
    /// The `n`-th existing message of the conversation (anyone's, changes too).
    Existing(u8),
    /// The conversation's max seq.
    Max,
    /// Beyond the max seq.
    Future(u8),
    /// A seq deleted one by one (else seq 0).
    Deleted,
    AboveI64,
    U64Max,
}

/// Whether the server's answers are judged (see the module docs).
fn judge_server() -> bool {
    static JUDGE: OnceLock<bool> = OnceLock::new();
    *JUDGE.get_or_init(|| std::env::var("TIDEMARK_FUZZ_SERVER_RULES").map_or(true, |v| v != "off"))
}

fn conversation(conv: u8) -> ConversationId {
    // One in six names a conversation that does not exist.
    match usize::from(conv) % (CONVERSATIONS.len() + 2) {
        c if c < CONVERSATIONS.len() => CONVERSATIONS[c].id.into(),
        _ => NOWHERE.into(),
    }
}

struct Run {
    sim: Sim<MemoryBackend>,
    raw: Vec<RawClient>,
    fresh: u64,
    texts: u64,
}

impl Run {
    fn ids(&self) -> Vec<ConversationId> {
        CONVERSATIONS.iter().map(|c| c.id.into()).collect()
    }

    fn max(&self, id: &ConversationId) -> Seq {
        let store = self.sim.server().store();
        store
            .conversation(id)
            .ok()
            .flatten()
            .map_or(Seq(0), |c| c.max_seq)
    }

    fn seq(&self, id: &ConversationId, choice: &SeqChoice) -> Seq {
        let store = self.sim.server().store();
        let max = self.max(id);
        match *choice {
            SeqChoice::Small(n) => Seq(u64::from(n % 16)),
            SeqChoice::Existing(n) => {
                let all = store
                    .messages(id, Seq(1), max, usize::MAX)
                    .unwrap_or_default();
                all.get(usize::from(n) % all.len().max(1))
                    .map_or(Seq(1), |m| m.seq)
            }
            SeqChoice::Max => max,
            SeqChoice::Future(n) => Seq(max.0 + 1 + u64::from(n % 4)),
            SeqChoice::Deleted => store
                .deleted(id, Seq(1), max)
                .ok()
                .and_then(|d| d.max())
                .unwrap_or(Seq(0)),
            SeqChoice::AboveI64 => Seq(MAX_STORABLE + 1),
            SeqChoice::U64Max => Seq(u64::MAX),
        }
    }

    fn client_id(&mut self, user: &UserId, choice: &IdChoice) -> ClientMsgId {
        let pick =
            |ids: Vec<ClientMsgId>, n: u8| ids.get(usize::from(n) % ids.len().max(1)).cloned();
        let chosen = match *choice {
            IdChoice::Fresh => None,
            IdChoice::Own(n) => pick(self.stored_ids(Some(user)), n),
            IdChoice::Any(n) => pick(self.stored_ids(None), n),
        };
        chosen.unwrap_or_else(|| {
            self.fresh += 1;
            ClientMsgId(format!("raw-{}", self.fresh))
        })
    }

    /// Client ids of every stored message (of `sender` only, when given).
    fn stored_ids(&self, sender: Option<&UserId>) -> Vec<ClientMsgId> {
        let store = self.sim.server().store();
        let mut out = Vec::new();
        for id in self.ids() {
            let max = self.max(&id);
            for m in store
                .messages(&id, Seq(1), max, usize::MAX)
                .unwrap_or_default()
            {
                if sender.is_none_or(|s| s == &m.sender) {
                    out.push(m.client_msg_id);
                }
            }
        }
        out
    }

    async fn raw(&mut self, u: usize, request: &RawRequest) {
        let user = self.raw[u].user.clone();
        let request = match request {
            RawRequest::Send {
                conv,
                id,
                kind,
                len,
                at,
            } => {
                let conversation = conversation(*conv);
                let kind = match kind {
                    KindChoice::Text => ContentKind::Text,
                    KindChoice::Image => ContentKind::Image,
                    KindChoice::File => ContentKind::File,
                    KindChoice::Custom(n) => ContentKind::Custom("c".repeat(usize::from(*n) * 32)),
                    KindChoice::Edit(s) => ContentKind::Edit {
                        target: self.seq(&conversation, s),
                    },
                    KindChoice::Revoke(s) => ContentKind::Revoke {
                        target: self.seq(&conversation, s),
                    },
                };
                let created_at = match *at {
                    TimeChoice::Now => self.sim.now().0,
                    TimeChoice::Zero => 0,
                    TimeChoice::I64Max => MAX_STORABLE,
                    TimeChoice::AboveI64 => MAX_STORABLE + 1,
                    TimeChoice::U64Max => u64::MAX,
                    TimeChoice::Any(t) => t,
                };
                let content = if matches!(kind, ContentKind::Revoke { .. }) {
                    Vec::new()
                } else {
                    self.texts += 1;
                    let mut text = format!("{user}-{}", self.texts).into_bytes();
                    text.resize(text.len() + usize::from(*len), b'.');
                    text
                };
                let client_msg_id = self.client_id(&user, id);
                hostile::send_request(
                    conversation,
                    client_msg_id,
                    kind,
                    content,
                    Timestamp(created_at),
                )
            }
            RawRequest::MarkRead { conv, seq } => {
                let conversation = conversation(*conv);
                let seq = self.seq(&conversation, seq);
                Request::MarkRead { conversation, seq }
            }
            RawRequest::Pull { ranges } => Request::Pull {
                ranges: ranges
                    .iter()
                    .take(6)
                    .map(|(c, from, to)| {
                        let conversation = conversation(*c);
                        PullRange {
                            from: self.seq(&conversation, from),
                            to: self.seq(&conversation, to),
                            conversation,
                        }
                    })
                    .collect(),
                max_bytes: None,
            },
            RawRequest::GetDeletions { convs } => Request::GetDeletions {
                conversations: convs.iter().take(6).map(|c| conversation(*c)).collect(),
            },
            RawRequest::GetMaxSeqs { limit } => Request::GetMaxSeqs {
                after: None,
                limit: *limit,
                since: None,
            },
        };
        let limit = self.sim.server().config().max_content_bytes;
        let store = self.sim.server().store();
        let verdict = hostile::send_verdict(store, limit, &user, &request).expect("server store");
        let max_before = match &request {
            Request::Send { conversation, .. } => self.max(conversation),
            _ => Seq(0),
        };
        let answer = self.raw[u]
            .request(&mut self.sim, request.clone())
            .await
            .expect("raw request");
        let store = self.sim.server().store();
        let mut broken = hostile::judge_other(store, &user, &request, &answer).expect("store");
        broken.extend(
            hostile::judge_send(store, &user, &request, &verdict, max_before, &answer)
                .expect("store")
                .violations,
        );
        if !broken.is_empty() && judge_server() {
            panic!(
                "the server broke its rules:\n  {}\nrequest by {user}: {request:?}\nverdict: {verdict:?}\nanswer: {answer:?}",
                broken.join("\n  ")
            );
        }
    }

    async fn act(&mut self, action: &Action) {
        match action {
            Action::Raw { user, request } => {
                let u = usize::from(*user) % self.raw.len();
                self.raw(u, request).await;
            }
            Action::DeviceSend { device, conv } => {
                let d = usize::from(*device) % DEVICES.len();
                let convs = conversations_of(DEVICES[d].user);
                let c = convs[usize::from(*conv) % convs.len()];
                self.texts += 1;
                let text = format!("{}-{}", DEVICES[d].user, self.texts);
                // The engine may refuse a command (stopped, say); that is not a finding here.
                let _ = self.sim.send_text(d, CONVERSATIONS[c].id, &text).await;
            }
            Action::Delete { conv, pick } => {
                let id: ConversationId = CONVERSATIONS[usize::from(*conv) % CONVERSATIONS.len()]
                    .id
                    .into();
                let max = self.max(&id);
                // Plain messages only: a device cannot undo an edit it applied (a documented
                // limit), so deleting changes would report that limit over and over.
                let plain: Vec<Seq> = self
                    .sim
                    .server()
                    .store()
                    .messages(&id, Seq(1), max, usize::MAX)
                    .expect("server store")
                    .into_iter()
                    .filter(|m| m.kind.change_target().is_none())
                    .map(|m| m.seq)
                    .collect();
                if let Some(&seq) = plain.get(usize::from(*pick) % plain.len().max(1)) {
                    self.sim
                        .delete_seqs(id, &SeqRanges::from_range(seq, seq))
                        .expect("admin delete");
                }
            }
            Action::RaiseFloor { conv, by } => {
                let id: ConversationId = CONVERSATIONS[usize::from(*conv) % CONVERSATIONS.len()]
                    .id
                    .into();
                let info = self
                    .sim
                    .server()
                    .store()
                    .conversation(&id)
                    .expect("server store")
                    .expect("conversation");
                let to = Seq(info.min_seq.max(Seq(1)).0 + u64::from(*by % 4) + 1);
                self.sim.set_min_seq(id, to).expect("admin floor");
            }
            Action::Crash { device } => {
                let d = usize::from(*device) % DEVICES.len();
                self.sim.crash(d).await.expect("crash");
            }
            Action::Tick { ms } => {
                self.sim
                    .drive_for(u64::from(*ms) % 5_000)
                    .await
                    .expect("driving");
            }
        }
    }
}

async fn run(input: &Input) {
    let mut sim = Sim::with_config(
        MemoryBackend::new(),
        SimConfig {
            seed: input.seed,
            max_steps: 200_000,
            ..SimConfig::default()
        },
    );
    for spec in &CONVERSATIONS {
        sim.create_conversation(spec.id, spec.kind, spec.members.iter().copied())
            .expect("setup");
    }
    let mut raw = Vec::new();
    for (n, user) in USERS.iter().enumerate() {
        raw.push(RawClient::connect(&mut sim, n as u64, *user).expect("setup"));
    }
    for spec in &DEVICES {
        sim.add_device(spec.user, spec.device, |config| spec.configure(config))
            .await
            .expect("setup");
    }
    let mut run = Run {
        sim,
        raw,
        fresh: 0,
        texts: 0,
    };
    for action in input.actions.iter().take(MAX_ACTIONS) {
        run.act(action).await;
    }

    let ids = run.ids();
    let stored =
        hostile::stored_value_violations(run.sim.server().store(), &ids).expect("server store");
    assert!(
        stored.is_empty() || !judge_server(),
        "the server stored what it must refuse:\n  {}",
        stored.join("\n  ")
    );
    run.sim.heal_all().await.expect("heal_all");
    if let Err(e) = run.sim.drive().await {
        panic!("the devices do not sync to the end: {e}");
    }
    if let Err(v) = run.sim.check_invariants().await {
        panic!("{v}");
    }
}

fuzz_target!(|input: Input| {
    block_on(run(&input));
});
