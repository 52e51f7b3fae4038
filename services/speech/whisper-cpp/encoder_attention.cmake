# Included by whisper.cpp's CMake after its project() call (CMAKE_PROJECT_INCLUDE, set in
# .cargo/config.toml and forwarded by whisper-rs-sys): builds whisper.cpp from a copy of
# src/whisper.cpp whose encoder self-attention is one custom node computed by mmc-speech
# (services/speech/src/engine/attention.rs).
#
# Why: upstream builds it as K*Q (a window x window score matrix per head, tens of MB per
# layer), a softmax over it and V*softmax, with K and V cast to f16 views that only ggml's own
# kernels read. On CPU the score matrix streams through memory three times, and after the
# dense matmuls moved to our GEMM (blas.rs) the attention and its softmax were most of the
# encoder's time. The fused node computes the same f32 result a block of rows at a time,
# in cache. docs/speech.md has the measurements; services/speech/tests/encoder_blas.rs checks
# that the patched graph calls it, attention.rs's tests check the arithmetic.
#
# The patch is text replacement on the exact upstream lines: if a whisper-rs-sys update
# changes them, configuration stops here with a message rather than building unpatched.
# GPU builds keep upstream's graph (there the products run on the device).
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

mmc_replace_once("encoder attention" [==[
                struct ggml_tensor * K =
                    ggml_permute(ctx0,
                            ggml_cast(ctx0,
                                ggml_reshape_3d(ctx0, Kcur, n_state_head, n_head, n_ctx),
                                wctx.itype),
                            0, 2, 1, 3);

                // K * Q
                struct ggml_tensor * KQ = ggml_mul_mat(ctx0, K, Q);

                struct ggml_tensor * KQ_soft_max = ggml_soft_max_ext(ctx0, KQ, nullptr, KQscale, 0.0f);

                struct ggml_tensor * V =
                    ggml_cast(ctx0,
                            ggml_permute(ctx0,
                                ggml_reshape_3d(ctx0,
                                    Vcur,
                                    n_state_head, n_head, n_ctx),
                                1, 2, 0, 3),
                            wctx.itype);

                struct ggml_tensor * KQV = ggml_mul_mat(ctx0, V, KQ_soft_max);

                struct ggml_tensor * KQV_merged = ggml_permute(ctx0, KQV, 0, 2, 1, 3);

                cur = ggml_cont_2d(ctx0, KQV_merged, n_state, n_ctx);
]==] [==[
                // mmc-speech: softmax(Q K^T / sqrt(d)) V for every head in one node, by
                // services/speech/src/engine/attention.rs (same result, KQscale included).
                cur = ggml_map_custom3(ctx0, Qcur, Kcur, Vcur, mmc_encoder_attention_op, GGML_N_TASKS_MAX,
                        (void *) (intptr_t) n_head);
]==])

mmc_replace_once("encoder graph builder" [==[
static struct ggml_cgraph * whisper_build_graph_encoder(
]==] [==[
// mmc-speech: the encoder's self-attention, in Rust (services/speech/src/engine/attention.rs).
extern "C" void mmc_encoder_attention(const float * q, const float * k, const float * v, float * out,
        int64_t n_ctx, int64_t n_state, int64_t n_head,
        int64_t row_q, int64_t row_k, int64_t row_v, int64_t row_out, int ith, int nth);

// ggml custom-op node: Q, K, V and the output are [n_state, n_ctx] f32, heads side by side.
static void mmc_encoder_attention_op(struct ggml_tensor * dst, const struct ggml_tensor * q,
        const struct ggml_tensor * k, const struct ggml_tensor * v, int ith, int nth, void * n_head) {
    for (const struct ggml_tensor * t : { (const struct ggml_tensor *) dst, q, k, v }) {
        GGML_ASSERT(t->type == GGML_TYPE_F32 && t->nb[0] == sizeof(float) && t->ne[1] == q->ne[1]);
    }
    mmc_encoder_attention((const float *) q->data, (const float *) k->data, (const float *) v->data,
            (float *) dst->data, q->ne[1], q->ne[0], (int64_t) (intptr_t) n_head,
            q->nb[1]/sizeof(float), k->nb[1]/sizeof(float), v->nb[1]/sizeof(float), dst->nb[1]/sizeof(float),
            ith, nth);
}

static struct ggml_cgraph * whisper_build_graph_encoder(
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
