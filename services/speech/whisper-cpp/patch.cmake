# Included by whisper.cpp's CMake after its project() call (CMAKE_PROJECT_INCLUDE, set in
# .cargo/config.toml and forwarded by whisper-rs-sys): builds whisper.cpp from a copy of
# src/whisper.cpp in which three CPU hot spots call mmc-speech's Rust instead:
#
# 1. The encoder's self-attention, one custom node (services/speech/src/engine/attention.rs).
#    Upstream builds it as K*Q (a window x window score matrix per head, tens of MB per
#    layer), a softmax over it and V*softmax, with K and V cast to f16 views that only ggml's
#    own kernels read. On CPU the score matrix streams through memory three times, and after
#    the dense matmuls moved to our GEMM (blas.rs) the attention and its softmax were most of
#    the encoder's time. The fused node computes the same f32 result a block of rows at a
#    time, in cache.
# 2. The log-mel spectrogram's frames (services/speech/src/engine/mel.rs): upstream's own
#    400-point FFT (a radix-2 split ending in a naive 25-point DFT) and full 201-bin filter
#    dot products were 8% of a transcription; realfft and each filter's nonzero span do the
#    same sums for a fraction. Padding, clamping and scaling stay upstream's.
# 3. The encoder's bias + GELU pairs, one vectorised node each (engine/gelu.rs): upstream's
#    GELU is a scalar f16 table lookup after a separate bias add (6% of a transcription).
#
# docs/speech.md has the measurements; services/speech/tests/encoder_blas.rs checks that the
# patched build calls all three, the Rust files' own tests check the arithmetic.
#
# The patch is text replacement on the exact upstream lines: if a whisper-rs-sys update
# changes them, configuration stops here with a message rather than building unpatched.
# GPU builds keep upstream's source (there the products run on the device).
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
        message(FATAL_ERROR "mmc-speech: whisper.cpp's ${what} is not as expected (services/speech/whisper-cpp/patch.cmake needs updating for this whisper.cpp)")
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

mmc_replace_once("log-mel frame loop" [==[
    {
        std::vector<std::thread> workers(n_threads - 1);
        for (int iw = 0; iw < n_threads - 1; ++iw) {
            workers[iw] = std::thread(
                    log_mel_spectrogram_worker_thread, iw + 1, hann, std::cref(samples_padded),
]==] [==[
    // mmc-speech: every frame's log10 mel energies, as the worker threads below compute them,
    // by services/speech/src/engine/mel.rs (a planned real FFT; filters summed where nonzero).
    // It declines (nonzero) only for a frame size other than Whisper's; then upstream's run.
    if (mmc_log_mel(samples_padded.data(), (int) (n_samples + stage_2_pad), frame_size, frame_step, hann,
            filters.data.data(), filters.n_fft, mel.n_mel, mel.n_len, mel.data.data()) != 0)
    {
        std::vector<std::thread> workers(n_threads - 1);
        for (int iw = 0; iw < n_threads - 1; ++iw) {
            workers[iw] = std::thread(
                    log_mel_spectrogram_worker_thread, iw + 1, hann, std::cref(samples_padded),
]==])

mmc_replace_once("log-mel function" [==[
static bool log_mel_spectrogram(
]==] [==[
// mmc-speech: the log-mel frames, in Rust (services/speech/src/engine/mel.rs).
extern "C" int mmc_log_mel(const float * samples, int n_samples, int frame_size, int frame_step,
        const float * hann, const float * filters, int n_fft, int n_mel, int n_len, float * out);

static bool log_mel_spectrogram(
]==])

mmc_replace_once("encoder convolutions' bias and GELU" [==[
            cur = ggml_conv_1d_ph(ctx0, model.e_conv_1_w, mel, 1, 1);
            cur = ggml_add(ctx0, cur, model.e_conv_1_b);

            cur = ggml_gelu(ctx0, cur);

            cur = ggml_conv_1d_ph(ctx0, model.e_conv_2_w, cur, 2, 1);
            cur = ggml_add(ctx0, cur, model.e_conv_2_b);

            cur = ggml_gelu(ctx0, cur);
]==] [==[
            cur = ggml_conv_1d_ph(ctx0, model.e_conv_1_w, mel, 1, 1);
            cur = mmc_bias_gelu_node(ctx0, cur, model.e_conv_1_b);

            cur = ggml_conv_1d_ph(ctx0, model.e_conv_2_w, cur, 2, 1);
            cur = mmc_bias_gelu_node(ctx0, cur, model.e_conv_2_b);
]==])

mmc_replace_once("encoder MLP's bias and GELU" [==[
            cur = ggml_add(ctx0, cur, layer.mlp_0_b);

            // GELU activation
            cur = ggml_gelu(ctx0, cur);
]==] [==[
            // mmc-speech: bias and GELU in one node.
            cur = mmc_bias_gelu_node(ctx0, cur, layer.mlp_0_b);
]==])

mmc_replace_once("encoder convolution graph builder" [==[
static struct ggml_cgraph * whisper_build_graph_conv(
]==] [==[
// mmc-speech: GELU(x + bias) as one node, in Rust (services/speech/src/engine/gelu.rs).
extern "C" void mmc_bias_gelu(const float * x, const float * bias, float * out, int64_t n_cols, int64_t n_rows,
        int64_t row_x, int64_t row_out, int32_t bias_per_row, int32_t ith, int32_t nth);

static void mmc_bias_gelu_op(struct ggml_tensor * dst, const struct ggml_tensor * x, const struct ggml_tensor * b,
        int ith, int nth, void * per_row) {
    mmc_bias_gelu((const float *) x->data, (const float *) b->data, (float *) dst->data, x->ne[0], x->ne[1],
            x->nb[1]/sizeof(float), dst->nb[1]/sizeof(float), per_row != nullptr, ith, nth);
}

// ggml_gelu(ggml_add(x, b)) for f32 rows x and a bias b of one value per column (the MLP's) or
// per row (the convolutions', whose rows are channels); any other shape keeps upstream's nodes.
static struct ggml_tensor * mmc_bias_gelu_node(struct ggml_context * ctx0, struct ggml_tensor * x, struct ggml_tensor * b) {
    const bool f32 = x->type == GGML_TYPE_F32 && b->type == GGML_TYPE_F32;
    const bool rows = x->ne[2] == 1 && x->ne[3] == 1 && x->nb[0] == sizeof(float) && ggml_is_contiguous(b);
    const bool per_column = b->ne[0] == x->ne[0] && ggml_nelements(b) == x->ne[0];
    const bool per_row = b->ne[0] == 1 && b->ne[1] == x->ne[1] && ggml_nelements(b) == x->ne[1];
    if (!f32 || !rows || !(per_column || per_row)) {
        return ggml_gelu(ctx0, ggml_add(ctx0, x, b));
    }
    return ggml_map_custom2(ctx0, x, b, mmc_bias_gelu_op, GGML_N_TASKS_MAX, per_row ? (void *) 1 : nullptr);
}

static struct ggml_cgraph * whisper_build_graph_conv(
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
