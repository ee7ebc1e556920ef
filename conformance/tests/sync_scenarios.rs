//! The sync scenario suite against the memory backend. Snapshots are shared with every other
//! backend: see `tidemark_conformance::SNAPSHOT_DIR`.

tidemark_conformance::sync_scenarios!(tidemark_conformance::sim::MemoryStoreFactory::new());
