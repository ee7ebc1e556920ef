//! The storage conformance suite against the memory backend (the reference implementation of
//! the `Storage` contract). Other backends invoke the same macro with their own factory.

tidemark_conformance::storage_suite!(
    tidemark_conformance::storage_suite::MemoryStorageFactory::new()
);
