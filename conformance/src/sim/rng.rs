//! [`SimRng`]: the workspace's seeded PRNG ([`tidemark_engine::rng::SplitMix64`]), so a seed
//! replays a run bit for bit on every platform without depending on a `rand` version.

/// A seeded pseudo-random generator (splitmix64). Not for cryptography.
pub type SimRng = tidemark_engine::rng::SplitMix64;

/// Mixes two numbers into a well-spread seed (one splitmix64 round over their combination).
pub(crate) use tidemark_engine::rng::mix;
