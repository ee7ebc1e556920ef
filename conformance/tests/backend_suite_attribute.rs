//! `backend_suite!` with a test attribute of the caller's, the form the browser backend uses
//! on wasm32 (`#[wasm_bindgen_test]`): here natively, with tokio's, for the storage cases and
//! the model (awaited through `run_model_async`), so that form of the macro is built and run
//! by every `cargo test`.

tidemark_conformance::backend_suite! {
    #[tokio::test(flavor = "current_thread")]
    backend: tidemark_conformance::MemoryBackend::new(),
    model_regressions: "unused with a test attribute",
    sections: [storage, model],
}
