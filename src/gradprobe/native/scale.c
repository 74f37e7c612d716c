/* Autopilot's per-step gradient work: per layer, the sum of squares of the weight gradient
 * and the multiply by the layer's factor (trust ratio, adaptive clipping), in one call.
 *
 * Appended after reduce.c (build.SOURCES: one translation unit) and uses its F32_KERNEL
 * and moments_wide_f32, so the sums are those of the probe's reductions (float32 lanes
 * over blocks, float64 accumulators; the float64 path below `tiny`). A layer is summed,
 * then multiplied while it is still in the cache (per layer, not all sums first). The
 * multiply is by the factor rounded to float32, as torch's _foreach_mul_ with a float32
 * scalar tensor does: the same gradients, bit for bit.
 */
#include <math.h>

F32_KERNEL(sum_sq_f32, X16, 0, 0)

static double layer_sum_sq(const float *x, int64_t n, double tiny)
{
    double out[2];
    sum_sq_f32(x, NULL, NULL, n, out);
    if (out[1] < tiny)
        moments_wide_f32(x, n, out);
    return out[1];
}

static void mul_f32(float *restrict x, int64_t n, float f)
{
    for (int64_t i = 0; i < n; ++i)
        x[i] *= f;
}

/* For each of n layers: q[l] = the sum of squares of w[l] (nw[l] floats) when sums == 0,
 * read from q[l] when sums == 1, not needed when sums == 2 (no clipping: q[l] = NaN);
 * r = per[l] * sqrt(q[l]); f[l] = scale[l], times clip / r when r > clip (never for NaN);
 * then w[l] and b[l] (nb[l] floats; b[l] may be NULL) are multiplied by (float)f[l]
 * unless it is 1 (w[l] NULL: nothing, f[l] = 1). hit[l] = 1 for the clipped layers;
 * returns their number. per == NULL: no clipping (scale == NULL: factors 1, sums only).
 * Layers are independent, so the result does not depend on the number of threads. */
int gradprobe_scale_clip_f32(int64_t n, float *const *w, const int64_t *nw, float *const *b,
                             const int64_t *nb, const double *scale, const double *per,
                             double clip, double tiny, int sums, double *q, double *f,
                             int32_t *hit, int threads)
{
    int64_t total = 0;
    for (int64_t l = 0; l < n; ++l)
        total += nw[l];
    int hits = 0;
#pragma omp parallel for schedule(dynamic) num_threads(threads) \
    if (total > 4 * MIN_CHUNK) reduction(+ : hits)
    for (int64_t l = 0; l < n; ++l) {
        if (w[l] == NULL) { /* no gradient: nothing to sum or multiply */
            q[l] = NAN;
            f[l] = 1.0;
            hit[l] = 0;
            continue;
        }
        if (sums == 0)
            q[l] = layer_sum_sq(w[l], nw[l], tiny);
        else if (sums == 2)
            q[l] = NAN;
        double factor = scale != NULL ? scale[l] : 1.0;
        hit[l] = 0;
        if (per != NULL) {
            double r = per[l] * sqrt(q[l]);
            if (r > clip) {
                factor *= clip / r;
                hit[l] = 1;
                hits += 1;
            }
        }
        f[l] = factor;
        if (factor != 1.0) {
            mul_f32(w[l], nw[l], (float)factor);
            if (b[l] != NULL)
                mul_f32(b[l], nb[l], (float)factor);
        }
    }
    return hits;
}
