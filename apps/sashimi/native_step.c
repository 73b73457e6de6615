/* One recurrent step of a whole SaShiMi model in plain C (see apps/sashimi/native.py).
 *
 * The model is described by an int64 "program" and one float32 parameter buffer; each batch
 * element owns a contiguous slice of the state buffer (SSM states as split complex floats,
 * DownPool buffers, UpPool pending outputs).  Batch elements are independent, so OpenMP splits the
 * batch across threads once per step (a single sequence can be shared by two threads: see team_t).
 * An SSM block's channels run VL at a time, one per SIMD lane (VL floats: 16 with AVX-512, else 8):
 * its terms and states are stored per group of VL channels, mode by mode, real lanes then imaginary
 * lanes (see ssm_lanes).  Every layer is the
 * diagonal-plus-low-rank recurrence of apps/sashimi/stepper.py:
 * q_k = Re(a_k . x) + c_k u,  x' = lam x + b u - sum_k G_k q_k,  y = Re(C . x') + D u, followed by
 * GELU, Linear(H, 2H) and GLU; feed-forward blocks are Linear(H, 2H), GELU, Linear(2H, H).  All blocks
 * are prenorm residual blocks (layer norm).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <sched.h>
#include <omp.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

typedef int64_t i64;

#ifdef SASHIMI_PROFILE /* cycle counters per (tier, part), for benchmarks only: gcc -DSASHIMI_PROFILE */
#include <x86intrin.h>
double sashimi_prof[64];
static int prof_tier(int H) { return H <= 64 ? 0 : H <= 128 ? 1 : 2; }
#define PROF_T0 uint64_t _pt = __rdtsc()
#define PROF_RESET _pt = __rdtsc()
#define PROF(slot) do { uint64_t _n = __rdtsc(); sashimi_prof[slot] += (double)(_n - _pt); _pt = _n; } while (0)
#else
#define PROF_T0 do {} while (0)
#define PROF_RESET do {} while (0)
#define PROF(slot) do {} while (0)
#endif

/* block record layout in the program (REC ints each) */
enum { KIND, BH, BM, BR, LNW, LNB, P0, P1, P2, P3, P4, P5, P6, P7, P8, SOFF, REC };
/* level record layout */
enum { LP, LH, DW, DB, UW, UB, DBUF, PEND, DBLK, UBLK, LREC };
/* header */
enum { NLEV, NCLS, D0, EMB, FLNW, FLNB, DECW, DECB, SSTRIDE, CENTER_H, CENTER_BLK, WFMT, HEAD };

/* GELU(v) = v (1 + erf(v / sqrt 2)) / 2 over an array, with erf(x) = x P(x^2) / Q(x^2) on |x| <= 3.9
 * (a degree-5/5 rational least-squares fit made for this file; |error| < 4e-7 in float32, about
 * glibc erff's own, and beyond 3.9 erf is 1 to float precision).  Branch-free, so it vectorises;
 * libm's erff is a scalar call and cost a quarter of a step. */
static void gelu_inplace(float *v, int n) {
    for (int i = 0; i < n; i++) {
        float x = v[i] * 0.70710678118654752f;
        x = x > 3.9f ? 3.9f : (x < -3.9f ? -3.9f : x);
        const float z = x * x;
        const float P = ((((2.105777638929273e-06f * z + 0.0002867736957806717f) * z + 0.0037076997666396407f) * z
                          + 0.05257887536977271f) * z + 0.18863617827588713f) * z + 1.1283790817546284f;
        const float Q = ((((3.876660264462409e-05f * z + 0.0011544705682801045f) * z + 0.01484991099511651f) * z
                          + 0.11343634797043124f) * z + 0.5005067714194402f) * z + 1.0f;
        float e = x * P / Q;
        e = e > 1.0f ? 1.0f : (e < -1.0f ? -1.0f : e);
        v[i] = 0.5f * v[i] * (1.0f + e);
    }
}

static void layer_norm(const float *x, float *u, int nb, int H, const float *w, const float *b, float eps) {
    for (int r = 0; r < nb; r++) {
        const float *xr = x + (i64)r * H;
        float *ur = u + (i64)r * H;
        float mean = 0.f, var = 0.f;
        for (int i = 0; i < H; i++) mean += xr[i];
        mean /= H;
        for (int i = 0; i < H; i++) { float d = xr[i] - mean; var += d * d; }
        float inv = 1.0f / sqrtf(var / H + eps);
        for (int i = 0; i < H; i++) ur[i] = (xr[i] - mean) * inv * w[i] + b[i];
    }
}

/* The vector width: 16 floats (one AVX-512 register) where the compiler targets AVX-512, else 8 (one AVX
 * register, two SSE ones elsewhere).  Weight strips are 3 VL, VL and 1 columns wide (VL is exported as
 * sashimi_vector_width, and apps.sashimi.native packs the weights to match). */
#ifdef __AVX512F__
#define VL 16
#else
#define VL 8
#endif
typedef float vf __attribute__((vector_size(VL * 4)));
/* rows of a linear's register tile: TR x 3 accumulators + 3 weight vectors fit the 32 AVX-512 registers
 * (the 16 of AVX: 4 rows) */
#define TR (VL == 16 ? 8 : 4)

int sashimi_vector_width(void) { return VL; }

static inline vf loadv(const float *p) {
    vf v;
    memcpy(&v, p, sizeof(v));
    return v;
}

typedef uint16_t u16xV __attribute__((vector_size(VL * 2)));
typedef int32_t i32xV __attribute__((vector_size(VL * 4)));
typedef int8_t i8xV __attribute__((vector_size(VL)));

/* How a linear's matrix is stored (the header's WFMT): float32; bfloat16 (the high half of a float32,
 * widened exactly by a 16-bit shift); or int8 with one float32 scale per output column (the matrix's
 * first `out` floats hold the scales, the int8 strips follow).  Products and sums are float32 in all
 * three; an int8 column's sum is scaled once, after the sum. */
enum { W_F32 = 0, W_BF16 = 1, W_I8 = 2 };

/* VL weights at element index i of W in format F (a compile-time constant after inlining) */
static inline __attribute__((always_inline)) vf loadw(const void *W, i64 i, const int F) {
    if (F == W_F32) return loadv((const float *)W + i);
    if (F == W_I8) { /* one sign-extending load and one conversion; gcc scalarises the generic form */
#if VL == 16
        return (vf)_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)W + i))));
#elif defined(__AVX2__)
        return (vf)_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)W + i))));
#else
        i8xV q;
        memcpy(&q, (const int8_t *)W + i, sizeof(q));
        return __builtin_convertvector(q, vf);
#endif
    }
#if VL == 16 /* one widening load; gcc splits the generic form in two halves */
    return (vf)_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(
        _mm256_loadu_si256((const __m256i *)((const uint16_t *)W + i))), 16));
#else
    u16xV h;
    memcpy(&h, (const uint16_t *)W + i, sizeof(h));
    const i32xV wide = __builtin_convertvector(h, i32xV) << 16;
    vf f;
    memcpy(&f, &wide, sizeof(f));
    return f;
#endif
}

static inline float loadw1(const void *W, i64 i, const int F) {
    if (F == W_F32) return ((const float *)W)[i];
    if (F == W_I8) return (float)((const int8_t *)W)[i];
    const uint32_t bits = (uint32_t)((const uint16_t *)W)[i] << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

/* the finished sums of VL output columns: bias + sum, or bias + scale * sum for int8 columns */
static inline __attribute__((always_inline)) vf finishv(vf acc, const float *bias, const float *scale, int j) {
    if (scale) return acc * loadv(scale + j) + loadv(bias + j);
    return acc + loadv(bias + j);
}

/* y[r, j0:j0+VW*VL] = bias + x[r] (in) @ W[:, j0:j0+VW*VL] for NR rows, the strip starting at element
 * `at` of the packed W: a register tile of NR x VW vectors (NR <= TR, VW <= 3, F: compile-time
 * constants after inlining); scale: the int8 columns' scales, or NULL. */
static inline __attribute__((always_inline)) void tile(const float *x, const int NR, const int VW, int in, int out,
                                                       const void *W, i64 at, const int F, const float *bias,
                                                       const float *scale, float *y, int j0) {
    vf a[TR][3];
    for (int r = 0; r < NR; r++)
        for (int v = 0; v < VW; v++) a[r][v] = (vf){0};
    for (int k = 0; k < in; k++) {
        const i64 row = at + (i64)k * VW * VL; /* the strip is packed: in x (VW * VL), contiguous */
        vf wv[3];
        for (int v = 0; v < VW; v++) wv[v] = loadw(W, row + VL * v, F);
        for (int r = 0; r < NR; r++) {
            const float xk = x[(i64)r * in + k];
            for (int v = 0; v < VW; v++) a[r][v] += xk * wv[v];
        }
    }
    for (int r = 0; r < NR; r++)
        for (int v = 0; v < VW; v++) {
            const vf t = finishv(a[r][v], bias, scale, j0 + VL * v);
            memcpy(y + (i64)r * out + j0 + VL * v, &t, sizeof(vf));
        }
}

/* One row (a matrix-vector product) over a strip: the same sums, with four accumulator sets taking
 * every fourth k, so that 4 x VW independent FMA chains hide the FMA latency (one set waits on its own
 * chain: 1.5x slower on L1/L2-resident weights, measured). */
static inline __attribute__((always_inline)) void tile1(const float *x, const int VW, int in, const void *W, i64 at,
                                                        const int F, const float *bias, const float *scale, float *y,
                                                        int j0) {
    vf a[4][3];
    for (int s = 0; s < 4; s++)
        for (int v = 0; v < VW; v++) a[s][v] = (vf){0};
    int k = 0;
    for (; k + 4 <= in; k += 4)
        for (int s = 0; s < 4; s++) {
            const i64 row = at + (i64)(k + s) * VW * VL;
            const float xk = x[k + s];
            for (int v = 0; v < VW; v++) a[s][v] += xk * loadw(W, row + VL * v, F);
        }
    for (; k < in; k++) {
        const i64 row = at + (i64)k * VW * VL;
        for (int v = 0; v < VW; v++) a[0][v] += x[k] * loadw(W, row + VL * v, F);
    }
    for (int v = 0; v < VW; v++) {
        const vf t = finishv((a[0][v] + a[1][v]) + (a[2][v] + a[3][v]), bias, scale, j0 + VL * v);
        memcpy(y + j0 + VL * v, &t, sizeof(vf));
    }
}

#define TILE(n, VW) tile(x + (i64)r0 * in, n, VW, in, out, W, at, F, bias, scale, y + (i64)r0 * out, j0)
#define ROW_GROUPS(VW)                                                                                          \
    do {                                                                                                        \
        if (nb == 1) { tile1(x, VW, in, W, at, F, bias, scale, y, j0); break; }                                \
        int r0 = 0;                                                                                             \
        for (; r0 + TR <= nb; r0 += TR) TILE(TR, VW);                                                               \
        switch (nb - r0) {                                                                                      \
            case 7: TILE(7, VW); break;                                                                             \
            case 6: TILE(6, VW); break;                                                                             \
            case 5: TILE(5, VW); break;                                                                             \
            case 4: TILE(4, VW); break;                                                                             \
            case 3: TILE(3, VW); break;                                                                             \
            case 2: TILE(2, VW); break;                                                                             \
            case 1: TILE(1, VW); break;                                                                             \
            default: break;                                                                                     \
        }                                                                                                       \
    } while (0)

/* columns [c0, c1) of y; c0 and c1 must be strip boundaries (see strip_split) */
static inline __attribute__((always_inline)) void linear_any(const float *x, int nb, int in, int out, const void *W,
                                                             const int F, const float *bias, const float *scale,
                                                             float *y, int c0, int c1) {
    int j0 = c0;
    i64 at = (i64)in * c0; /* strips are stored in column order, each in x width: column j0 starts at in * j0 */
    const int n3 = out / (3 * VL) * (3 * VL), n1 = n3 + (out - n3) / VL * VL; /* where the wide strips end */
    for (; j0 < n3 && j0 < c1; j0 += 3 * VL, at += (i64)in * 3 * VL) ROW_GROUPS(3);
    for (; j0 < n1 && j0 < c1; j0 += VL, at += (i64)in * VL) ROW_GROUPS(1);
    for (; j0 < c1; j0++, at += in)
        for (int r = 0; r < nb; r++) {
            float acc = 0.f;
            for (int k = 0; k < in; k++) acc += x[(i64)r * in + k] * loadw1(W, at + k, F);
            y[(i64)r * out + j0] = bias[j0] + (scale ? scale[j0] * acc : acc);
        }
}
#undef ROW_GROUPS
#undef TILE

/* y (nb, out) = bias + x (nb, in) @ W (in, out) over columns [c0, c1), W packed by
 * apps.sashimi.native.pack_strips (column strips of 3 VL, then VL, then 1, each contiguous) in format fmt
 * (W_F32; W_BF16: two weights per float slot; W_I8: `out` float scales, then four weights per slot).
 * Column strips outside, row groups inside: a strip (in x 3 VL weights) streams from memory once per call
 * and from L1 for the other row groups, so the weights pass through the cache once per step whatever
 * the batch. */
static void linear_cols(const float *x, int nb, int in, int out, const float *W, const float *bias, float *y, int fmt,
                        int c0, int c1) {
    if (fmt == W_BF16) linear_any(x, nb, in, out, W, W_BF16, bias, NULL, y, c0, c1);
    else if (fmt == W_I8) linear_any(x, nb, in, out, W + out, W_I8, bias, W, y, c0, c1);
    else linear_any(x, nb, in, out, W, W_F32, bias, NULL, y, c0, c1);
}

/* ---- Two threads on one sequence (batch 1): the leader runs the step and hands the second half of each
 * large linear (its column strips) and of each SSM block's channels to a worker spinning on a shared
 * job word, then waits for it.  Each core then streams half of the tiers' weights and keeps half of
 * them in its own L2.  Jobs are posted by a release store of `seq` and finished by one of `done`. */
enum { JOB_LINEAR = 1, JOB_SSM = 2 };
typedef struct {
    _Alignas(64) _Atomic long seq; /* each flag on its own cache line: the partner's spin reads do not */
    _Alignas(64) _Atomic long done; /* steal the line that the other thread is writing */
    _Alignas(64) _Atomic int stop;
    long min_work; /* split a linear of in x out >= min_work weights, an SSM block of H x M x 10 >= min_work terms */
    int kind;
    /* JOB_LINEAR: columns [c0, c1) of y = bias + x W, then GELU on them when gelu */
    const float *x, *W, *bias;
    float *y;
    int nb, in, out, fmt, c0, c1, gelu;
    /* JOB_SSM: half of the channel groups of the block record r (u: normed input, y: output), then GELU on them */
    const i64 *r;
    const float *w, *u;
    float *st;
    i64 stride;
} team_t;

static _Thread_local team_t *leader_team; /* set on the leader thread for the length of a generate call */

/* a waiting loop's body: a plain re-read for the first few thousand turns (a handoff takes tens of
 * nanoseconds, and x86's pause alone costs about as much), then pause, then yield the core: a partner
 * that is descheduled on a busy machine gets to run */
static inline void spin_pause(long *spins) {
    ++*spins;
    if (*spins < 4096) return;
#ifdef __x86_64__
    __builtin_ia32_pause();
#endif
    if (*spins > (1L << 16)) { sched_yield(); *spins = 4096; }
}

static void gelu_cols(float *v, int nb, int width, int c0, int c1) {
    for (int row = 0; row < nb; row++) gelu_inplace(v + (i64)row * width + c0, c1 - c0);
}

/* the strip boundary of a linear with `out` columns closest to out / 2 (strips: 3 VL, then VL, then 1) */
static int strip_split(int out) {
    const int W3 = 3 * VL, n3 = out / W3 * W3, n1 = n3 + (out - n3) / VL * VL, half = out / 2;
    if (half <= n3) return (half + W3 / 2) / W3 * W3;
    if (half <= n1) return n3 + (half - n3 + VL / 2) / VL * VL;
    return half;
}

static void ssm_groups(const i64 *r, const float *w, float *st, i64 stride, const float *u, float *y, int nb,
                       int g0, int g1);

static void run_job(team_t *t, int part) {
    if (t->kind == JOB_LINEAR) {
        const int s = strip_split(t->out), c0 = part ? s : 0, c1 = part ? t->out : s;
        linear_cols(t->x, t->nb, t->in, t->out, t->W, t->bias, t->y, t->fmt, c0, c1);
        if (t->gelu) gelu_cols(t->y, t->nb, t->out, c0, c1);
    } else {
        const int H = (int)t->r[BH], groups = (H + VL - 1) / VL, half = groups / 2;
        const int g0 = part ? half : 0, g1 = part ? groups : half; /* whole groups of VL channels each */
        ssm_groups(t->r, t->w, t->st, t->stride, t->u, t->y, t->nb, g0, g1);
        gelu_cols(t->y, t->nb, H, g0 * VL, g1 * VL < H ? g1 * VL : H);
    }
}

/* the leader: post the job (fields already written), do part 0, wait for the worker's part 1 */
static void team_run(team_t *t) {
    const long s = atomic_load_explicit(&t->seq, memory_order_relaxed) + 1;
    atomic_store_explicit(&t->seq, s, memory_order_release);
    run_job(t, 0);
    long spins = 0;
    while (atomic_load_explicit(&t->done, memory_order_acquire) != s) spin_pause(&spins);
}

static void team_worker(team_t *t) {
    long last = 0, spins = 0;
    for (;;) {
        const long s = atomic_load_explicit(&t->seq, memory_order_acquire);
        if (s != last) {
            run_job(t, 1);
            last = s;
            atomic_store_explicit(&t->done, s, memory_order_release);
            spins = 0;
        } else if (atomic_load_explicit(&t->stop, memory_order_acquire)) {
            return;
        } else {
            spin_pause(&spins);
        }
    }
}

static void linear_gelu(const float *x, int nb, int in, int out, const float *W, const float *bias, float *y, int fmt,
                        int gelu) {
    team_t *t = leader_team;
    if (t && (long)in * out >= t->min_work) {
        t->kind = JOB_LINEAR;
        t->x = x, t->nb = nb, t->in = in, t->out = out, t->W = W, t->bias = bias, t->y = y, t->fmt = fmt;
        t->gelu = gelu;
        team_run(t);
        return;
    }
    linear_cols(x, nb, in, out, W, bias, y, fmt, 0, out);
    if (gelu) gelu_inplace(y, nb * out);
}

static void linear(const float *x, int nb, int in, int out, const float *W, const float *bias, float *y, int fmt) {
    linear_gelu(x, nb, in, out, W, bias, y, fmt, 0);
}

/* The recurrence of one group of VL channels (one per vector lane) for NR rows (1..4 after inlining).
 * Layout (apps.sashimi.native.pack_lanes): the channels are padded to Hp = a multiple of VL (zero terms,
 * so a padding lane's state stays 0) and cut into groups of VL; a group's lam, b and C are [m][re, im][VL],
 * its a_k and G_k the same at a stride of KS = Hp M 2 floats per k, c_k [Hp] per k, D [Hp].  xs[r] is
 * row r's state of the group ([m][re, im][VL]), us[r] its VL inputs, ys[r] receives its VL outputs.
 * q_k = Re(a_k . x) + c_k u, x' = lam x + b u - sum_k G_k q_k, y = Re(C . x') + D u, every lane on its
 * own: no horizontal sums, and the parameters of a mode are read once for every row of the group. */
static inline __attribute__((always_inline)) void ssm_lanes(float *const *xs, const vf *us, vf *ys, const int NR,
                                                            int M, int R, i64 KS, i64 Hp, const float *lam,
                                                            const float *b, const float *a, const float *c,
                                                            const float *G, const float *C, const float *D) {
    vf q[4 * (R > 0 ? R : 1)];
    for (int k = 0; k < R; k++) {
        const float *ak = a + k * KS;
        vf acc[4][4];
        for (int r = 0; r < NR; r++) acc[r][0] = acc[r][1] = acc[r][2] = acc[r][3] = (vf){0};
        int m = 0;
        for (; m + 1 < M; m += 2) { /* four independent sums per row: the FMA latency is hidden at batch 1 */
            const float *am = ak + (i64)m * 2 * VL;
            const vf ar0 = loadv(am), ai0 = loadv(am + VL), ar1 = loadv(am + 2 * VL), ai1 = loadv(am + 3 * VL);
            for (int r = 0; r < NR; r++) {
                const float *x = xs[r] + (i64)m * 2 * VL;
                acc[r][0] += ar0 * loadv(x);
                acc[r][1] += ai0 * loadv(x + VL);
                acc[r][2] += ar1 * loadv(x + 2 * VL);
                acc[r][3] += ai1 * loadv(x + 3 * VL);
            }
        }
        if (m < M) {
            const float *am = ak + (i64)m * 2 * VL;
            const vf ar = loadv(am), ai = loadv(am + VL);
            for (int r = 0; r < NR; r++) {
                acc[r][0] += ar * loadv(xs[r] + (i64)m * 2 * VL);
                acc[r][1] += ai * loadv(xs[r] + (i64)m * 2 * VL + VL);
            }
        }
        const vf ck = loadv(c + k * Hp);
        for (int r = 0; r < NR; r++) q[r * R + k] = ((acc[r][0] - acc[r][1]) + (acc[r][2] - acc[r][3])) + ck * us[r];
    }
    vf out[4][2];
    for (int r = 0; r < NR; r++) out[r][0] = out[r][1] = (vf){0};
    for (int m = 0; m < M; m++) {
        const i64 o = (i64)m * 2 * VL;
        const vf lr = loadv(lam + o), li = loadv(lam + o + VL), br = loadv(b + o), bi = loadv(b + o + VL);
        const vf cr = loadv(C + o), ci = loadv(C + o + VL);
        for (int r = 0; r < NR; r++) {
            float *x = xs[r] + o;
            const vf sr = loadv(x), si = loadv(x + VL);
            vf nr = lr * sr - li * si + br * us[r];
            vf ni = lr * si + li * sr + bi * us[r];
            for (int k = 0; k < R; k++) {
                const float *g = G + k * KS + o;
                nr -= loadv(g) * q[r * R + k];
                ni -= loadv(g + VL) * q[r * R + k];
            }
            memcpy(x, &nr, sizeof(vf));
            memcpy(x + VL, &ni, sizeof(vf));
            out[r][0] += cr * nr;
            out[r][1] += ci * ni;
        }
    }
    const vf d = loadv(D);
    for (int r = 0; r < NR; r++) ys[r] = (out[r][0] - out[r][1]) + d * us[r];
}

/* channel groups [g0, g1) of an SSM block's recurrence: u (nb, H) normed input -> y (nb, H) */
static void ssm_groups(const i64 *r, const float *w, float *st, i64 stride, const float *u, float *y, int nb,
                       int g0, int g1) {
    const int H = (int)r[BH], M = (int)r[BM], R = (int)r[BR];
    const i64 Hp = ((i64)H + VL - 1) / VL * VL, KS = Hp * M * 2;
    const float *lam = w + r[P0], *bb = w + r[P1], *a = w + r[P2], *c = w + r[P3], *G = w + r[P4];
    const float *C = w + r[P5], *D = w + r[P6];
    /* group-major: a group's parameters stay in L1 while every row of the batch slice uses them */
    for (int g = g0; g < g1; g++) {
        const i64 o = (i64)g * M * 2 * VL;
        const int ch = g * VL, n = H - ch < VL ? H - ch : VL; /* the last group may be partly padding */
        for (int r0 = 0; r0 < nb; r0 += 4) {
            const int NR = nb - r0 < 4 ? nb - r0 : 4;
            float *xs[4];
            vf us[4], ys[4];
            for (int k = 0; k < NR; k++) {
                xs[k] = st + (i64)(r0 + k) * stride + r[SOFF] + o;
                const float *uk = u + (i64)(r0 + k) * H + ch;
                if (n == VL) {
                    us[k] = loadv(uk);
                } else { /* the padded last group: its missing lanes read 0 */
                    us[k] = (vf){0};
                    for (int j = 0; j < n; j++) us[k][j] = uk[j];
                }
            }
#define SSM_LANES(nr) ssm_lanes(xs, us, ys, nr, M, R, KS, Hp, lam + o, bb + o, a + o, c + ch, G + o, C + o, D + ch)
            switch (NR) {
                case 4: SSM_LANES(4); break;
                case 3: SSM_LANES(3); break;
                case 2: SSM_LANES(2); break;
                default: SSM_LANES(1); break;
            }
#undef SSM_LANES
            for (int k = 0; k < NR; k++) {
                float *yk = y + (i64)(r0 + k) * H + ch;
                if (n == VL) memcpy(yk, &ys[k], sizeof(vf));
                else for (int j = 0; j < n; j++) yk[j] = ys[k][j];
            }
        }
    }
}

/* x (nb, H) in place; row r's states live at st + r * stride */
static void ssm_block(const i64 *r, const float *w, float *st, i64 stride, float *x, int nb, float eps, int fmt) {
    const int H = (int)r[BH], M = (int)r[BM];
    const float *W = w + r[P7], *bias = w + r[P8];
    float u[nb * H], y[nb * H], h[nb * 2 * H];
    PROF_T0;
    layer_norm(x, u, nb, H, w + r[LNW], w + r[LNB], eps);
    PROF(prof_tier(H) * 8 + 0);
    team_t *t = leader_team;
    if (t && (long)H * M * 10 >= t->min_work) {
        t->kind = JOB_SSM;
        t->r = r, t->w = w, t->st = st, t->stride = stride, t->u = u, t->y = y, t->nb = nb;
        team_run(t);
        PROF(prof_tier(H) * 8 + 1);
    } else {
        ssm_groups(r, w, st, stride, u, y, nb, 0, (H + VL - 1) / VL);
        PROF(prof_tier(H) * 8 + 1);
        gelu_inplace(y, nb * H);
        PROF(prof_tier(H) * 8 + 2);
    }
    linear(y, nb, H, 2 * H, W, bias, h, fmt);
    PROF(prof_tier(H) * 8 + 3);
    for (int row = 0; row < nb; row++)
        for (int i = 0; i < H; i++) {
            const float *hr = h + (i64)row * 2 * H;
            x[(i64)row * H + i] += hr[i] / (1.0f + expf(-hr[H + i]));
        }
    PROF(prof_tier(H) * 8 + 2);
}

static void ff_block(const i64 *r, const float *w, float *x, int nb, float eps, int fmt) {
    const int H = (int)r[BH], E = (int)r[BM];
    float u[nb * H], h[nb * E], y[nb * H];
    PROF_T0;
    layer_norm(x, u, nb, H, w + r[LNW], w + r[LNB], eps);
    PROF(prof_tier(H) * 8 + 4);
    linear_gelu(u, nb, H, E, w + r[P0], w + r[P1], h, fmt, 1);
    PROF(prof_tier(H) * 8 + 5);
    linear(h, nb, E, H, w + r[P2], w + r[P3], y, fmt);
    PROF(prof_tier(H) * 8 + 5);
    for (int i = 0; i < nb * H; i++) x[i] += y[i];
    PROF(prof_tier(H) * 8 + 6);
}

static void run_blocks(const i64 *prog, i64 at, const float *w, float *st, i64 stride, float *x, int nb,
                       float eps) {
    const i64 n = prog[at];
    for (i64 j = 0; j < n; j++) {
        const i64 *r = prog + at + 1 + j * REC;
        if (r[KIND] == 0) ff_block(r, w, x, nb, eps, (int)prog[WFMT]);
        else ssm_block(r, w, st, stride, x, nb, eps, (int)prog[WFMT]);
    }
}

/* level i on the rows x (nb, H_i), in place: x becomes the level's output */
static void level(const i64 *prog, int i, const float *w, float *st, i64 stride, float *x, int nb,
                  const i64 *count, const i64 *next, float eps) {
    const int L = (int)prog[NLEV];
    if (i == L) {
        const int H = (int)prog[CENTER_H];
        float in[nb * H];
        memcpy(in, x, sizeof(float) * nb * H);
        run_blocks(prog, prog[CENTER_BLK], w, st, stride, x, nb, eps);
        if (L > 0) for (int k = 0; k < nb * H; k++) x[k] += in[k];
        return;
    }
    const i64 *lv = prog + HEAD + (i64)i * LREC;
    const int p = (int)lv[LP], H = (int)lv[LH];
    run_blocks(prog, lv[DBLK], w, st, stride, x, nb, eps);
    float skip[nb * H];
    for (int row = 0; row < nb; row++) {
        float *buf = st + row * stride + lv[DBUF], *pend = st + row * stride + lv[PEND];
        memcpy(buf + (i64)count[i] * H, x + (i64)row * H, sizeof(float) * H);
        for (int k = 0; k < H; k++) skip[row * H + k] = pend[(i64)next[i] * H + k] + x[(i64)row * H + k];
    }
    if (count[i] + 1 == p) {
        const int Hn = (int)(i + 1 < L ? prog[HEAD + (i64)(i + 1) * LREC + LH] : prog[CENTER_H]);
        float window[nb * p * H], below[nb * Hn], up[nb * p * H];
        for (int row = 0; row < nb; row++)
            memcpy(window + (i64)row * p * H, st + row * stride + lv[DBUF], sizeof(float) * p * H);
        PROF_T0;
        linear(window, nb, p * H, Hn, w + lv[DW], w + lv[DB], below, (int)prog[WFMT]);
        PROF(24 + i);
        level(prog, i + 1, w, st, stride, below, nb, count, next, eps);
        PROF_RESET;
        linear(below, nb, Hn, p * H, w + lv[UW], w + lv[UB], up, (int)prog[WFMT]);
        PROF(24 + i);
        for (int row = 0; row < nb; row++)
            memcpy(st + row * stride + lv[PEND], up + (i64)row * p * H, sizeof(float) * p * H);
    }
    memcpy(x, skip, sizeof(float) * nb * H);
    run_blocks(prog, lv[UBLK], w, st, stride, x, nb, eps);
    for (int k = 0; k < nb * H; k++) x[k] += skip[k];
}

/* One step of the batch slice b0 .. b0 + nb: tokens -> logits (nb, K); count/next are read only. */
static void step_slice(const i64 *prog, const float *w, float *state, const i64 *tokens, float *logits, int b0,
                       int nb, const i64 *count, const i64 *next, float eps) {
    const int H0 = (int)prog[D0], K = (int)prog[NCLS];
    const i64 stride = prog[SSTRIDE];
    float x[nb * H0], u[nb * H0];
    for (int r = 0; r < nb; r++) memcpy(x + (i64)r * H0, w + prog[EMB] + tokens[r] * H0, sizeof(float) * H0);
    level(prog, 0, w, state + (i64)b0 * stride, stride, x, nb, count, next, eps);
    PROF_T0;
    layer_norm(x, u, nb, H0, w + prog[FLNW], w + prog[FLNB], eps);
    linear(u, nb, H0, K, w + prog[DECW], w + prog[DECB], logits, (int)prog[WFMT]);
    PROF(28);
}

/* the pooling phases after one step */
static void advance(const i64 *prog, i64 *count, i64 *next) {
    const int L = (int)prog[NLEV];
    for (int i = 0; i < L; i++) {
        const int p = (int)prog[HEAD + (i64)i * LREC + LP];
        const int emitted = count[i] + 1 == p;
        count[i] = emitted ? 0 : count[i] + 1;
        next[i] = next[i] + 1 == p ? 0 : next[i] + 1;
        if (!emitted) break; /* deeper levels did not step */
    }
}

static void slice_bounds(int B, int t, int threads, int *b0, int *nb) {
    *b0 = (int)((i64)B * t / threads);
    *nb = (int)((i64)B * (t + 1) / threads) - *b0;
}

/* One step for the batch: tokens (B,) -> logits (B, K); count/next: the pooling phases (updated).
 * Returns 0, or -1 (and touches nothing) when a token is outside [0, K): it indexes the embedding
 * table, and an out-of-range one would read past the parameter buffer. */
int sashimi_step(const i64 *prog, const float *w, float *state, const i64 *tokens, float *logits,
                 i64 *count, i64 *next, int B, int threads, float eps) {
    const int K = (int)prog[NCLS];
    for (int b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= K) return -1;
    if (threads > B) threads = B;
    if (threads < 1) threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int t = 0; t < threads; t++) { /* contiguous batch slices, one per thread */
        int b0, nb;
        slice_bounds(B, t, threads, &b0, &nb);
        if (nb > 0) step_slice(prog, w, state, tokens + b0, logits + (i64)b0 * K, b0, nb, count, next, eps);
    }
    advance(prog, count, next);
    return 0;
}

static int cmp_desc(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* Draw a token from one row of logits (K) with the uniform number v in [0, 1): softmax at
 * `temperature` (0: greedy), restricted to the top-p nucleus (the largest probabilities whose mass,
 * taken in decreasing order, first reaches top_p; ties at the cut are kept), by inverse CDF in
 * token order.  *logp receives the untempered log-probability of the token.  p: K floats of scratch
 * (2K when top_p < 1). */
static int sample_row(const float *lg, int K, float temperature, float top_p, float v, float *p, double *logp) {
    int best = 0;
    for (int i = 1; i < K; i++) if (lg[i] > lg[best]) best = i;
    const float mx = lg[best];
    double z1 = -1.0; /* sum of exp(lg - mx): the untempered normaliser */
    int tok = best;
    if (temperature > 0.f) {
        const float inv = 1.0f / temperature;
        double z = 0.0;
        for (int i = 0; i < K; i++) { p[i] = expf((lg[i] - mx) * inv); z += p[i]; }
        if (temperature == 1.f) z1 = z; /* the same sum: no second pass of exponentials */
        float cut = 0.f; /* keep p >= cut */
        if (top_p < 1.f) {
            float *sorted = p + K;
            memcpy(sorted, p, sizeof(float) * K);
            qsort(sorted, K, sizeof(float), cmp_desc);
            double before = 0.0;
            const double reach = (double)top_p * z;
            for (int j = 0; j < K && before < reach; j++) { cut = sorted[j]; before += sorted[j]; }
            z = 0.0;
            for (int i = 0; i < K; i++) if (p[i] >= cut) z += p[i];
        }
        const double target = (double)v * z;
        double acc = 0.0;
        tok = -1;
        for (int i = 0; i < K; i++) {
            if (p[i] < cut || p[i] == 0.f) continue;
            acc += p[i];
            tok = i;
            if (acc > target) break;
        }
        if (tok < 0) tok = best;
    }
    if (z1 < 0.0) {
        z1 = 0.0;
        for (int i = 0; i < K; i++) z1 += exp((double)lg[i] - mx);
    }
    *logp = (double)lg[tok] - mx - log(z1);
    return tok;
}

/* `steps` tokens per sequence without leaving C: from the current logits (B, K), draw a token
 * (uniform[s * B + b] is sequence b's random number at step s), add its untempered log-probability to
 * loglik[b], write it to out[b * steps + s], and step the model on it -- except after the last
 * token unless step_last, so that logits then hold the next distribution.  Each thread owns a
 * contiguous slice of the batch for the whole call (no per-step synchronisation); count/next end
 * advanced by the number of model steps taken.  With one sequence and threads >= 2, split_min > 0 makes
 * two threads share every step instead (see team_t): linears of at least split_min weights and SSM
 * blocks of at least split_min terms are split between them.  The result is the same either way. */
static void generate_slice(const i64 *prog, const float *w, float *state, float *logits, const i64 *count,
                           const i64 *next, int B, int b0, int nb, float eps, int steps, const float *uniform,
                           float temperature, float top_p, int step_last, i64 *out, double *loglik) {
    const int K = (int)prog[NCLS], L = (int)prog[NLEV];
    i64 cnt[L > 0 ? L : 1], nxt[L > 0 ? L : 1], tok[nb];
    memcpy(cnt, count, sizeof(i64) * L);
    memcpy(nxt, next, sizeof(i64) * L);
    float *scratch = malloc(sizeof(float) * 2 * (size_t)K); /* K may be 65536 (16-bit audio): not the stack */
    for (int s = 0; s < steps; s++) {
        PROF_T0;
        for (int r = 0; r < nb; r++) {
            const int b = b0 + r;
            double lp;
            tok[r] = sample_row(logits + (i64)b * K, K, temperature, top_p, uniform[(i64)s * B + b], scratch, &lp);
            out[(i64)b * steps + s] = tok[r];
            loglik[b] += lp;
        }
        PROF(29);
        if (s + 1 < steps || step_last) {
            step_slice(prog, w, state, tok, logits + (i64)b0 * K, b0, nb, cnt, nxt, eps);
            advance(prog, cnt, nxt);
        }
    }
    free(scratch);
}

void sashimi_generate(const i64 *prog, const float *w, float *state, float *logits, i64 *count, i64 *next, int B,
                      int threads, float eps, int steps, const float *uniform, float temperature, float top_p,
                      int step_last, i64 *out, double *loglik, long split_min) {
    if (steps <= 0) return;
    if (B == 1 && threads >= 2 && split_min > 0) { /* one sequence: a leader and a worker share each step */
        team_t team;
        memset(&team, 0, sizeof(team));
        team.min_work = split_min;
#pragma omp parallel num_threads(2)
        {
            if (omp_get_thread_num() == 0) {
                leader_team = omp_get_num_threads() > 1 ? &team : NULL; /* alone: no one to hand work to */
                generate_slice(prog, w, state, logits, count, next, 1, 0, 1, eps, steps, uniform, temperature, top_p,
                               step_last, out, loglik);
                leader_team = NULL;
                atomic_store_explicit(&team.stop, 1, memory_order_release);
            } else {
                team_worker(&team);
            }
        }
    } else {
        if (threads > B) threads = B;
        if (threads < 1) threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
        for (int t = 0; t < threads; t++) {
            int b0, nb;
            slice_bounds(B, t, threads, &b0, &nb);
            if (nb > 0)
                generate_slice(prog, w, state, logits, count, next, B, b0, nb, eps, steps, uniform, temperature, top_p,
                               step_last, out, loglik);
        }
    }
    const int taken = steps - 1 + (step_last != 0);
    for (int s = 0; s < taken; s++) advance(prog, count, next);
}
