# Included by whisper.cpp's CMake after its project() call (CMAKE_PROJECT_INCLUDE, set in
# .cargo/config.toml and forwarded by whisper-rs-sys): builds whisper.cpp from a copy of
# src/whisper.cpp whose encoder self-attention runs in f32 on contiguous tensors.
#
# Why: whisper.cpp casts the encoder's K and V to f16 and multiplies them as permuted views.
# ggml's BLAS backend (our `cblas_sgemm`, services/speech/src/engine/blas.rs) takes only
# contiguous operands, so those two products (a window's length squared, per head and layer)
# stayed on ggml's f16 kernels: after the dense matmuls moved to the BLAS backend they were
# the largest single cost of a transcription (39% of tiny.en's time on the project's
# machine). Made contiguous in f32 (three copies of window x width floats per layer, small
# beside the products), ggml hands them to the BLAS backend like the dense matmuls.
# docs/speech.md has the measurements; services/speech/tests/encoder_blas.rs checks that the
# products reach our sgemm.
#
# The patch is text replacement on the exact upstream lines: if a whisper-rs-sys update
# changes them, configuration stops here with a message rather than building unpatched.
# GPU builds keep upstream's f16 attention (the products run on the device, where f16 pays).
include_guard(GLOBAL)
if(GGML_CUDA OR GGML_HIP OR GGML_VULKAN OR GGML_METAL OR GGML_SYCL)
    return()
endif()

set(_mmc_src "${CMAKE_SOURCE_DIR}/src/whisper.cpp")
file(READ "${_mmc_src}" _mmc_text)

# Replaces OLD (which must occur exactly once) with NEW in _mmc_text.
function(mmc_replace_once what old new)
    string(FIND "${_mmc_text}" "${old}" first)
    string(FIND "${_mmc_text}" "${old}" last REVERSE)
    if(first EQUAL -1 OR NOT first EQUAL last)
        message(FATAL_ERROR "mmc-speech: whisper.cpp's ${what} is not as expected (services/speech/whisper-cpp/encoder_attention.cmake needs updating for this whisper.cpp)")
    endif()
    string(REPLACE "${old}" "${new}" text "${_mmc_text}")
    set(_mmc_text "${text}" PARENT_SCOPE)
endfunction()

mmc_replace_once("encoder K and K*Q" [==[
                struct ggml_tensor * K =
                    ggml_permute(ctx0,
                            ggml_cast(ctx0,
                                ggml_reshape_3d(ctx0, Kcur, n_state_head, n_head, n_ctx),
                                wctx.itype),
                            0, 2, 1, 3);

                // K * Q
                struct ggml_tensor * KQ = ggml_mul_mat(ctx0, K, Q);
]==] [==[
                // mmc-speech: f32 and contiguous, so ggml's BLAS backend takes K * Q.
                struct ggml_tensor * K =
                    ggml_cont(ctx0, ggml_permute(ctx0,
                                ggml_reshape_3d(ctx0, Kcur, n_state_head, n_head, n_ctx),
                            0, 2, 1, 3));

                // K * Q
                struct ggml_tensor * KQ = ggml_mul_mat(ctx0, K, ggml_cont(ctx0, Q));
]==])

mmc_replace_once("encoder V" [==[
                struct ggml_tensor * V =
                    ggml_cast(ctx0,
                            ggml_permute(ctx0,
                                ggml_reshape_3d(ctx0,
                                    Vcur,
                                    n_state_head, n_head, n_ctx),
                                1, 2, 0, 3),
                            wctx.itype);
]==] [==[
                // mmc-speech: f32 and contiguous, so ggml's BLAS backend takes V * softmax(KQ).
                struct ggml_tensor * V =
                    ggml_cont(ctx0,
                            ggml_permute(ctx0,
                                ggml_reshape_3d(ctx0,
                                    Vcur,
                                    n_state_head, n_head, n_ctx),
                                1, 2, 0, 3));
]==])

# The patched copy lives in the build tree; whisper.cpp's own sources stay as shipped.
set(_mmc_patched "${CMAKE_BINARY_DIR}/mmc-patched/whisper.cpp")
# Rewritten only when it changes, so a reconfiguration does not recompile whisper.cpp.
file(WRITE "${_mmc_patched}.new" "${_mmc_text}")
file(COPY_FILE "${_mmc_patched}.new" "${_mmc_patched}" ONLY_IF_DIFFERENT)

# The `whisper` target exists only once src/ has been read: swap its source at the end of
# the top-level directory.
function(mmc_use_patched_whisper_source)
    get_target_property(sources whisper SOURCES)
    list(TRANSFORM sources REPLACE "^whisper\\.cpp$" "${_mmc_patched}")
    set_target_properties(whisper PROPERTIES SOURCES "${sources}")
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL mmc_use_patched_whisper_source)
