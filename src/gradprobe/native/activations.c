/* ReLU, leaky ReLU and sigmoid for float32 arrays: bias + activation in one pass, and the
 * backward and phi' from the activation's output, vectorised by the C compiler.
 *
 * The sweep engine's elementwise work per layer is one pass over (members, rows, units)
 * for the forward and one for the backward; torch spends three on a ReLU forward (the bias
 * add, a fresh output, a copy into the step's buffer) and, for a leaky ReLU, builds phi'
 * from the pre-activations with torch.where. These kernels write where they are told.
 *
 * kind: 0 ReLU, 1 leaky ReLU (slope), 2 sigmoid. The forward is exact for the ReLUs (the
 * bias add is one float addition, as torch's) and within 2.5 ulp for the sigmoid (2.25
 * measured, mean 0.23; torch.sigmoid 2.47, mean 0.26: tests/sweep/test_native_activations.py
 * measures against float64):
 *
 *   sigmoid x = 1 / (1 + e^-|x|) for x >= 0, else e^-|x| / (1 + e^-|x|) (one division), with
 *   e^-a = 2^k p(r) (k = round(-a / ln 2), |r| <= ln 2 / 2, p the degree-7 Taylor
 *   polynomial of e^r), 2^k applied in two halves so that results down to the subnormals
 *   are rounded once; a is clamped to 104, where e^-a is below half the least subnormal.
 *
 * The backward and phi' use torch's own float operations in torch's order, so they are
 * bitwise torch's given the same output h:
 *   ReLU:       h > 0 ? g : 0          phi' = h > 0
 *   leaky ReLU: h > 0 ? g : g * slope  phi' = h > 0 ? 1 : slope   (slope >= 0: the sign
 *               of h is the sign of z; the caller keeps negative slopes on torch's path)
 *   sigmoid:    g * (1 - h) * h        phi' = (1 - h) * h
 * NaN propagates through the forward (NaN > 0 is false, so the backward treats it as z <= 0,
 * as torch's threshold does).
 *
 * Large arrays are split over OpenMP threads, as many as the caller says (see tanh.c).
 */
#include <stdint.h>
#include <string.h>

enum { ACT_RELU = 0, ACT_LEAKY = 1, ACT_SIGMOID = 2 };

#define ACT_PARALLEL_MIN 65536 /* elements: below this one thread is faster */

/* 2^k for -150 <= k <= 0 as two factors, each a normal float. */
static inline float pow2_half(int32_t k)
{
    int32_t bits = (k + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* e^-a for a >= 0 (not NaN); 0 from a = 104 on. */
static inline float exp_minus(float a)
{
    float y = a < 104.0f ? -a : -104.0f;
    const float round_shift = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float k = (y * 1.44269504088896341f + round_shift) - round_shift;
    float r = (y - k * 6.93145751953125e-1f) - k * 1.42860682030941723e-6f;
    float p = 1.0f / 5040.0f;
    p = 1.0f / 720.0f + r * p;
    p = 1.0f / 120.0f + r * p;
    p = 1.0f / 24.0f + r * p;
    p = 1.0f / 6.0f + r * p;
    p = 0.5f + r * p;
    p = 1.0f + r * p;
    p = 1.0f + r * p;
    int32_t ki = (int32_t)k, half = ki / 2;
    return (p * pow2_half(half)) * pow2_half(ki - half);
}

static inline float sigmoid_one(float x)
{
    float e = exp_minus(x < 0.0f ? -x : x);
    float v = (x >= 0.0f ? 1.0f : e) / (1.0f + e);
    return x != x ? x : v;
}

/* phi(v) for one kind; kind is a constant wherever this is inlined. */
static inline __attribute__((always_inline)) float act_one(float v, int kind, float slope)
{
    if (kind == ACT_RELU)
        return v < 0.0f ? 0.0f : v;
    if (kind == ACT_LEAKY)
        return v < 0.0f ? v * slope : v;
    return sigmoid_one(v);
}

/* g * phi'(z) from h = phi(z), in torch's operation order. */
static inline __attribute__((always_inline)) float act_grad(float g, float h, int kind,
                                                            float slope)
{
    if (kind == ACT_RELU)
        return h > 0.0f ? g : 0.0f;
    if (kind == ACT_LEAKY)
        return h > 0.0f ? g : g * slope;
    return (g * (1.0f - h)) * h;
}

static inline __attribute__((always_inline)) float act_dphi(float h, int kind, float slope)
{
    if (kind == ACT_RELU)
        return h > 0.0f ? 1.0f : 0.0f;
    if (kind == ACT_LEAKY)
        return h > 0.0f ? 1.0f : slope;
    return (1.0f - h) * h;
}

/* One (rows * cols) member slice: z += b (per column), h = phi(z); h == z or apart. */
static inline __attribute__((always_inline)) void bias_act_rows(
    float *z, const float *restrict b, float *h, int64_t rows, int64_t cols, int kind,
    float slope)
{
    for (int64_t j = 0; j < rows; ++j) {
        float *restrict zr = z + j * cols;
        if (h == z) {
            for (int64_t c = 0; c < cols; ++c)
                zr[c] = act_one(zr[c] + b[c], kind, slope);
        } else {
            float *restrict hr = h + j * cols;
            for (int64_t c = 0; c < cols; ++c) {
                float v = zr[c] + b[c];
                zr[c] = v;
                hr[c] = act_one(v, kind, slope);
            }
        }
    }
}

#define ACT_DISPATCH(kind, call)                 \
    switch (kind) {                              \
    case ACT_RELU: call(ACT_RELU); break;        \
    case ACT_LEAKY: call(ACT_LEAKY); break;      \
    default: call(ACT_SIGMOID); break;           \
    }

/* z viewed as (groups, rows, cols), bias (groups, cols): z += bias (broadcast over rows),
 * then h = phi(z). h may equal z (z then ends up holding phi), else they must not overlap. */
void gradprobe_bias_act_f32(float *z, const float *bias, float *h, int64_t groups,
                            int64_t rows, int64_t cols, int kind, float slope, int threads)
{
    const int64_t block = rows < 64 ? rows : 64; /* rows per task */
    const int64_t per_group = (rows + block - 1) / block, tasks = groups * per_group;
#pragma omp parallel for schedule(static) num_threads(threads) \
    if (groups * rows * cols >= ACT_PARALLEL_MIN)
    for (int64_t t = 0; t < tasks; ++t) {
        int64_t g = t / per_group, lo = (t % per_group) * block;
        int64_t n = rows - lo < block ? rows - lo : block;
        int64_t at = (g * rows + lo) * cols;
#define ACT_BIAS(k) bias_act_rows(z + at, bias + g * cols, h + at, n, cols, k, slope)
        ACT_DISPATCH(kind, ACT_BIAS)
#undef ACT_BIAS
    }
}

/* From h = phi(z): io = io * phi'(z) (grad: the backward, in place) or io = phi'(z). */
static inline __attribute__((always_inline)) void from_output_span(
    const float *restrict h, float *restrict io, int64_t n, int kind, float slope, int grad)
{
    if (grad) {
        for (int64_t i = 0; i < n; ++i)
            io[i] = act_grad(io[i], h[i], kind, slope);
    } else {
        for (int64_t i = 0; i < n; ++i)
            io[i] = act_dphi(h[i], kind, slope);
    }
}

#define ACT_BLOCK 4096 /* elements per task */

/* For i < n, from h[i] = phi(z[i]): grad != 0: io[i] *= phi'(z[i]) (the backward, io being
 * dL/dh), else io[i] = phi'(z[i]). io and h do not overlap. Up to `threads` OpenMP threads. */
void gradprobe_act_from_output_f32(const float *h, float *io, int64_t n, int kind,
                                   float slope, int grad, int threads)
{
    int64_t tasks = (n + ACT_BLOCK - 1) / ACT_BLOCK;
#pragma omp parallel for schedule(static) num_threads(threads) if (n >= ACT_PARALLEL_MIN)
    for (int64_t t = 0; t < tasks; ++t) {
        int64_t lo = t * ACT_BLOCK, len = n - lo < ACT_BLOCK ? n - lo : ACT_BLOCK;
#define ACT_SPAN(k) from_output_span(h + lo, io + lo, len, k, slope, grad)
        ACT_DISPATCH(kind, ACT_SPAN)
#undef ACT_SPAN
    }
}
