//! Links ggml's BLAS backend when whisper.cpp is built with it (`GGML_BLAS=ON` in
//! `.cargo/config.toml`): whisper-rs-sys builds the library but links it only for its own
//! OpenBLAS feature, and ours is served by `src/engine/blas.rs` instead (see there).
//! Whole archive: the library is read before ggml's, which is what refers to it.
fn main() {
    println!("cargo:rerun-if-env-changed=GGML_BLAS");
    if std::env::var("GGML_BLAS").is_ok_and(|v| v.eq_ignore_ascii_case("on")) {
        println!("cargo:rustc-link-lib=static:+whole-archive=ggml-blas");
    }
}
