/* The gate arithmetic of one time step of asr.gru's forward and backward walks, for rows of one direction.
 *
 * PyTorch runs this step as five or six small element-wise operations on (32, 768) tensors, each paying
 * its own dispatch, and the backward as a dozen more over every step at once; here each is one pass.
 * Built by asr/gru.py with the system C compiler (-O3 -ffast-math: glibc's vector expf/tanhf) and
 * called through ctypes. The matrix products stay in PyTorch (MKL/oneDNN).
 *
 * S is the state dtype (float or double), C the dtype of the matrix products (S, or bf16 under autocast:
 * uint16_t, the top half of a float32, rounded to nearest even on the way down).
 *
 * Saved per row for the backward (5H values): r, z, the n gate, W_hn h + b_hn, and h_prev - n.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef uint16_t bf16;

static inline float bf16_load(bf16 b) {
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline bf16 bf16_store(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

#define SAME_LOAD(x) (x)
#define SAME_STORE(x) (x)

#define GRU_KERNELS(NAME, S, C, LOAD, STORE, EXP, TANH)                                                      \
/* One forward step over n rows: h_prev holds the first n_prev rows' previous states (the rest start from   \
 * zero), gh the first min(n, n_prev) rows' W_hh h_prev + b_hh (the rest are b_hh). Writes the new states   \
 * h (and h_c in the products' dtype), the previous states in that dtype (for the weight gradient) and the  \
 * saved rows. */                                                                                           \
void NAME##_forward(long n, long n_prev, long hidden, const S *gi, const C *gh, const C *b_hh,               \
                    const S *h_prev, S *h, C *h_c, C *h_prev_c, S *saved) {                                  \
    long n_gh = n < n_prev ? n : n_prev;                                                                     \
    for (long i = 0; i < n; i++) {                                                                           \
        const S *g = gi + i * 3 * hidden;                                                                    \
        const C *a = i < n_gh ? gh + i * 3 * hidden : b_hh;                                                  \
        S *sv = saved + i * 5 * hidden;                                                                      \
        _Pragma("omp simd")                                                                                  \
        for (long j = 0; j < hidden; j++) {                                                                  \
            S r = (S)1 / ((S)1 + EXP(-(g[j] + (S)LOAD(a[j]))));                                              \
            S z = (S)1 / ((S)1 + EXP(-(g[hidden + j] + (S)LOAD(a[hidden + j]))));                           \
            S ghn = (S)LOAD(a[2 * hidden + j]);                                                              \
            S ng = TANH(g[2 * hidden + j] + r * ghn);                                                        \
            S hp = i < n_prev ? h_prev[i * hidden + j] : (S)0;                                               \
            S out = ng + z * (hp - ng);                                                                      \
            h[i * hidden + j] = out;                                                                         \
            h_c[i * hidden + j] = STORE(out);                                                                \
            h_prev_c[i * hidden + j] = STORE(hp);                                                            \
            sv[j] = r;                                                                                       \
            sv[hidden + j] = z;                                                                              \
            sv[2 * hidden + j] = ng;                                                                         \
            sv[3 * hidden + j] = ghn;                                                                        \
            sv[4 * hidden + j] = hp - ng;                                                                    \
        }                                                                                                    \
    }                                                                                                        \
}                                                                                                            \
                                                                                                             \
/* One backward step over n rows. carry holds d loss / d state passed back from the later step outside the \
 * product (dh_later * z_later; zero in rows no later step reached); mm holds the product part              \
 * d_gh_later W_hh for its first n_mm rows. Writes d loss / d(W_hh h + b_hh) (d_gh, whose r and z thirds    \
 * are also d loss / d gi's), d loss / d gi's n third (d_n), this step's carry, and adds the bias gradients \
 * into grad_b (d b_hh, 3H, then d b_ih's n third, H). */                                                   \
void NAME##_backward(long n, long n_mm, long hidden, const C *mm, const S *grad_out, const S *saved,         \
                     S *carry, C *d_gh, C *d_n, S *grad_b) {                                                 \
    for (long i = 0; i < n; i++) {                                                                           \
        const S *sv = saved + i * 5 * hidden;                                                                \
        const S *go = grad_out + i * hidden;                                                                 \
        S *c = carry + i * hidden;                                                                           \
        C *dg = d_gh + i * 3 * hidden;                                                                       \
        _Pragma("omp simd")                                                                                  \
        for (long j = 0; j < hidden; j++) {                                                                  \
            S r = sv[j], z = sv[hidden + j], ng = sv[2 * hidden + j];                                        \
            S dh = c[j] + go[j] + (i < n_mm ? (S)LOAD(mm[i * hidden + j]) : (S)0);                           \
            S kn = dh * ((S)1 - z) * ((S)1 - ng * ng);                                                       \
            S dr = kn * sv[3 * hidden + j] * r * ((S)1 - r);                                                 \
            S dz = dh * sv[4 * hidden + j] * z * ((S)1 - z);                                                 \
            S dhn = kn * r;                                                                                  \
            dg[j] = STORE(dr);                                                                               \
            dg[hidden + j] = STORE(dz);                                                                      \
            dg[2 * hidden + j] = STORE(dhn);                                                                 \
            d_n[i * hidden + j] = STORE(kn);                                                                 \
            c[j] = dh * z;                                                                                   \
            grad_b[j] += dr;                                                                                 \
            grad_b[hidden + j] += dz;                                                                        \
            grad_b[2 * hidden + j] += dhn;                                                                   \
            grad_b[3 * hidden + j] += kn;                                                                    \
        }                                                                                                    \
    }                                                                                                        \
}

GRU_KERNELS(f32, float, float, SAME_LOAD, SAME_STORE, expf, tanhf)
GRU_KERNELS(bf16, float, bf16, bf16_load, bf16_store, expf, tanhf)
GRU_KERNELS(f64, double, double, SAME_LOAD, SAME_STORE, exp, tanh)
