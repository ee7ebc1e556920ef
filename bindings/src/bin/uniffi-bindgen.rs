//! `uniffi-bindgen` from the uniffi version this crate pins, so the generated Kotlin, Swift
//! and Python match the scaffolding in the library exactly (a downloaded generator of another
//! version would not). `scripts/python-bindings-tests.sh` runs it as
//! `uniffi-bindgen generate --library <libtidemark_ffi.so> --language python --out-dir <dir>`.

fn main() {
    uniffi::uniffi_bindgen_main()
}
