//! Wire frame decoding: arbitrary bytes given to the client-side and server-side decoders.
//!
//! Checked: decoding never panics; a frame over the size limit is refused as `TooLarge`
//! without being parsed; every frame that decodes re-encodes to JSON that decodes to the same
//! frame (round trip), and the re-encoding decodes under the same limits when the input did
//! (values survive validation both ways). Allocation is bounded by libFuzzer's
//! `-malloc_limit_mb` (scripts/fuzz.sh passes 64 MB for this target: no single allocation may
//! exceed it whatever the input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidemark_transport::wire::{self, FrameError, Limits};

/// Small limits, so that the id, item and size checks are reached by short inputs.
fn tight() -> Limits {
    Limits {
        max_frame_bytes: 512,
        max_id_bytes: 8,
        max_token_bytes: 16,
        max_items: 3,
    }
}

fn check<F: PartialEq + std::fmt::Debug + serde::Serialize>(
    data: &[u8],
    limits: &Limits,
    decode: impl Fn(&[u8], &Limits) -> Result<F, FrameError>,
) {
    match decode(data, limits) {
        Ok(frame) => {
            let text = wire::encode(&frame);
            // Re-encoding can be longer (escapes, base64 padding): judge it by the same
            // value rules but without the size cap.
            let unbounded = Limits {
                max_frame_bytes: usize::MAX,
                ..limits.clone()
            };
            match decode(text.as_bytes(), &unbounded) {
                Ok(again) => assert_eq!(again, frame, "round trip changed the frame: {text}"),
                Err(err) => panic!("re-encoded frame refused ({err}): {text}"),
            }
        }
        Err(FrameError::TooLarge { size, limit }) => {
            assert!(size > limit && size == data.len());
        }
        Err(FrameError::Malformed(_) | FrameError::Invalid(_)) => {
            assert!(data.len() <= limits.max_frame_bytes);
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::client_frames(), tight()] {
        check(data, &limits, wire::decode_client);
    }
    for limits in [Limits::server_frames(), tight()] {
        check(data, &limits, wire::decode_server);
    }
});
