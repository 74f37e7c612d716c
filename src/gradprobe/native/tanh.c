/* tanh for float32 arrays, vectorised by the C compiler (8 lanes with AVX2).
 *
 * torch.tanh on x86 CPUs costs about 5 ns per element (several times its sigmoid), more
 * than all the matmuls of a width-64 layer; these kernels cost a small fraction of that
 * and about as accurate (within 2 ulp of the exact value, 1.46 measured on AVX2 with FMA;
 * torch.tanh within 0.51; tests/sweep/test_native.py measures both against float64):
 *
 *   |x| < 0.5625:  tanh x = x + x t R(t),  t = x^2, R a degree-4 minimax fit (relative
 *                  error 1.4e-9, fitted by tools/fit_tanh.py)
 *   otherwise:     tanh |x| = 1 - 2 / (1 + e^(2|x|)), with e^y = 2^k e^r (k = round(y/ln 2),
 *                  |r| <= ln2/2, e^r by its degree-7 Taylor polynomial, error 7e-9); |x| is
 *                  clamped to 10 (tanh rounds to 1 in float32 from 9.011); sign restored.
 *
 * NaN propagates, +-inf give +-1, -0 gives -0, subnormals give themselves. No -ffast-math
 * (it would drop the NaN handling): built with -fno-trapping-math so the selects vectorise.
 *
 * Large arrays are split over OpenMP threads, as many as the caller says (torch's thread
 * count). The library links libgomp.so.1 by name, so in a process where torch has loaded
 * its libgomp the kernels run on torch's own thread pool instead of competing with its
 * spinning workers.
 */
#include <stdint.h>
#include <string.h>
#include <math.h>

static inline float tanh_one(float x)
{
    float a = fabsf(x);

    float t = a * a;
    float r = -6.179903841e-03f;
    r = r * t + 2.100752618e-02f;
    r = r * t - 5.383744666e-02f;
    r = r * t + 1.333245243e-01f;
    r = r * t - 3.333331389e-01f;
    float small = a + a * t * r;

    float y = a < 10.0f ? a : 10.0f; /* NaN and inf take 10: the NaN is restored below */
    y = y + y;
    const float shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float kf = (y * 1.44269504088896341f + shift) - shift;
    float rr = y - kf * 6.93145751953125e-1f; /* ln 2 in two parts (Cody-Waite) */
    rr = rr - kf * 1.42860682030941723e-6f;
    float e = 1.0f / 5040.0f;
    e = e * rr + 1.0f / 720.0f;
    e = e * rr + 1.0f / 120.0f;
    e = e * rr + 1.0f / 24.0f;
    e = e * rr + 1.0f / 6.0f;
    e = e * rr + 0.5f;
    e = e * rr + 1.0f;
    e = e * rr + 1.0f;
    int32_t bits = ((int32_t)kf + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float large = 1.0f - 2.0f / (1.0f + e * scale);

    float m = copysignf(a < 0.5625f ? small : large, x);
    return x != x ? x : m;
}

#define PARALLEL_MIN 65536 /* elements: below this one thread is faster */

/* out[i] = tanh(in[i]), i < n. in and out are the same array or do not overlap (restrict
 * lets the compiler vectorise without a run-time overlap check). */
static void tanh_rows(const float *restrict in, float *restrict out, int64_t n)
{
    for (int64_t i = 0; i < n; ++i)
        out[i] = tanh_one(in[i]);
}

static void tanh_rows_in_place(float *restrict x, int64_t n)
{
    for (int64_t i = 0; i < n; ++i)
        x[i] = tanh_one(x[i]);
}

/* out[i] = tanh(in[i]), i < n; in may equal out, else they must not overlap. Up to
 * `threads` OpenMP threads. */
void gradprobe_tanh_f32(const float *in, float *out, int64_t n, int threads)
{
    const int64_t block = 4096;
    int64_t blocks = (n + block - 1) / block;
#pragma omp parallel for schedule(static) num_threads(threads) if (n >= PARALLEL_MIN)
    for (int64_t k = 0; k < blocks; ++k) {
        int64_t lo = k * block, len = n - lo < block ? n - lo : block;
        if (in == out)
            tanh_rows_in_place(out + lo, len);
        else
            tanh_rows(in + lo, out + lo, len);
    }
}

static void bias_tanh_row(float *restrict z, const float *restrict b, float *restrict h,
                          int64_t cols)
{
    for (int64_t c = 0; c < cols; ++c) {
        float v = z[c] + b[c];
        z[c] = v;
        h[c] = tanh_one(v);
    }
}

static void bias_tanh_row_in_place(float *restrict z, const float *restrict b, int64_t cols)
{
    for (int64_t c = 0; c < cols; ++c)
        z[c] = tanh_one(z[c] + b[c]);
}

/* For z viewed as (groups, rows, cols) and a (groups, cols) bias: z += bias (broadcast over
 * rows), then h = tanh(z). h may equal z (then z ends up holding tanh), else they must not
 * overlap. Up to `threads` OpenMP threads. */
void gradprobe_bias_tanh_f32(float *z, const float *bias, float *h, int64_t groups,
                             int64_t rows, int64_t cols, int threads)
{
    int64_t all_rows = groups * rows;
#pragma omp parallel for schedule(static) num_threads(threads) \
    if (all_rows * cols >= PARALLEL_MIN)
    for (int64_t j = 0; j < all_rows; ++j) {
        const float *b = bias + (j / rows) * cols;
        if (h == z)
            bias_tanh_row_in_place(z + j * cols, b, cols);
        else
            bias_tanh_row(z + j * cols, b, h + j * cols, cols);
    }
}
