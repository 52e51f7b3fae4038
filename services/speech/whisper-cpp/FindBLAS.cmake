# Found by whisper.cpp's CMake (ggml's BLAS backend calls find_package(BLAS)) through
# CMAKE_MODULE_PATH, which .cargo/config.toml points here.
#
# Why: ggml's own matmul for whisper's encoder (hundreds of rows at once) is far slower than
# a blocked f32 GEMM. With GGML_BLAS=ON ggml sends every large matmul to `cblas_sgemm`, which
# mmc-speech implements in Rust with the `gemm` crate (services/speech/src/engine/blas.rs),
# so no system BLAS is needed to build or to run. This module tells ggml that BLAS is
# "found" with no library to link (the symbols come from the Rust side) and the one
# header below.
set(BLAS_FOUND TRUE)
set(BLAS_LIBRARIES "")
set(BLAS_LINKER_FLAGS "")
set(BLAS_INCLUDE_DIRS "${CMAKE_CURRENT_LIST_DIR}/include")
