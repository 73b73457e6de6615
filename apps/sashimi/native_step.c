/* One recurrent step of a whole SaShiMi model in plain C (see apps/sashimi/native.py).
 *
 * The model is described by an int64 "program" and one float32 parameter buffer; each batch
 * element owns a contiguous slice of the state buffer (SSM states as interleaved complex floats,
 * DownPool buffers, UpPool pending outputs).  Batch elements are independent, so OpenMP splits the
 * batch across threads once per step.  Complex vectors are stored split per feature (M real parts,
 * then M imaginary parts) so that the mode loops run on 8-float SIMD vectors.  Every layer is the diagonal-plus-low-rank recurrence of
 * apps/sashimi/stepper.py:  q_k = Re(a_k . x) + c_k u,  x' = lam x + b u - sum_k G_k q_k,
 * y = Re(C . x') + D u, followed by GELU, Linear(H, 2H) and GLU; feed-forward blocks are
 * Linear(H, 2H), GELU, Linear(2H, H).  All blocks are prenorm residual blocks (layer norm).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
enum { NLEV, NCLS, D0, EMB, FLNW, FLNB, DECW, DECB, SSTRIDE, CENTER_H, CENTER_BLK, WBF16, HEAD };

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

typedef float v8 __attribute__((vector_size(32))); /* 8 floats: one AVX register (two SSE ones elsewhere) */

static inline v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof(v));
    return v;
}

typedef uint16_t u16x8 __attribute__((vector_size(16)));
typedef int32_t i32x8 __attribute__((vector_size(32)));

/* 8 weights at element index i of W: float32, or (BF) bfloat16 -- the high half of a float32, widened
 * exactly by a 16-bit shift; the products and sums stay float32. */
static inline __attribute__((always_inline)) v8 loadw(const void *W, i64 i, const int BF) {
    if (!BF) return load8((const float *)W + i);
    u16x8 h;
    memcpy(&h, (const uint16_t *)W + i, sizeof(h));
    const i32x8 wide = __builtin_convertvector(h, i32x8) << 16;
    v8 f;
    memcpy(&f, &wide, sizeof(f));
    return f;
}

static inline float loadw1(const void *W, i64 i, const int BF) {
    if (!BF) return ((const float *)W)[i];
    const uint32_t bits = (uint32_t)((const uint16_t *)W)[i] << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

/* y[r, j0:j0+VW*8] = bias + x[r] (in) @ W[:, j0:j0+VW*8] for NR rows, the strip starting at element
 * `at` of the packed W: a register tile of NR x VW vectors (NR <= 4, VW <= 3, BF: compile-time
 * constants after inlining). */
static inline __attribute__((always_inline)) void tile(const float *x, const int NR, const int VW, int in, int out,
                                                       const void *W, i64 at, const int BF, const float *bias,
                                                       float *y, int j0) {
    v8 a[4][3];
    for (int r = 0; r < NR; r++)
        for (int v = 0; v < VW; v++) a[r][v] = load8(bias + j0 + 8 * v);
    for (int k = 0; k < in; k++) {
        const i64 row = at + (i64)k * VW * 8; /* the strip is packed: in x (VW * 8), contiguous */
        v8 wv[3];
        for (int v = 0; v < VW; v++) wv[v] = loadw(W, row + 8 * v, BF);
        for (int r = 0; r < NR; r++) {
            const float xk = x[(i64)r * in + k];
            for (int v = 0; v < VW; v++) a[r][v] += xk * wv[v];
        }
    }
    for (int r = 0; r < NR; r++) memcpy(y + (i64)r * out + j0, a[r], VW * sizeof(v8));
}

/* One row (a matrix-vector product) over a strip: the same sums, with four accumulator sets taking
 * every fourth k, so that 4 x VW independent FMA chains hide the FMA latency (one set waits on its own
 * chain: 1.5x slower on L1/L2-resident weights, measured). */
static inline __attribute__((always_inline)) void tile1(const float *x, const int VW, int in, const void *W, i64 at,
                                                        const int BF, const float *bias, float *y, int j0) {
    v8 a[4][3];
    for (int s = 0; s < 4; s++)
        for (int v = 0; v < VW; v++) a[s][v] = (v8){0};
    int k = 0;
    for (; k + 4 <= in; k += 4)
        for (int s = 0; s < 4; s++) {
            const i64 row = at + (i64)(k + s) * VW * 8;
            const float xk = x[k + s];
            for (int v = 0; v < VW; v++) a[s][v] += xk * loadw(W, row + 8 * v, BF);
        }
    for (; k < in; k++) {
        const i64 row = at + (i64)k * VW * 8;
        for (int v = 0; v < VW; v++) a[0][v] += x[k] * loadw(W, row + 8 * v, BF);
    }
    for (int v = 0; v < VW; v++) {
        const v8 t = (a[0][v] + a[1][v]) + (a[2][v] + a[3][v]) + load8(bias + j0 + 8 * v);
        memcpy(y + j0 + 8 * v, &t, sizeof(v8));
    }
}

#define ROW_GROUPS(VW)                                                                                          \
    do {                                                                                                        \
        if (nb == 1) { tile1(x, VW, in, W, at, BF, bias, y, j0); break; }                                      \
        int r0 = 0;                                                                                             \
        for (; r0 + 4 <= nb; r0 += 4) tile(x + (i64)r0 * in, 4, VW, in, out, W, at, BF, bias, y + (i64)r0 * out, j0); \
        switch (nb - r0) {                                                                                      \
            case 3: tile(x + (i64)r0 * in, 3, VW, in, out, W, at, BF, bias, y + (i64)r0 * out, j0); break;       \
            case 2: tile(x + (i64)r0 * in, 2, VW, in, out, W, at, BF, bias, y + (i64)r0 * out, j0); break;       \
            case 1: tile(x + (i64)r0 * in, 1, VW, in, out, W, at, BF, bias, y + (i64)r0 * out, j0); break;       \
            default: break;                                                                                     \
        }                                                                                                       \
    } while (0)

static inline __attribute__((always_inline)) void linear_any(const float *x, int nb, int in, int out, const void *W,
                                                             const int BF, const float *bias, float *y) {
    int j0 = 0;
    i64 at = 0;
    for (; j0 + 24 <= out; j0 += 24, at += (i64)in * 24) ROW_GROUPS(3);
    for (; j0 + 8 <= out; j0 += 8, at += (i64)in * 8) ROW_GROUPS(1);
    for (; j0 < out; j0++, at += in)
        for (int r = 0; r < nb; r++) {
            float acc = bias[j0];
            for (int k = 0; k < in; k++) acc += x[(i64)r * in + k] * loadw1(W, at + k, BF);
            y[(i64)r * out + j0] = acc;
        }
}
#undef ROW_GROUPS

/* y (nb, out) = bias + x (nb, in) @ W (in, out), W packed by apps.sashimi.native.pack_strips (column
 * strips of 24, then 8, then 1, each contiguous) as float32, or as bfloat16 when bf (two weights per
 * float slot of the parameter buffer).  Column strips outside, row groups inside: a strip (in x 24
 * weights) streams from memory once per call and from L1 for the other row groups, so the weights
 * pass through the cache once per step whatever the batch. */
static void linear(const float *x, int nb, int in, int out, const float *W, const float *bias, float *y, int bf) {
    if (bf) linear_any(x, nb, in, out, W, 1, bias, y);
    else linear_any(x, nb, in, out, W, 0, bias, y);
}

static inline float hsum(v8 v) {
    float t = 0.f;
    for (int j = 0; j < 8; j++) t += v[j];
    return t;
}

/* The recurrence of one channel for NR rows (1..4 after inlining).  A channel's parameters are read
 * once per 8 modes and reused by every row of the group; xs[r] is row r's state (M re, then M im),
 * u[r] its input, y[r] receives its output.  q_k = Re(a_k . x) + c_k u, x' = lam x + b u - sum_k G_k q_k,
 * y = Re(C . x') + D u. */
static inline __attribute__((always_inline)) void ssm_rows(float *const *xs, const float *uc, float *yo, const int NR,
                                                           int M, int R, i64 HM2, const float *lr, const float *br,
                                                           const float *a, const float *cq, int H, const float *G,
                                                           const float *C, float D) {
    const float *li = lr + M, *bi = br + M, *ci = C + M;
    const int M8 = M - M % 8;
    float q[4 * (R > 0 ? R : 1)];
    for (int k = 0; k < R; k++) {
        const float *ar = a + k * HM2, *ai = ar + M;
        v8 acc[4];
        for (int r = 0; r < NR; r++) acc[r] = (v8){0};
        int m = 0;
        for (; m < M8; m += 8) {
            const v8 var = load8(ar + m), vai = load8(ai + m);
            for (int r = 0; r < NR; r++) acc[r] += var * load8(xs[r] + m) - vai * load8(xs[r] + M + m);
        }
        for (int r = 0; r < NR; r++) {
            float t = cq[(i64)k * H] * uc[r] + hsum(acc[r]);
            for (int mm = m; mm < M; mm++) t += ar[mm] * xs[r][mm] - ai[mm] * xs[r][M + mm];
            q[r * R + k] = t;
        }
    }
    v8 vout[4];
    for (int r = 0; r < NR; r++) vout[r] = (v8){0};
    int m = 0;
    for (; m < M8; m += 8) {
        const v8 vlr = load8(lr + m), vli = load8(li + m), vbr = load8(br + m), vbi = load8(bi + m);
        const v8 vcr = load8(C + m), vci = load8(ci + m);
        for (int r = 0; r < NR; r++) {
            float *xr = xs[r] + m, *xi = xs[r] + M + m;
            const v8 sr = load8(xr), si = load8(xi);
            v8 nr = vlr * sr - vli * si + vbr * uc[r];
            v8 ni = vlr * si + vli * sr + vbi * uc[r];
            for (int k = 0; k < R; k++) {
                const float *gr = G + k * HM2;
                nr -= load8(gr + m) * q[r * R + k];
                ni -= load8(gr + M + m) * q[r * R + k];
            }
            memcpy(xr, &nr, sizeof(v8));
            memcpy(xi, &ni, sizeof(v8));
            vout[r] += vcr * nr - vci * ni;
        }
    }
    for (int r = 0; r < NR; r++) {
        float out = D * uc[r] + hsum(vout[r]);
        for (int mm = m; mm < M; mm++) {
            float *x = xs[r];
            const float vr = x[mm], vi = x[M + mm];
            float nr = lr[mm] * vr - li[mm] * vi + br[mm] * uc[r];
            float ni = lr[mm] * vi + li[mm] * vr + bi[mm] * uc[r];
            for (int k = 0; k < R; k++) {
                nr -= G[k * HM2 + mm] * q[r * R + k];
                ni -= G[k * HM2 + M + mm] * q[r * R + k];
            }
            x[mm] = nr;
            x[M + mm] = ni;
            out += C[mm] * nr - ci[mm] * ni;
        }
        yo[r] = out;
    }
}

/* x (nb, H) in place; row r's states live at st + r * stride */
static void ssm_block(const i64 *r, const float *w, float *st, i64 stride, float *x, int nb, float eps, int bf) {
    const int H = (int)r[BH], M = (int)r[BM], R = (int)r[BR];
    const float *lam = w + r[P0], *bb = w + r[P1], *a = w + r[P2], *c = w + r[P3], *G = w + r[P4];
    const float *C = w + r[P5], *D = w + r[P6], *W = w + r[P7], *bias = w + r[P8];
    const i64 HM2 = (i64)H * M * 2;
    float u[nb * H], y[nb * H], h[nb * 2 * H];
    PROF_T0;
    layer_norm(x, u, nb, H, w + r[LNW], w + r[LNB], eps);
    PROF(prof_tier(H) * 8 + 0);
    /* channel-major: a channel's parameters stay in L1 while every row of the batch slice uses them */
    for (int ch = 0; ch < H; ch++) {
        const i64 o = (i64)ch * M * 2; /* split layout per feature: M real parts, then M imaginary parts */
        for (int r0 = 0; r0 < nb; r0 += 4) {
            const int NR = nb - r0 < 4 ? nb - r0 : 4;
            float *xs[4];
            float uc[4], yo[4];
            for (int k = 0; k < NR; k++) {
                xs[k] = st + (i64)(r0 + k) * stride + r[SOFF] + o;
                uc[k] = u[(r0 + k) * H + ch];
            }
#define SSM_ROWS(n) ssm_rows(xs, uc, yo, n, M, R, HM2, lam + o, bb + o, a + o, c + ch, H, G + o, C + o, D[ch])
            switch (NR) {
                case 4: SSM_ROWS(4); break;
                case 3: SSM_ROWS(3); break;
                case 2: SSM_ROWS(2); break;
                default: SSM_ROWS(1); break;
            }
#undef SSM_ROWS
            for (int k = 0; k < NR; k++) y[(r0 + k) * H + ch] = yo[k];
        }
    }
    PROF(prof_tier(H) * 8 + 1);
    gelu_inplace(y, nb * H);
    PROF(prof_tier(H) * 8 + 2);
    linear(y, nb, H, 2 * H, W, bias, h, bf);
    PROF(prof_tier(H) * 8 + 3);
    for (int row = 0; row < nb; row++)
        for (int i = 0; i < H; i++) {
            const float *hr = h + (i64)row * 2 * H;
            x[(i64)row * H + i] += hr[i] / (1.0f + expf(-hr[H + i]));
        }
    PROF(prof_tier(H) * 8 + 2);
}

static void ff_block(const i64 *r, const float *w, float *x, int nb, float eps, int bf) {
    const int H = (int)r[BH], E = (int)r[BM];
    float u[nb * H], h[nb * E], y[nb * H];
    PROF_T0;
    layer_norm(x, u, nb, H, w + r[LNW], w + r[LNB], eps);
    PROF(prof_tier(H) * 8 + 4);
    linear(u, nb, H, E, w + r[P0], w + r[P1], h, bf);
    PROF(prof_tier(H) * 8 + 5);
    gelu_inplace(h, nb * E);
    PROF(prof_tier(H) * 8 + 6);
    linear(h, nb, E, H, w + r[P2], w + r[P3], y, bf);
    PROF(prof_tier(H) * 8 + 5);
    for (int i = 0; i < nb * H; i++) x[i] += y[i];
    PROF(prof_tier(H) * 8 + 6);
}

static void run_blocks(const i64 *prog, i64 at, const float *w, float *st, i64 stride, float *x, int nb,
                       float eps) {
    const i64 n = prog[at];
    for (i64 j = 0; j < n; j++) {
        const i64 *r = prog + at + 1 + j * REC;
        if (r[KIND] == 0) ff_block(r, w, x, nb, eps, (int)prog[WBF16]);
        else ssm_block(r, w, st, stride, x, nb, eps, (int)prog[WBF16]);
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
        linear(window, nb, p * H, Hn, w + lv[DW], w + lv[DB], below, (int)prog[WBF16]);
        PROF(24 + i);
        level(prog, i + 1, w, st, stride, below, nb, count, next, eps);
        PROF_RESET;
        linear(below, nb, Hn, p * H, w + lv[UW], w + lv[UB], up, (int)prog[WBF16]);
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
    linear(u, nb, H0, K, w + prog[DECW], w + prog[DECB], logits, (int)prog[WBF16]);
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
 * advanced by the number of model steps taken. */
void sashimi_generate(const i64 *prog, const float *w, float *state, float *logits, i64 *count, i64 *next, int B,
                      int threads, float eps, int steps, const float *uniform, float temperature, float top_p,
                      int step_last, i64 *out, double *loglik) {
    const int K = (int)prog[NCLS], L = (int)prog[NLEV];
    if (steps <= 0) return;
    if (threads > B) threads = B;
    if (threads < 1) threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int t = 0; t < threads; t++) {
        int b0, nb;
        slice_bounds(B, t, threads, &b0, &nb);
        if (nb <= 0) continue;
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
    const int taken = steps - 1 + (step_last != 0);
    for (int s = 0; s < taken; s++) advance(prog, count, next);
}
