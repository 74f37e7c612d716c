/* One-pass reductions for the probe: each reads its tensor once.
 *
 * A recorded probe step needs, per layer, sums and sums of squares of tensors autograd
 * already produced (outputs, gradients, weights) and, per ReLU, how many outputs are > 0
 * and how many units are > 0 on some sample. torch takes one pass per number; these
 * kernels take one pass for all the numbers of a tensor, without allocating.
 *
 * Accuracy. float32 input is summed in float32 SIMD lanes over blocks of BLOCK elements
 * (8 terms per lane: at most 8 roundings, 5e-7 relative, before a block's lanes are added
 * into float64 accumulators); float64 input in float64. A sum of squares below `tiny`
 * (the caller's underflow threshold: squares of entries below ~1e-19 lose digits in
 * float32) is redone with every square in float64, where the square of any float32 is
 * exact and nothing underflows.
 *
 * Vectorised by GCC/clang vector types, not -ffast-math: the order of the additions is
 * fixed by the code. Large arrays are cut into at most MAX_CHUNKS chunks whose partial
 * sums are added in chunk order, so a result does not depend on the number of OpenMP
 * threads. NaN and inf propagate through the sums as in torch; counts treat a NaN as 0,
 * as torch's sign() does.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float vf16 __attribute__((vector_size(64)));
typedef double vd8 __attribute__((vector_size(64)));

#define W 16              /* float32 lanes of one vector */
#define BLOCK (8 * 4 * W) /* elements per float32 partial sum: 8 per lane, 4 vectors */
#define MAX_CHUNKS 64
#define MIN_CHUNK 65536 /* elements: below this a second thread costs more than it saves */

static inline vf16 load16(const float *p)
{
    vf16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store16(float *p, vf16 v) { memcpy(p, &v, sizeof v); }

/* acc[j*W + k] += lane k of a[j] (in float64) */
static inline void spill(const vf16 a[4], double *restrict acc)
{
    for (int j = 0; j < 4; ++j)
        for (int k = 0; k < W; ++k)
            acc[j * W + k] += (double)a[j][k];
}

static double total(const double *acc, int n)
{
    double s = 0;
    for (int k = 0; k < n; ++k)
        s += acc[k];
    return s;
}

/* The float32 kernels over one range: out[0] += sum x (if SUM), out[1] += sum v^2 where
 * v = EXPR(x[i]) (x itself, or a difference), dst[i] = x[i] (if COPY). */
#define F32_KERNEL(NAME, EXPR, SUM, COPY)                                                  \
    static void NAME(const float *restrict x, const float *restrict b, float *restrict dst, \
                     int64_t n, double *out)                                               \
    {                                                                                      \
        (void)b;                                                                           \
        (void)dst;                                                                         \
        double s[4 * W] = {0}, q[4 * W] = {0}, s1 = 0, q1 = 0;                             \
        int64_t i = 0;                                                                     \
        while (i + 4 * W <= n) {                                                           \
            vf16 sv[4] = {{0}}, qv[4] = {{0}};                                             \
            int64_t end = i + BLOCK <= n ? i + BLOCK : n - (n - i) % (4 * W);              \
            for (; i < end; i += 4 * W)                                                    \
                for (int j = 0; j < 4; ++j) {                                              \
                    vf16 v = EXPR(i + j * W);                                              \
                    if (COPY)                                                              \
                        store16(dst + i + j * W, v);                                       \
                    if (SUM)                                                               \
                        sv[j] += v;                                                        \
                    qv[j] += v * v;                                                        \
                }                                                                          \
            if (SUM)                                                                       \
                spill(sv, s);                                                              \
            spill(qv, q);                                                                  \
        }                                                                                  \
        for (; i < n; ++i) {                                                               \
            float v = EXPR##_1(i);                                                         \
            if (COPY)                                                                      \
                dst[i] = v;                                                                \
            s1 += v;                                                                       \
            q1 += (double)v * v;                                                           \
        }                                                                                  \
        out[0] = SUM ? s1 + total(s, 4 * W) : 0;                                           \
        out[1] = q1 + total(q, 4 * W);                                                     \
    }

#define X16(i) load16(x + (i))
#define X16_1(i) x[i]
#define D16(i) (load16(x + (i)) - load16(b + (i)))
#define D16_1(i) (x[i] - b[i])

F32_KERNEL(moments_f32, X16, 1, 0)
F32_KERNEL(copy_f32, X16, 0, 1)
F32_KERNEL(diff_f32, D16, 0, 0)

/* sum x and sum x^2 with every term in float64 (float32 x: the exact path) */
#define F64_KERNEL(NAME, T)                                                                \
    static void NAME(const T *restrict x, int64_t n, double *out)                          \
    {                                                                                      \
        vd8 s[2] = {{0}}, q[2] = {{0}};                                                    \
        double s1 = 0, q1 = 0;                                                             \
        int64_t i = 0;                                                                     \
        for (; i + 16 <= n; i += 16)                                                       \
            for (int j = 0; j < 2; ++j) {                                                  \
                vd8 v;                                                                     \
                for (int k = 0; k < 8; ++k)                                                \
                    v[k] = (double)x[i + 8 * j + k];                                       \
                s[j] += v;                                                                 \
                q[j] += v * v;                                                             \
            }                                                                              \
        for (; i < n; ++i) {                                                               \
            double v = (double)x[i];                                                       \
            s1 += v;                                                                       \
            q1 += v * v;                                                                   \
        }                                                                                  \
        vd8 st = s[0] + s[1], qt = q[0] + q[1];                                            \
        for (int k = 0; k < 8; ++k) {                                                      \
            s1 += st[k];                                                                   \
            q1 += qt[k];                                                                   \
        }                                                                                  \
        out[0] = s1;                                                                       \
        out[1] = q1;                                                                       \
    }

F64_KERNEL(moments_wide_f32, float)
F64_KERNEL(moments_f64, double)

static int64_t chunk_size(int64_t n)
{
    int64_t c = (n + MAX_CHUNKS - 1) / MAX_CHUNKS;
    c = c < MIN_CHUNK ? MIN_CHUNK : c;
    return (c + BLOCK - 1) / BLOCK * BLOCK;
}

/* Runs CALL(lo, len, part) over the chunks of n elements on up to `threads` threads and
 * adds the parts, in chunk order, into out[0..1]. */
#define CHUNKED(n, threads, CALL)                                                          \
    do {                                                                                   \
        int64_t size = chunk_size(n), chunks = (n + size - 1) / size;                      \
        double part[MAX_CHUNKS][2] = {{0}};                                                \
        _Pragma("omp parallel for schedule(static) num_threads(threads) if (chunks > 1)")  \
        for (int64_t k = 0; k < chunks; ++k) {                                             \
            int64_t lo = k * size, len = n - lo < size ? n - lo : size;                    \
            CALL(lo, len, part[k]);                                                        \
        }                                                                                  \
        out[0] = out[1] = 0;                                                               \
        for (int64_t k = 0; k < chunks; ++k) {                                             \
            out[0] += part[k][0];                                                          \
            out[1] += part[k][1];                                                          \
        }                                                                                  \
    } while (0)

#define CALL_MOMENTS(lo, len, p) moments_f32(x + lo, NULL, NULL, len, p)
#define CALL_WIDE(lo, len, p) moments_wide_f32(x + lo, len, p)
#define CALL_M64(lo, len, p) moments_f64(x + lo, len, p)
#define CALL_COPY(lo, len, p) copy_f32(x + lo, NULL, dst + lo, len, p)
#define CALL_DIFF(lo, len, p) diff_f32(a + lo, b + lo, NULL, len, p)

/* out[0] = sum x, out[1] = sum x^2 of float32 x (n entries); the exact path when the sum
 * of squares is below `tiny`. */
void gradprobe_moments_f32(const float *x, int64_t n, double *out, double tiny, int threads)
{
    CHUNKED(n, threads, CALL_MOMENTS);
    if (out[1] < tiny)
        CHUNKED(n, threads, CALL_WIDE);
}

void gradprobe_moments_f64(const double *x, int64_t n, double *out, int threads)
{
    CHUNKED(n, threads, CALL_M64);
}

/* out[2k], out[2k + 1] = gradprobe_moments_f32 of xs[k] (ns[k] entries) for k < count: many
 * small tensors (a step's bias gradients) for the price of one call from Python */
void gradprobe_moments_many_f32(const float *const *xs, const int64_t *ns, int64_t count,
                                double *out, double tiny, int threads)
{
    for (int64_t k = 0; k < count; ++k)
        gradprobe_moments_f32(xs[k], ns[k], out + 2 * k, tiny, threads);
}

/* dst = x and out[1] = sum x^2 (float32; out[0] = 0) */
void gradprobe_copy_sum_sq_f32(const float *x, float *dst, int64_t n, double *out,
                               double tiny, int threads)
{
    CHUNKED(n, threads, CALL_COPY);
    if (out[1] < tiny)
        CHUNKED(n, threads, CALL_WIDE);
}

/* out[1] = sum (a - b)^2 (float32, the difference rounded to float32 as torch's sub;
 * out[0] = 0) */
void gradprobe_diff_sum_sq_f32(const float *a, const float *b, int64_t n, double *out,
                               double tiny, int threads)
{
    CHUNKED(n, threads, CALL_DIFF);
    if (out[1] < tiny) {
        /* rare (an update below 1e-15): the difference once more, each square in float64 */
        double q = 0;
        for (int64_t i = 0; i < n; ++i) {
            double v = (double)(float)(a[i] - b[i]);
            q += v * v;
        }
        out[1] = q;
    }
}

/* x: (rows, cols) with rows, cols >= 1. out[0] = entries counted (> 0, or != 0 when
 * `nonzero`; a NaN is not counted, as torch's sign() of it is 0), out[1] = columns with a
 * counted entry. Returns 0, or -1 when out of memory. */
#define COUNTS(NAME, T)                                                                    \
    int NAME(const T *x, int64_t rows, int64_t cols, int nonzero, double *out)             \
    {                                                                                      \
        int32_t *restrict cnt = calloc((size_t)cols, sizeof(int32_t));                     \
        if (cnt == NULL)                                                                   \
            return -1;                                                                     \
        for (int64_t r = 0; r < rows; ++r) {                                               \
            const T *restrict row = x + r * cols;                                          \
            if (nonzero)                                                                   \
                for (int64_t c = 0; c < cols; ++c)                                         \
                    cnt[c] += (row[c] != 0) & (row[c] == row[c]);                          \
            else                                                                           \
                for (int64_t c = 0; c < cols; ++c)                                         \
                    cnt[c] += row[c] > 0;                                                  \
        }                                                                                  \
        int64_t sum = 0, alive = 0;                                                        \
        for (int64_t c = 0; c < cols; ++c) {                                               \
            sum += cnt[c];                                                                 \
            alive += cnt[c] > 0;                                                           \
        }                                                                                  \
        free(cnt);                                                                         \
        out[0] = (double)sum;                                                              \
        out[1] = (double)alive;                                                            \
        return 0;                                                                          \
    }

COUNTS(gradprobe_counts_f32, float)
COUNTS(gradprobe_counts_f64, double)

#define L1_CHUNK 2048 /* elements read a second time while still in the L1 cache */

/* float32 x: (rows, cols), rows, cols >= 1: out[0..1] as gradprobe_moments_f32, out[2..3]
 * as gradprobe_counts_f32 of the entries > 0, in one read of x from memory (the counts
 * reread a few rows at a time from the L1 cache). Single-threaded. Returns 0, or -1 when
 * out of memory. */
int gradprobe_moments_counts_f32(const float *x, int64_t rows, int64_t cols, double *out,
                                 double tiny)
{
    int32_t *restrict cnt = calloc((size_t)cols, sizeof(int32_t));
    if (cnt == NULL)
        return -1;
    int64_t step = cols >= L1_CHUNK ? 1 : L1_CHUNK / cols;
    double sum = 0, sq = 0, part[2];
    for (int64_t r0 = 0; r0 < rows; r0 += step) {
        int64_t r1 = r0 + step < rows ? r0 + step : rows;
        moments_f32(x + r0 * cols, NULL, NULL, (r1 - r0) * cols, part);
        sum += part[0];
        sq += part[1];
        int64_t r = r0;
        for (; r + 4 <= r1; r += 4) { /* cnt read and written once per 4 rows */
            const float *restrict a = x + r * cols, *restrict b = a + cols;
            const float *restrict c2 = b + cols, *restrict d = c2 + cols;
            for (int64_t c = 0; c < cols; ++c)
                cnt[c] += (a[c] > 0) + (b[c] > 0) + (c2[c] > 0) + (d[c] > 0);
        }
        for (; r < r1; ++r) {
            const float *restrict row = x + r * cols;
            for (int64_t c = 0; c < cols; ++c)
                cnt[c] += row[c] > 0;
        }
    }
    int64_t total = 0, alive = 0;
    for (int64_t c = 0; c < cols; ++c) {
        total += cnt[c];
        alive += cnt[c] > 0;
    }
    free(cnt);
    out[0] = sum;
    out[1] = sq;
    if (sq < tiny)
        moments_wide_f32(x, rows * cols, out);
    out[2] = (double)total;
    out[3] = (double)alive;
    return 0;
}

