// whisper.cpp on its own, as its command-line program runs one file (minus the argument
// parsing and printing): greedy decoding, English, no cross-window context, N threads,
// flash attention off as in mmc-speech (whisper.cpp's own default turns it on; on these CPUs
// it makes tiny.en slower, so leaving it on would flatter our ratio).
// Built by tests/bench/speech.sh from the very sources whisper-rs-sys compiled for
// mmc-speech, with the same CPU flags, as whisper.cpp builds by default (ggml's own kernels,
// no BLAS backend), so the comparison is our pipeline against whisper.cpp as users run it.
//
//   whisper-cpp-ref MODEL AUDIO.f32 THREADS RUNS   (AUDIO: 16 kHz mono float32, headerless)
// Prints JSON: {"audio_s", "rtf", "seconds", "text"}.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "whisper.h"

static void quiet(ggml_log_level, const char *, void *) {}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL AUDIO.f32 THREADS RUNS\n", argv[0]);
        return 2;
    }
    whisper_log_set(quiet, nullptr);
    FILE *f = fopen(argv[2], "rb");
    if (!f) return 1;
    std::vector<float> pcm;
    float buf[4096];
    size_t n;
    while ((n = fread(buf, sizeof(float), 4096, f)) > 0) pcm.insert(pcm.end(), buf, buf + n);
    fclose(f);
    const int threads = atoi(argv[3]), runs = atoi(argv[4]);

    whisper_context_params cp = whisper_context_default_params();
    cp.use_gpu = false;
    cp.flash_attn = false;
    whisper_context *ctx = whisper_init_from_file_with_params(argv[1], cp);
    if (!ctx) return 1;
    whisper_state *state = whisper_init_state(ctx);

    whisper_full_params p = whisper_full_default_params(WHISPER_SAMPLING_GREEDY);
    p.n_threads = threads;
    p.language = "en";
    p.no_context = true;
    p.print_progress = p.print_realtime = p.print_timestamps = p.print_special = false;

    double best = 1e30;
    std::string text;
    for (int r = 0; r < runs + 1; r++) {  // the first run warms up
        auto t0 = std::chrono::steady_clock::now();
        if (whisper_full_with_state(ctx, state, p, pcm.data(), (int)pcm.size()) != 0) return 1;
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (r > 0 && s < best) best = s;
        text.clear();
        for (int i = 0; i < whisper_full_n_segments_from_state(state); i++) text += whisper_full_get_segment_text_from_state(state, i);
    }
    std::string escaped;
    for (char c : text) {
        if (c == '"' || c == '\\') escaped += '\\';
        if ((unsigned char)c >= 0x20) escaped += c;
    }
    const double audio_s = pcm.size() / 16000.0;
    printf("{\"audio_s\": %.3f, \"rtf\": %.5f, \"seconds\": %.3f, \"text\": \"%s\"}\n", audio_s, best / audio_s, best, escaped.c_str());
    whisper_free_state(state);
    whisper_free(ctx);
    return 0;
}
