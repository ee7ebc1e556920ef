//! The system under test: a [`Sim`] (engines, stores, network, server) driven by
//! [`Transition`]s, side by side with the [`Reference`] model, checked after every transition
//! and once more at quiescence.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use tidemark_engine::{
    ClientMsgId, ContentKind, ConversationId, Event, MessageStatus, Output, PullRange, Request,
    Response, Seq, SeqRanges, ServerError, Storage, Timestamp, UserId,
};

use super::checks;
use super::hostile::{self, RawClient};
use super::reference::Reference;
use super::topology::{conversations_of, CONVERSATIONS, DEVICES, HOSTILE};
use super::transition::{
    BogusTarget, CrashPoint, Direction, ExtremeTime, HostileAct, ModelCase, Target, Transition,
};
use super::ModelOptions;
use crate::server::ServerStore;
use crate::sim::{LinkConfig, LinkDir, Sim, SimConfig, SimError};
use crate::Backend;

/// Base one-way latency of every link.
const LATENCY_MS: u64 = 10;

/// One model run. See the module docs.
pub(crate) struct ModelRun<F: Backend> {
    sim: Sim<F>,
    reference: Reference,
    options: ModelOptions,
    /// Without failed sends: how many more send errors may be injected, so that no send
    /// reaches its device's `send_max_attempts`.
    error_budget: u32,
    /// What each transition did, for the failure report.
    trace: String,
    texts: u64,
    /// The hostile member's raw connection.
    raw: RawClient,
    /// Client ids the hostile member made.
    raw_ids: u64,
    /// Rules the server broke answering raw requests (reported by every later check).
    server_violations: Vec<String>,
}

impl<F: Backend> ModelRun<F> {
    /// Creates the server's users and conversations, appends the initial history and starts
    /// every device (nothing is driven yet: the first transitions meet the initial sync).
    pub(crate) async fn start(
        factory: F,
        case: &ModelCase,
        options: ModelOptions,
    ) -> Result<Self, String> {
        // Half the cases commit each write batch 0-30 ms after it was emitted (longer than a
        // round trip), as a store with a writer thread may: the engine goes on with later
        // server answers while its batches are in flight, and crashes lose them.
        let mut sim = Sim::with_config(
            factory,
            SimConfig {
                seed: case.seed,
                commit_latency_ms: (case.seed % 2 == 1).then_some(30),
                ..SimConfig::default()
            },
        );
        for spec in &CONVERSATIONS {
            sim.create_conversation(spec.id, spec.kind, spec.members.iter().copied())
                .map_err(|e| format!("setup: {e}"))?;
        }
        let raw = RawClient::connect(&mut sim, 0, HOSTILE)?;
        let mut run = Self {
            sim,
            reference: Reference::new(),
            options,
            error_budget: DEVICES
                .iter()
                .map(|spec| spec.send_max_attempts().saturating_sub(1))
                .min()
                .unwrap_or(0),
            trace: String::new(),
            texts: 0,
            raw,
            raw_ids: 0,
            server_violations: Vec::new(),
        };
        for (c, &n) in case.initial.iter().enumerate() {
            let members = CONVERSATIONS[c].members;
            for i in 0..usize::from(n) {
                let sender = members[i % members.len()];
                let text = run.next_text();
                let message = run
                    .sim
                    .append_text(sender, CONVERSATIONS[c].id, &text)
                    .map_err(|e| format!("setup: {e}"))?;
                run.reference.record_append(c, &message)?;
            }
        }
        for spec in &DEVICES {
            run.sim
                .add_device(spec.user, spec.device, |config| spec.configure(config))
                .await
                .map_err(|e| format!("setup: {e}"))?;
        }
        Ok(run)
    }

    /// What each transition did so far.
    pub(crate) fn trace(&self) -> &str {
        &self.trace
    }

    fn next_text(&mut self) -> String {
        self.texts += 1;
        format!("t{}", self.texts)
    }

    fn note(&mut self, step: usize, transition: &Transition, what: &str) {
        let _ = writeln!(
            self.trace,
            "  #{step} @{} {transition:?} -> {what}",
            self.sim.now().0
        );
    }

    /// Applies one transition, then runs the per-step checks. `Err` carries every violation
    /// (or the harness error) found.
    pub(crate) async fn step(
        &mut self,
        step: usize,
        transition: &Transition,
    ) -> Result<(), String> {
        let what = self
            .apply(transition)
            .await
            .map_err(|e| format!("transition #{step} {transition:?}: {e}"))?;
        self.note(step, transition, &what);
        let violations = self.safety().await?;
        if violations.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "after transition #{step} {transition:?}:\n    {}",
                violations.join("\n    ")
            ))
        }
    }

    async fn apply(&mut self, transition: &Transition) -> Result<String, String> {
        let t = *transition;
        match t {
            Transition::Append {
                conv,
                sender,
                count,
            } => {
                let c = usize::from(conv) % CONVERSATIONS.len();
                let members = CONVERSATIONS[c].members;
                let user = members[usize::from(sender) % members.len()];
                let mut seqs = Vec::new();
                for _ in 0..count.max(1) {
                    let text = self.next_text();
                    let m = self
                        .sim
                        .append_text(user, CONVERSATIONS[c].id, &text)
                        .map_err(|e| e.to_string())?;
                    self.reference.record_append(c, &m)?;
                    seqs.push(m.seq.0);
                }
                Ok(format!("{user} in {} at {seqs:?}", CONVERSATIONS[c].id))
            }
            Transition::Send { device, conv } => {
                let (d, c) = device_conversation(device, conv);
                let text = self.next_text();
                match self.sim.send_text(d, CONVERSATIONS[c].id, &text).await {
                    Ok(cmid) => {
                        let what = format!("{} {cmid} ({text})", CONVERSATIONS[c].id);
                        self.reference.record_send(d, c, cmid, text.into_bytes());
                        Ok(what)
                    }
                    Err(SimError::Command { source, .. }) => Ok(format!("refused: {source}")),
                    Err(e) => Err(e.to_string()),
                }
            }
            Transition::MarkRead {
                device,
                conv,
                behind,
            } => {
                let (d, c) = device_conversation(device, conv);
                let Some(max) = self.known_max(d, c) else {
                    return Ok("conversation not known yet".into());
                };
                let seq = Seq(max.0.saturating_sub(u64::from(behind)));
                if seq == Seq(0) {
                    return Ok("nothing to read".into());
                }
                let process = self.sim.process(d);
                match self.sim.mark_read(d, CONVERSATIONS[c].id, seq).await {
                    Ok(()) => {
                        // A crash during the call may have lost the mark's batch.
                        let certain = self.sim.process(d) == process;
                        let user = UserId::from(DEVICES[d].user);
                        self.reference.record_mark(&user, c, seq, certain);
                        Ok(format!(
                            "{} up to {}{}",
                            CONVERSATIONS[c].id,
                            seq.0,
                            if certain { "" } else { " (crashed)" }
                        ))
                    }
                    Err(SimError::Command { source, .. }) => Ok(format!("refused: {source}")),
                    Err(e) => Err(e.to_string()),
                }
            }
            Transition::LoadHistory {
                device,
                conv,
                before,
                limit,
            } => {
                let (d, c) = device_conversation(device, conv);
                let Some(max) = self.known_max(d, c) else {
                    return Ok("conversation not known yet".into());
                };
                let before = before.map(|b| Seq(max.0.saturating_sub(u64::from(b))));
                let process = self.sim.process(d);
                match self
                    .sim
                    .load_history(d, CONVERSATIONS[c].id, before, u32::from(limit))
                    .await
                {
                    Ok(id) => {
                        self.reference.record_history(d, process, id);
                        Ok(format!("{} id {id}", CONVERSATIONS[c].id))
                    }
                    Err(SimError::Command { source, .. }) => Ok(format!("refused: {source}")),
                    Err(e) => Err(e.to_string()),
                }
            }
            Transition::Delete { conv, pick } => {
                let c = usize::from(conv) % CONVERSATIONS.len();
                let plain = self.reference.conversation(c).plain();
                if plain.is_empty() {
                    return Ok("no plain message".into());
                }
                let seq = plain[usize::from(pick) % plain.len()];
                let newly = self
                    .sim
                    .delete_seqs(CONVERSATIONS[c].id, &SeqRanges::from_range(seq, seq))
                    .map_err(|e| e.to_string())?;
                if newly != SeqRanges::from_range(seq, seq) {
                    return Err(format!(
                        "deleting seq {} of {} newly deleted {newly:?}",
                        seq.0, CONVERSATIONS[c].id
                    ));
                }
                self.reference.record_delete(c, seq);
                Ok(format!("{} seq {}", CONVERSATIONS[c].id, seq.0))
            }
            Transition::RaiseFloor { conv, by } => {
                let c = usize::from(conv) % CONVERSATIONS.len();
                let to = Seq(self.reference.conversation(c).lowest().0 + u64::from(by));
                let expected = self.reference.floor_after_raise(c, to);
                let floor = self
                    .sim
                    .set_min_seq(CONVERSATIONS[c].id, to)
                    .map_err(|e| e.to_string())?;
                if floor != expected {
                    return Err(format!(
                        "raising {}'s floor to {} gave {}, the model expects {}",
                        CONVERSATIONS[c].id, to.0, floor.0, expected.0
                    ));
                }
                self.reference.record_floor(c, floor);
                Ok(format!("{} floor {}", CONVERSATIONS[c].id, floor.0))
            }
            Transition::Change {
                conv,
                target,
                revoke,
            } => {
                let c = usize::from(conv) % CONVERSATIONS.len();
                let model = self.reference.conversation(c);
                let texts = model.texts();
                let Some(&newest) = texts.last() else {
                    return Ok("no text message".into());
                };
                let target = match target {
                    Target::Again => model
                        .last_target
                        .filter(|s| texts.contains(s))
                        .unwrap_or(newest),
                    Target::Pick(n) => texts[usize::from(n) % texts.len()],
                };
                // Honest members change only their own messages.
                let user = model
                    .ever(target)
                    .map(|m| m.sender.clone())
                    .ok_or_else(|| format!("no message at seq {}", target.0))?;
                let (kind, content) = if revoke {
                    (ContentKind::Revoke { target }, Vec::new())
                } else {
                    (ContentKind::Edit { target }, self.next_text().into_bytes())
                };
                let m = self
                    .sim
                    .append_as(user.clone(), CONVERSATIONS[c].id, kind, content)
                    .map_err(|e| e.to_string())?;
                self.reference.record_append(c, &m)?;
                Ok(format!(
                    "{user} {} seq {} of {} at seq {}",
                    if revoke { "revokes" } else { "edits" },
                    target.0,
                    CONVERSATIONS[c].id,
                    m.seq.0
                ))
            }
            Transition::Hostile { conv, act } => self.hostile(conv, act).await,
            Transition::Link {
                device,
                dir,
                loss_pct,
                dup_pct,
                jitter_ms,
            } => {
                let d = usize::from(device) % DEVICES.len();
                let link = LinkConfig::new(LATENCY_MS)
                    .with_jitter(u64::from(jitter_ms))
                    .with_loss(f64::from(loss_pct) / 100.0)
                    .with_duplicate(f64::from(dup_pct) / 100.0);
                match dir {
                    Direction::Both => self.sim.set_link(d, link),
                    Direction::ToServer => self.sim.set_link_dir(d, LinkDir::ToServer, link),
                    Direction::ToDevice => self.sim.set_link_dir(d, LinkDir::ToDevice, link),
                }
                Ok(format!("device {d}"))
            }
            Transition::Partition { device } => {
                let d = usize::from(device) % DEVICES.len();
                self.sim.partition(d);
                Ok(format!("device {d}"))
            }
            Transition::Heal { device } => {
                let d = usize::from(device) % DEVICES.len();
                self.sim.heal(d);
                Ok(format!("device {d}"))
            }
            Transition::Disconnect { device } => {
                let d = usize::from(device) % DEVICES.len();
                self.sim.disconnect(d).await.map_err(|e| e.to_string())?;
                Ok(format!("device {d}"))
            }
            Transition::Crash { device } => {
                let d = usize::from(device) % DEVICES.len();
                self.sim.crash(d).await.map_err(|e| e.to_string())?;
                Ok(format!("device {d} now process {}", self.sim.process(d)))
            }
            Transition::CrashBefore { device, point } => {
                let d = usize::from(device) % DEVICES.len();
                match point {
                    CrashPoint::BeforeWrite { skip } => {
                        let mut left = skip;
                        self.sim.crash_before(d, move |o| {
                            matches!(o, Output::Write(..)) && {
                                let hit = left == 0;
                                left = left.saturating_sub(1);
                                hit
                            }
                        });
                    }
                    CrashPoint::BeforeRequest { skip } => {
                        let mut left = skip;
                        self.sim.crash_before(d, move |o| {
                            matches!(o, Output::Request(..)) && {
                                let hit = left == 0;
                                left = left.saturating_sub(1);
                                hit
                            }
                        });
                    }
                    CrashPoint::BeforeSend => self
                        .sim
                        .crash_before(d, |o| matches!(o, Output::Request(_, Request::Send { .. }))),
                }
                Ok(format!("device {d} armed"))
            }
            Transition::FailSends { count, permanent } => {
                // Without failed sends, a permanent error is injected as a transient one, and
                // no more of them than any one send can take without giving up.
                let permanent = permanent && self.options.failed_sends;
                let mut count = u32::from(count);
                if !self.options.failed_sends {
                    count = count.min(self.error_budget);
                    self.error_budget -= count;
                }
                self.sim.fail_next_sends(
                    count as usize,
                    ServerError {
                        code: if permanent { "rejected" } else { "unavailable" }.into(),
                        message: "injected by the model".into(),
                        permanent,
                    },
                );
                Ok(format!(
                    "{count} {}",
                    if permanent { "permanent" } else { "transient" }
                ))
            }
            Transition::Retry { device, pick } => {
                let d = usize::from(device) % DEVICES.len();
                let mut failed = Vec::new();
                for c in DEVICES[d].conversations() {
                    let id = ConversationId::from(CONVERSATIONS[c].id);
                    let unsent = self
                        .sim
                        .store(d)
                        .unsent_messages(&id)
                        .await
                        .map_err(|e| e.to_string())?;
                    failed.extend(
                        unsent
                            .into_iter()
                            .filter(|m| matches!(m.status, MessageStatus::Failed { .. })),
                    );
                }
                if failed.is_empty() {
                    return Ok("no failed message".into());
                }
                let message = &failed[usize::from(pick) % failed.len()];
                match self.sim.retry(d, message).await {
                    Ok(()) => Ok(format!(
                        "{} {}",
                        message.conversation, message.client_msg_id
                    )),
                    Err(SimError::Command { source, .. }) => Ok(format!("refused: {source}")),
                    Err(e) => Err(e.to_string()),
                }
            }
            Transition::Tick { ms } => {
                self.sim
                    .drive_for(u64::from(ms))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(String::new())
            }
        }
    }

    /// The hostile member's raw request ([`Transition::Hostile`]): built from the model,
    /// judged by [`hostile`]'s rules (what the server broke goes to the safety violations),
    /// and what the server stored is recorded in the model like an append.
    async fn hostile(&mut self, conv: u8, act: HostileAct) -> Result<String, String> {
        let c = usize::from(conv) % CONVERSATIONS.len();
        let id = ConversationId::from(CONVERSATIONS[c].id);
        let me = self.raw.user.clone();
        let model = self.reference.conversation(c);
        let now = self.sim.now();
        let text = |this: &mut Self| this.next_text().into_bytes();
        let request = match act {
            HostileAct::ChangeOthers { pick, revoke } => {
                let others: Vec<Seq> = model
                    .texts()
                    .into_iter()
                    .filter(|s| model.ever(*s).is_some_and(|m| m.sender != me))
                    .collect();
                if others.is_empty() {
                    return Ok("no text of someone else".into());
                }
                let target = others[usize::from(pick) % others.len()];
                self.change_request(id, target, revoke, now)
            }
            HostileAct::BogusTarget { target, revoke } => {
                let future = model.max().next();
                let seq = match target {
                    BogusTarget::Zero => Seq(0),
                    BogusTarget::Huge => Seq(u64::MAX),
                    BogusTarget::Future => future,
                    BogusTarget::Deleted => model.deleted_seqs().last().copied().unwrap_or(future),
                    BogusTarget::Change => {
                        let changes: Vec<(Seq, bool)> = model
                            .all()
                            .filter(|(s, m)| {
                                m.kind.change_target().is_some() && model.live(*s).is_some()
                            })
                            .map(|(s, m)| (s, m.sender == me))
                            .collect();
                        changes
                            .iter()
                            .rev()
                            .find(|(_, own)| *own)
                            .or(changes.last())
                            .map_or(Seq(0), |(s, _)| *s)
                    }
                };
                self.change_request(id, seq, revoke, now)
            }
            HostileAct::Time { at } => {
                let created_at = match at {
                    ExtremeTime::Zero => 0,
                    ExtremeTime::I64Max => hostile::MAX_STORABLE,
                    ExtremeTime::AboveI64 => hostile::MAX_STORABLE + 1,
                    ExtremeTime::U64Max => u64::MAX,
                };
                let cmid = self.fresh_raw_id();
                let content = text(self);
                hostile::send_request(id, cmid, ContentKind::Text, content, Timestamp(created_at))
            }
            HostileAct::ReuseOwnId { pick } => {
                let own: Vec<ClientMsgId> = self
                    .reference
                    .conversations()
                    .iter()
                    .flat_map(|c| c.all().map(|(_, m)| m))
                    .filter(|m| m.sender == me)
                    .map(|m| m.client_msg_id.clone())
                    .collect();
                if own.is_empty() {
                    return Ok("no own client id yet".into());
                }
                let cmid = own[usize::from(pick) % own.len()].clone();
                let content = text(self);
                hostile::send_request(id, cmid, ContentKind::Text, content, now)
            }
            HostileAct::ForeignId { pick } => {
                let foreign: Vec<ClientMsgId> = model
                    .all()
                    .filter(|(_, m)| m.sender != me)
                    .map(|(_, m)| m.client_msg_id.clone())
                    .collect();
                if foreign.is_empty() {
                    return Ok("no message of someone else".into());
                }
                let cmid = foreign[usize::from(pick) % foreign.len()].clone();
                let content = text(self);
                hostile::send_request(id, cmid, ContentKind::Text, content, now)
            }
            HostileAct::LongKind { len } => {
                let name = "k".repeat(usize::from(len) * 64);
                let cmid = self.fresh_raw_id();
                let content = text(self);
                hostile::send_request(id, cmid, ContentKind::Custom(name), content, now)
            }
            HostileAct::MarkRead { high } => Request::MarkRead {
                conversation: id,
                seq: Seq(if high { u64::MAX } else { 0 }),
            },
            HostileAct::Pull => Request::Pull {
                ranges: CONVERSATIONS
                    .iter()
                    .map(|spec| PullRange {
                        conversation: spec.id.into(),
                        from: Seq(0),
                        to: Seq(u64::MAX),
                    })
                    .collect(),
                max_bytes: None,
            },
        };
        self.raw_request(c, request).await
    }

    fn change_request(
        &mut self,
        conversation: ConversationId,
        target: Seq,
        revoke: bool,
        now: Timestamp,
    ) -> Request {
        let (kind, content) = if revoke {
            (ContentKind::Revoke { target }, Vec::new())
        } else {
            (ContentKind::Edit { target }, self.next_text().into_bytes())
        };
        let cmid = self.fresh_raw_id();
        hostile::send_request(conversation, cmid, kind, content, now)
    }

    fn fresh_raw_id(&mut self) -> ClientMsgId {
        self.raw_ids += 1;
        ClientMsgId(format!("raw-{}", self.raw_ids))
    }

    /// Sends the hostile member's request, judges the answer and records what the server
    /// stored (conversation `c`'s model).
    async fn raw_request(&mut self, c: usize, request: Request) -> Result<String, String> {
        let me = self.raw.user.clone();
        let store = self.sim.server().store();
        let limit = self.sim.server().config().max_content_bytes;
        let verdict =
            hostile::send_verdict(store, limit, &me, &request).map_err(|e| e.to_string())?;
        let max_before = self.reference.conversation(c).max();
        let answer = self.raw.request(&mut self.sim, request.clone()).await?;
        let store = self.sim.server().store();
        let mut broken =
            hostile::judge_other(store, &me, &request, &answer).map_err(|e| e.to_string())?;
        let outcome = hostile::judge_send(store, &me, &request, &verdict, max_before, &answer)
            .map_err(|e| e.to_string())?;
        broken.extend(outcome.violations);
        if let Some(stored) = &outcome.stored {
            self.reference.record_append(c, stored)?;
        }
        if let (Request::MarkRead { conversation, .. }, Response::ReadAck { seq, .. }) =
            (&request, &answer)
        {
            let model = self.reference.conversation(c);
            if conversation == &model.id && *seq > model.max() {
                broken.push(format!(
                    "{me}'s read seq in {conversation} acked at {}, beyond the max seq {}",
                    seq.0,
                    model.max().0
                ));
            }
            self.reference.record_mark(&me, c, *seq, true);
        }
        let what = match &answer {
            Response::SendAck { seq, .. } => format!("acked at seq {}", seq.0),
            Response::ReadAck { seq, .. } => format!("read ack at {}", seq.0),
            Response::Error(e) => format!("refused: {}", e.code),
            Response::Pulled { ranges } => format!("pulled {} range(s)", ranges.len()),
            other => format!("{other:?}"),
        };
        let what = match &verdict {
            hostile::SendVerdict::Refuse(why) => format!("{what} (must refuse: {why})"),
            _ => what,
        };
        self.server_violations
            .extend(broken.into_iter().map(|b| format!("server rule: {b}")));
        Ok(what)
    }

    /// The max seq device `d`'s engine knows for conversation `c` (what its app shows).
    fn known_max(&self, d: usize, c: usize) -> Option<Seq> {
        let id = ConversationId::from(CONVERSATIONS[c].id);
        self.sim
            .engine(d)
            .and_then(|e| e.conversation(&id))
            .map(|conv| conv.server_max_seq)
    }

    /// The checks valid at any moment: the server against the model, each store against the
    /// model, and the dispatch rules the harness checks while running.
    async fn safety(&mut self) -> Result<Vec<String>, String> {
        let mut violations = self
            .reference
            .observe(self.sim.server().store())
            .map_err(|e| format!("reading the server: {e}"))?
            .into_iter()
            .map(|v| format!("server: {v}"))
            .collect::<Vec<_>>();
        violations.extend(self.server_violations.iter().cloned());
        let ids: Vec<ConversationId> = CONVERSATIONS.iter().map(|c| c.id.into()).collect();
        violations.extend(
            hostile::stored_value_violations(self.sim.server().store(), &ids)
                .map_err(|e| format!("reading the server: {e}"))?
                .into_iter()
                .map(|v| format!("server: {v}")),
        );
        for d in 0..DEVICES.len() {
            let mut found = Vec::new();
            checks::device_safety(self.sim.store(d), d, &self.reference, &mut found)
                .await
                .map_err(|e| format!("device {d}: reading the store failed: {e}"))?;
            violations.extend(found.into_iter().map(|v| format!("device {d}: {v}")));
        }
        violations.extend(self.sim.dispatch_violations().iter().cloned());
        Ok(violations)
    }

    /// Heals everything, drives to quiescence and runs every check: the safety checks, the
    /// harness's invariants ([`Sim::check_invariants`]) and the model's expectations.
    pub(crate) async fn finish(&mut self) -> Result<(), String> {
        self.sim
            .heal_all()
            .await
            .map_err(|e| format!("heal_all: {e}"))?;
        self.sim
            .drive()
            .await
            .map_err(|e| format!("no quiescence after heal_all: {e}"))?;
        let _ = writeln!(
            self.trace,
            "  heal_all, drive -> quiescent @{}",
            self.sim.now().0
        );
        let mut violations = self.safety().await?;
        if let Err(v) = self.sim.check_invariants().await {
            violations.extend(v.violations.into_iter().map(|v| format!("invariant: {v}")));
        }
        violations.extend(self.quiescence().await?);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(format!("at quiescence:\n    {}", violations.join("\n    ")))
        }
    }

    async fn quiescence(&self) -> Result<Vec<String>, String> {
        let server = self.sim.server().store();
        let mut out = Vec::new();
        // Read seqs: between what surely reached the server and every mark made.
        let mut reads: BTreeMap<(String, usize), Seq> = BTreeMap::new();
        for (c, model) in self.reference.conversations().iter().enumerate() {
            for user in &model.members {
                let read = server
                    .read_seq(user, &model.id)
                    .map_err(|e| format!("reading the server: {e}"))?;
                let bounds = self.reference.read(user, c);
                if read < bounds.certain || read > bounds.possible {
                    out.push(format!(
                        "model: {}: {user}'s read seq {} is outside {}..={}",
                        model.id, read.0, bounds.certain.0, bounds.possible.0
                    ));
                }
                reads.insert((user.0.clone(), c), read);
            }
        }
        for (d, spec) in DEVICES.iter().enumerate() {
            let online = self.sim.engine(d).is_some() && !self.sim.is_kicked(d);
            if !online {
                out.push(format!("model: device {d} is not running at the end"));
                continue;
            }
            let mut found = Vec::new();
            checks::device_at_quiescence(
                self.sim.store(d),
                d,
                &self.reference,
                |c| {
                    reads
                        .get(&(spec.user.to_owned(), c))
                        .copied()
                        .unwrap_or(Seq(0))
                },
                &mut found,
            )
            .await
            .map_err(|e| format!("device {d}: reading the store failed: {e}"))?;
            self.sends_ended(d, &mut found).await?;
            self.histories_answered(d, &mut found);
            out.extend(found.into_iter().map(|v| format!("model: device {d}: {v}")));
        }
        self.announcements_match(&mut out);
        Ok(out)
    }

    /// Every send of device `d` ended: acked at the seq the server gave it, failed, or lost
    /// to a crash before its batch committed (and then never on the server).
    async fn sends_ended(&self, d: usize, out: &mut Vec<String>) -> Result<(), String> {
        let store = self.sim.store(d);
        for send in self.reference.sends().iter().filter(|s| s.device == d) {
            let model = self.reference.conversation(send.conv);
            let cmid = &send.client_msg_id;
            let what = format!("{}: send {cmid}", model.id);
            let row = store
                .message_by_client_id(&model.id, &UserId::from(DEVICES[d].user), cmid)
                .await
                .map_err(|e| format!("device {d}: reading the store failed: {e}"))?;
            let record = self
                .sim
                .sends()
                .iter()
                .find(|r| r.device == d && &r.client_msg_id == cmid);
            let committed = record.is_some_and(|r| r.committed);
            let acks = self.count_events(
                d,
                |e| matches!(e, Event::MessageSent { client_msg_id, .. } if client_msg_id == cmid),
            );
            if acks > 1 {
                out.push(format!("{what}: MessageSent {acks} times"));
            }
            match (send.landed, row) {
                (Some(seq), Some(row)) => match row.status {
                    MessageStatus::Sent if row.seq == Some(seq) => {}
                    MessageStatus::Failed { .. } => {
                        let held = store
                            .conversation(&model.id)
                            .await
                            .map_err(|e| format!("device {d}: {e}"))?
                            .is_some_and(|c| c.held.contains(seq));
                        if held {
                            out.push(format!(
                                "{what}: failed, though the server has it at seq {} and the device holds that seq",
                                seq.0
                            ));
                        }
                    }
                    status => out.push(format!(
                        "{what}: {status:?} at {:?}, but the server put it at seq {}",
                        row.seq, seq.0
                    )),
                },
                (Some(seq), None) => {
                    if model.live(seq).is_some() {
                        out.push(format!(
                            "{what}: no row, but the server has it at seq {}",
                            seq.0
                        ));
                    }
                }
                (None, Some(row)) => {
                    if !matches!(row.status, MessageStatus::Failed { .. }) {
                        out.push(format!(
                            "{what}: {:?} at {:?}, but the server never got it",
                            row.status, row.seq
                        ));
                    }
                }
                (None, None) => {
                    if committed {
                        out.push(format!("{what}: its batch committed, yet it is gone"));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every `load_history` got its one `HistoryLoaded` (none lost unless the process that
    /// took the call crashed since), never two.
    fn histories_answered(&self, d: usize, out: &mut Vec<String>) {
        for h in self.reference.histories().iter().filter(|h| h.device == d) {
            let n = self
                .sim
                .events()
                .iter()
                .filter(|r| r.device == d && r.process == h.process)
                .filter(|r| matches!(r.event, Event::HistoryLoaded { id, .. } if id == h.id))
                .count();
            let alive = self.sim.process(d) == h.process;
            if n > 1 || (n == 0 && alive) {
                out.push(format!(
                    "load_history {} of process {}: {n} HistoryLoaded events",
                    h.id, h.process
                ));
            }
        }
    }

    /// Every message announced as new is the server's message at that seq, and not one of
    /// the device's own sends.
    fn announcements_match(&self, out: &mut Vec<String>) {
        for record in self.sim.events() {
            let Event::MessagesReceived {
                conversation,
                messages,
            } = &record.event
            else {
                continue;
            };
            let d = record.device;
            let Some(c) = self.reference.index_of(conversation) else {
                out.push(format!(
                    "model: device {d}: announced messages of unknown {conversation}"
                ));
                continue;
            };
            let model = self.reference.conversation(c);
            for m in messages {
                let Some(seq) = m.seq else { continue };
                let same = model
                    .ever(seq)
                    .is_some_and(|r| r.sender == m.sender && r.client_msg_id == m.client_msg_id);
                if !same {
                    out.push(format!(
                        "model: device {d}: announced {conversation} seq {} as {} {}, which the server never had there",
                        seq.0, m.sender, m.client_msg_id
                    ));
                }
                // Ids are the sender's own: another member may use the same one.
                let own = m.sender.0 == DEVICES[d].user
                    && self
                        .reference
                        .sends()
                        .iter()
                        .any(|s| s.device == d && s.client_msg_id == m.client_msg_id);
                if own {
                    out.push(format!(
                        "model: device {d}: announced its own send {} as received",
                        m.client_msg_id
                    ));
                }
            }
        }
    }

    fn count_events(&self, d: usize, pred: impl Fn(&Event) -> bool) -> usize {
        self.sim
            .events()
            .iter()
            .filter(|r| r.device == d && pred(&r.event))
            .count()
    }
}

/// Resolves a device number and a conversation number of its user.
fn device_conversation(device: u8, conv: u8) -> (usize, usize) {
    let d = usize::from(device) % DEVICES.len();
    let convs = conversations_of(DEVICES[d].user);
    (d, convs[usize::from(conv) % convs.len()])
}
