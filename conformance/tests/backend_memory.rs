//! Every shared suite against the memory backend (the reference implementation of the
//! `Storage` contract): the storage conformance cases (`storage::`), the sync scenarios
//! (`scenarios::`, snapshots shared with every other backend: see
//! `tidemark_conformance::SNAPSHOT_DIR`) and the model (`model::run`).
//!
//! `PROPTEST_CASES` sets the model's number of cases (default 256). Long run:
//! `PROPTEST_CASES=100000 cargo test --release -p tidemark-conformance --test backend_memory model:: -- --nocapture`.
//! Model failures are persisted to `conformance/proptest-regressions/model_memory.txt`
//! (commit it) and replayed first by every later run.

tidemark_conformance::backend_suite! {
    backend: tidemark_conformance::MemoryBackend::new(),
    model_regressions: concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/model_memory.txt"),
}
