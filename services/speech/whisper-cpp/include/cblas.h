/* The part of the CBLAS interface that ggml's BLAS backend (ggml-blas.cpp, built with
 * GGML_BLAS_VENDOR=OpenBLAS) calls, implemented in Rust by mmc-speech
 * (services/speech/src/engine/blas.rs); see ../FindBLAS.cmake for why. */
#ifndef MMC_CBLAS_H
#define MMC_CBLAS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum CBLAS_ORDER { CblasRowMajor = 101, CblasColMajor = 102 } CBLAS_ORDER;
typedef enum CBLAS_TRANSPOSE { CblasNoTrans = 111, CblasTrans = 112, CblasConjTrans = 113 } CBLAS_TRANSPOSE;

/* C = alpha * op(A) * op(B) + beta * C */
void cblas_sgemm(enum CBLAS_ORDER order, enum CBLAS_TRANSPOSE trans_a, enum CBLAS_TRANSPOSE trans_b,
                 int m, int n, int k, float alpha, const float *a, int lda, const float *b, int ldb,
                 float beta, float *c, int ldc);

/* Threads for the sgemm calls that follow on the calling thread (ggml sets it before each matmul). */
void openblas_set_num_threads(int num_threads);

#ifdef __cplusplus
}
#endif

#endif
