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
#include <string.h>

typedef int64_t i64;

/* block record layout in the program (REC ints each) */
enum { KIND, BH, BM, BR, LNW, LNB, P0, P1, P2, P3, P4, P5, P6, P7, P8, SOFF, REC };
/* level record layout */
enum { LP, LH, DW, DB, UW, UB, DBUF, PEND, DBLK, UBLK, LREC };
/* header */
enum { NLEV, NCLS, D0, EMB, FLNW, FLNB, DECW, DECB, SSTRIDE, CENTER_H, CENTER_BLK, HEAD };

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

#define TB 4  /* rows per register tile */
#define TJ 16 /* outputs per register tile */

/* y (nb, out) = bias + x (nb, in) @ W (in, out): register tiles of TB rows x TJ outputs, so that each
 * row of W is loaded once per tile and reused by every row of the batch slice. */
static void linear(const float *x, int nb, int in, int out, const float *W, const float *bias, float *y) {
    int r0 = 0;
    for (; r0 + TB <= nb; r0 += TB) {
        int j0 = 0;
        for (; j0 + TJ <= out; j0 += TJ) {
            v8 acc[TB][2];
            for (int r = 0; r < TB; r++) { acc[r][0] = load8(bias + j0); acc[r][1] = load8(bias + j0 + 8); }
            for (int k = 0; k < in; k++) {
                const float *row = W + (i64)k * out + j0;
                const v8 w0 = load8(row), w1 = load8(row + 8);
                for (int r = 0; r < TB; r++) {
                    const float xk = x[(i64)(r0 + r) * in + k];
                    acc[r][0] += xk * w0;
                    acc[r][1] += xk * w1;
                }
            }
            for (int r = 0; r < TB; r++) {
                memcpy(y + (i64)(r0 + r) * out + j0, &acc[r][0], sizeof(v8));
                memcpy(y + (i64)(r0 + r) * out + j0 + 8, &acc[r][1], sizeof(v8));
            }
        }
        for (int r = r0; r < r0 + TB; r++)
            for (int j = j0; j < out; j++) {
                float acc = bias[j];
                for (int k = 0; k < in; k++) acc += x[(i64)r * in + k] * W[(i64)k * out + j];
                y[(i64)r * out + j] = acc;
            }
    }
    for (; r0 < nb; r0++) { /* leftover rows, one at a time */
        int j0 = 0;
        for (; j0 + TJ <= out; j0 += TJ) {
            v8 a0 = load8(bias + j0), a1 = load8(bias + j0 + 8);
            for (int k = 0; k < in; k++) {
                const float xk = x[(i64)r0 * in + k];
                const float *row = W + (i64)k * out + j0;
                a0 += xk * load8(row);
                a1 += xk * load8(row + 8);
            }
            memcpy(y + (i64)r0 * out + j0, &a0, sizeof(v8));
            memcpy(y + (i64)r0 * out + j0 + 8, &a1, sizeof(v8));
        }
        for (int j = j0; j < out; j++) {
            float acc = bias[j];
            for (int k = 0; k < in; k++) acc += x[(i64)r0 * in + k] * W[(i64)k * out + j];
            y[(i64)r0 * out + j] = acc;
        }
    }
}

/* x (nb, H) in place; row r's states live at st + r * stride */
static void ssm_block(const i64 *r, const float *w, float *st, i64 stride, float *x, int nb, float eps) {
    const int H = (int)r[BH], M = (int)r[BM], R = (int)r[BR];
    const float *lam = w + r[P0], *bb = w + r[P1], *a = w + r[P2], *c = w + r[P3], *G = w + r[P4];
    const float *C = w + r[P5], *D = w + r[P6], *W = w + r[P7], *bias = w + r[P8];
    float u[nb * H], y[nb * H], h[nb * 2 * H];
    layer_norm(x, u, nb, H, w + r[LNW], w + r[LNB], eps);
    const int M8 = M - M % 8;
    for (int row = 0; row < nb; row++) {
        float *s = st + row * stride + r[SOFF];
        for (int ch = 0; ch < H; ch++) {
            /* split layout per feature: M real parts, then M imaginary parts */
            const i64 o = (i64)ch * M * 2;
            float *xr = s + o, *xi = s + o + M;
            const float *lr = lam + o, *li = lam + o + M, *br = bb + o, *bi = bb + o + M;
            const float *cr = C + o, *ci = C + o + M;
            const float uc = u[row * H + ch];
            float q[R > 0 ? R : 1];
            for (int k = 0; k < R; k++) {
                const float *ar = a + (i64)k * H * M * 2 + o, *ai = ar + M;
                v8 acc = {0};
                int m = 0;
                for (; m < M8; m += 8) acc += load8(ar + m) * load8(xr + m) - load8(ai + m) * load8(xi + m);
                float tot = c[k * H + ch] * uc;
                for (int j = 0; j < 8; j++) tot += acc[j];
                for (; m < M; m++) tot += ar[m] * xr[m] - ai[m] * xi[m];
                q[k] = tot;
            }
            v8 vout = {0};
            int m = 0;
            for (; m < M8; m += 8) {
                const v8 vr = load8(xr + m), vi = load8(xi + m), vlr = load8(lr + m), vli = load8(li + m);
                v8 nr = vlr * vr - vli * vi + load8(br + m) * uc;
                v8 ni = vlr * vi + vli * vr + load8(bi + m) * uc;
                for (int k = 0; k < R; k++) {
                    const float *gr = G + (i64)k * H * M * 2 + o;
                    nr -= load8(gr + m) * q[k];
                    ni -= load8(gr + M + m) * q[k];
                }
                memcpy(xr + m, &nr, sizeof(v8));
                memcpy(xi + m, &ni, sizeof(v8));
                vout += load8(cr + m) * nr - load8(ci + m) * ni;
            }
            float out = D[ch] * uc;
            for (int j = 0; j < 8; j++) out += vout[j];
            for (; m < M; m++) {
                const float vr = xr[m], vi = xi[m];
                float nr = lr[m] * vr - li[m] * vi + br[m] * uc;
                float ni = lr[m] * vi + li[m] * vr + bi[m] * uc;
                for (int k = 0; k < R; k++) {
                    const float *gr = G + (i64)k * H * M * 2 + o;
                    nr -= gr[m] * q[k];
                    ni -= gr[M + m] * q[k];
                }
                xr[m] = nr;
                xi[m] = ni;
                out += cr[m] * nr - ci[m] * ni;
            }
            y[row * H + ch] = out;
        }
    }
    gelu_inplace(y, nb * H);
    linear(y, nb, H, 2 * H, W, bias, h);
    for (int row = 0; row < nb; row++)
        for (int i = 0; i < H; i++) {
            const float *hr = h + (i64)row * 2 * H;
            x[(i64)row * H + i] += hr[i] / (1.0f + expf(-hr[H + i]));
        }
}

static void ff_block(const i64 *r, const float *w, float *x, int nb, float eps) {
    const int H = (int)r[BH], E = (int)r[BM];
    float u[nb * H], h[nb * E], y[nb * H];
    layer_norm(x, u, nb, H, w + r[LNW], w + r[LNB], eps);
    linear(u, nb, H, E, w + r[P0], w + r[P1], h);
    gelu_inplace(h, nb * E);
    linear(h, nb, E, H, w + r[P2], w + r[P3], y);
    for (int i = 0; i < nb * H; i++) x[i] += y[i];
}

static void run_blocks(const i64 *prog, i64 at, const float *w, float *st, i64 stride, float *x, int nb,
                       float eps) {
    const i64 n = prog[at];
    for (i64 j = 0; j < n; j++) {
        const i64 *r = prog + at + 1 + j * REC;
        if (r[KIND] == 0) ff_block(r, w, x, nb, eps);
        else ssm_block(r, w, st, stride, x, nb, eps);
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
        linear(window, nb, p * H, Hn, w + lv[DW], w + lv[DB], below);
        level(prog, i + 1, w, st, stride, below, nb, count, next, eps);
        linear(below, nb, Hn, p * H, w + lv[UW], w + lv[UB], up);
        for (int row = 0; row < nb; row++)
            memcpy(st + row * stride + lv[PEND], up + (i64)row * p * H, sizeof(float) * p * H);
    }
    memcpy(x, skip, sizeof(float) * nb * H);
    run_blocks(prog, lv[UBLK], w, st, stride, x, nb, eps);
    for (int k = 0; k < nb * H; k++) x[k] += skip[k];
}

/* One step for the batch: tokens (B,) -> logits (B, K); count/next: the pooling phases (updated). */
void sashimi_step(const i64 *prog, const float *w, float *state, const i64 *tokens, float *logits,
                  i64 *count, i64 *next, int B, int threads, float eps) {
    const int L = (int)prog[NLEV], K = (int)prog[NCLS], H0 = (int)prog[D0];
    const i64 stride = prog[SSTRIDE];
    if (threads > B) threads = B;
    if (threads < 1) threads = 1;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int t = 0; t < threads; t++) { /* contiguous batch slices, one per thread */
        const int b0 = (int)((i64)B * t / threads), b1 = (int)((i64)B * (t + 1) / threads), nb = b1 - b0;
        if (nb <= 0) continue;
        float x[nb * H0], u[nb * H0];
        for (int r = 0; r < nb; r++) memcpy(x + (i64)r * H0, w + prog[EMB] + tokens[b0 + r] * H0, sizeof(float) * H0);
        level(prog, 0, w, state + b0 * stride, stride, x, nb, count, next, eps);
        layer_norm(x, u, nb, H0, w + prog[FLNW], w + prog[FLNB], eps);
        linear(u, nb, H0, K, w + prog[DECW], w + prog[DECB], logits + (i64)b0 * K);
    }
    for (int i = 0; i < L; i++) {
        const int p = (int)prog[HEAD + (i64)i * LREC + LP];
        const int emitted = count[i] + 1 == p;
        count[i] = emitted ? 0 : count[i] + 1;
        next[i] = next[i] + 1 == p ? 0 : next[i] + 1;
        if (!emitted) break; /* deeper levels did not step */
    }
}
