//! Delivery of events to the foreign listener. The driver must never wait on foreign code
//! (a Python listener waits for the GIL, a Kotlin one may block), so events go from the
//! driver into a channel, in the order it released them, and one thread per client calls
//! the listener with them, one at a time, in that order.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;

use crate::{ClientEvent, TidemarkError};

/// Receives a client's events. Implemented by the app (a Kotlin/Swift/Python class).
///
/// Called on a thread of the bindings' own (one per client, named `tidemark-events`), never
/// on the caller's thread nor on the driver: every event in the order the engine released
/// it, one call at a time. A slow listener delays later events, never the sync. After the
/// client has stopped (shutdown, or the store became unusable) the last event has been
/// delivered and the thread ends.
#[uniffi::export(with_foreign)]
pub trait ClientListener: Send + Sync {
    /// One event.
    fn on_event(&self, event: ClientEvent);
}

/// What the delivery thread gets.
pub(crate) enum Delivery {
    /// An event for the listener.
    Event(ClientEvent),
    /// The driver stopped: nothing follows.
    Stop,
}

/// The sending side, for the driver's listener and the transport.
pub(crate) type DeliverySender = mpsc::Sender<Delivery>;

/// Starts the delivery thread of one client.
pub(crate) fn start(listener: Arc<dyn ClientListener>) -> Result<DeliverySender, TidemarkError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("tidemark-events".into())
        .spawn(move || {
            for delivery in rx {
                match delivery {
                    Delivery::Event(event) => {
                        // A listener that throws must not stop the delivery of later events;
                        // uniffi reports a foreign exception in a callback as a panic.
                        let _ = catch_unwind(AssertUnwindSafe(|| listener.on_event(event)));
                    }
                    Delivery::Stop => break,
                }
            }
        })
        .map_err(|e| TidemarkError::internal(format!("cannot start the event thread: {e}")))?;
    Ok(tx)
}
