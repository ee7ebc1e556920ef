//! Who takes part in every model run: users, conversations, devices and their policies.

use tidemark_engine::{ConversationKind, EngineConfig, SyncPolicy};

/// One conversation of the model run.
#[derive(Clone, Copy, Debug)]
pub struct ConversationSpec {
    /// Its id.
    pub id: &'static str,
    /// Direct or group.
    pub kind: ConversationKind,
    /// Its members.
    pub members: &'static [&'static str],
}

/// One simulated device.
#[derive(Clone, Copy, Debug)]
pub struct DeviceSpec {
    /// Its user.
    pub user: &'static str,
    /// Its device id.
    pub device: &'static str,
    /// What it pulls.
    pub policy: SyncPolicy,
    /// Most messages per pull request (small, so pulls are paged and capped).
    pub pull_max_messages: u32,
}

/// The conversations: two groups and two direct ones. `bob` is not in `g2` and `alice` not
/// in `d-bc`, so each device user has three conversations; `carol` and `dave` have no device
/// (their messages come from server appends).
pub const CONVERSATIONS: [ConversationSpec; 4] = [
    ConversationSpec {
        id: "g1",
        kind: ConversationKind::Group,
        members: &["alice", "bob", "carol"],
    },
    ConversationSpec {
        id: "g2",
        kind: ConversationKind::Group,
        members: &["alice", "carol", "dave"],
    },
    ConversationSpec {
        id: "d-ab",
        kind: ConversationKind::Direct,
        members: &["alice", "bob"],
    },
    ConversationSpec {
        id: "d-bc",
        kind: ConversationKind::Direct,
        members: &["bob", "carol"],
    },
];

/// The hostile member: in every conversation but `d-ab`, with no device; sends raw requests
/// to the server core ([`super::Transition::Hostile`]).
pub const HOSTILE: &str = "carol";

/// The devices: `alice` on two (newest-first without background fill, and full sync), `bob`
/// on one (newest-first with background fill).
pub const DEVICES: [DeviceSpec; 3] = [
    DeviceSpec {
        user: "alice",
        device: "phone",
        policy: SyncPolicy::NewestFirst {
            per_conversation: 5,
            background_fill: false,
        },
        pull_max_messages: 4,
    },
    DeviceSpec {
        user: "alice",
        device: "laptop",
        policy: SyncPolicy::Full,
        pull_max_messages: 50,
    },
    DeviceSpec {
        user: "bob",
        device: "phone",
        policy: SyncPolicy::NewestFirst {
            per_conversation: 3,
            background_fill: true,
        },
        pull_max_messages: 3,
    },
];

impl DeviceSpec {
    /// Applies this spec to an engine config.
    pub fn configure(&self, config: &mut EngineConfig) {
        config.policy = self.policy;
        config.pull_max_messages = self.pull_max_messages;
    }

    /// The engine's `send_max_attempts` for this device.
    pub fn send_max_attempts(&self) -> u32 {
        let mut config = EngineConfig::new(self.user.into(), self.device.into());
        self.configure(&mut config);
        config.send_max_attempts
    }

    /// Indices into [`CONVERSATIONS`] of this device's user's conversations.
    pub fn conversations(&self) -> Vec<usize> {
        conversations_of(self.user)
    }
}

/// Indices into [`CONVERSATIONS`] of `user`'s conversations.
pub fn conversations_of(user: &str) -> Vec<usize> {
    CONVERSATIONS
        .iter()
        .enumerate()
        .filter(|(_, c)| c.members.contains(&user))
        .map(|(i, _)| i)
        .collect()
}
