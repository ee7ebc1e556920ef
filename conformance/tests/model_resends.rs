//! Model cases about resends of messages the server already holds (issue 9, failure 6).

use tidemark_conformance::model::{self, ModelOptions};
use tidemark_conformance::sim::MemoryStoreFactory;

fn run(case: &model::ModelCase) {
    let options = ModelOptions {
        failed_sends: true,
        ..ModelOptions::default()
    };
    if let Err(failure) =
        futures::executor::block_on(model::run_case(MemoryStoreFactory::new(), case, options))
    {
        panic!("{failure}");
    }
}

/// A device sends and disconnects before the ack; the server deletes that seq; a permanent
/// send fault is armed. The resend used to take the fault (it ran before the idempotency
/// check), so the device reported the send failed while the server held it at a seq the
/// device holds as a tombstone. A resend of a stored message is now acked first (with the
/// deleted seq), the fault only hits sends that would store something new, and the send
/// ends sent.
#[test]
fn resend_after_its_seq_was_deleted_is_acked_not_failed() {
    use model::Transition::*;
    run(&model::ModelCase {
        seed: 946194766454785100,
        initial: [0, 0, 4, 0],
        transitions: vec![
            Tick { ms: 40 },
            Send { device: 2, conv: 1 },
            Disconnect { device: 2 },
            Tick { ms: 10 },
            Delete { conv: 2, pick: 4 },
            FailSends {
                count: 1,
                permanent: true,
            },
        ],
    });
}

/// Found by the 20,000-case run after the fix above: a transient fault delays a send, a
/// permanent fault is armed, and the link duplicates requests. The retry's first copy took
/// the permanent fault (the device marked the send failed) and its duplicate, a second
/// decision on the same request, was stored. A permanent fault now answers every copy of the
/// request it refused, as a real permanent refusal would.
#[test]
fn a_duplicated_request_gets_the_answer_of_its_first_copy() {
    use model::Transition::*;
    run(&model::ModelCase {
        seed: 18384304624011833232,
        initial: [4, 1, 1, 9],
        transitions: vec![
            Tick { ms: 60 },
            Delete { conv: 0, pick: 0 },
            FailSends {
                count: 1,
                permanent: false,
            },
            MarkRead {
                device: 0,
                conv: 0,
                behind: 0,
            },
            Send { device: 1, conv: 2 },
            Send { device: 1, conv: 0 },
            Link {
                device: 1,
                dir: model::Direction::Both,
                loss_pct: 0,
                dup_pct: 13,
                jitter_ms: 0,
            },
            RaiseFloor { conv: 1, by: 1 },
            Tick { ms: 10 },
            FailSends {
                count: 1,
                permanent: true,
            },
            Append {
                conv: 3,
                sender: 0,
                count: 3,
            },
            Tick { ms: 1030 },
            Delete { conv: 2, pick: 1 },
        ],
    });
}
