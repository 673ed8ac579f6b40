// Testbench of the HLS top e2t_engine: Vitis HLS csim / cosim, and g++ (make -C hls csim-gcc).
//
// A fixed seed drives a small portable PRNG (splitmix64: the same numbers with every compiler and
// standard library) that makes small conv shapes (stride 1 and 2, pad 0 and 1, k 1 and 3, odd
// sizes, batch 1..3, channel counts off the tile grid, the 1x1 / H = W = 1 fully-connected case)
// and operands with extreme values (-128, 127, -32768, 32767). Every op and mode of the engine runs
// on them: CONV_FWD, CONV_BWD_DATA (per-channel weight shifts), CONV_WGRAD in FULL, PSG_ABS
// (T = 0, a middle value, 2^62) and PSG_RATIO, UPDATE with saturating operands, STATS (PRODUCT)
// and APPLY (int8 second source, RELU, MASK, int16 outputs) with int32 extremes, NOP and refused
// calls. The results are compared, integer for integer, with a golden model written here as
// plain int64 loops straight from docs/numerics.md (direct convolution sums, the transposed
// convolution as a scatter, weight-gradient sums, the 4-bit MSB part, per-channel weight
// alignment, PSG selection and tile counts, the sign-momentum update, the per-channel
// statistics and the fused per-element apply of section 9).
//
// Prints one summary line; returns 0 only when every integer matches (1 otherwise, after
// printing the first mismatch). Optional argv[1]: another seed.
//
// The buffers handed to the kernel are plain arrays sized at the m_axi depths of
// engine_config.h (E2T_DEPTH_*), as C/RTL cosimulation requires.
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <string>
#include <vector>

#include "e2t_engine.h"

namespace {

// ---------------------------------------------------------------------------------------------
// Constants of the contract (docs/numerics.md), spelled out here so the golden model does not
// lean on the kernel's headers for anything but the board configuration.
const int MSB_SHIFT = 4;     // x_msb = sat4(rshift_round(x_q, 4))
const int ALIGN_BITS = 12;   // e_ref = max_o e[o] - 12
const int MOM_EXP = -24;     // momentum LSB 2^-24
const int MU_FRAC = 16;      // MU / 2^16
const int WD_FRAC = 32;      // WD / 2^32
const int LR_FRAC = 32;      // LR / 2^32
const int RATIO_FRAC = 16;   // R / 2^16
const int STAT_BITS = 18;    // STATS operands: sat18(rshift_round(v, t))
const int TILE_O = E2T_TILE_O;
const int TILE_I = E2T_TILE_I;

// ---------------------------------------------------------------------------------------------
// PRNG: splitmix64.
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed) {}
    uint64_t next() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    // Uniform integer in [lo, hi] (modulo bias is irrelevant here; determinism is what matters).
    int64_t range(int64_t lo, int64_t hi) { return lo + (int64_t)(next() % (uint64_t)(hi - lo + 1)); }
    // Mostly uniform in [lo, hi]; one value in four is an end of the range.
    int64_t edgy(int64_t lo, int64_t hi) {
        const uint64_t u = next() % 8;
        return u == 0 ? lo : u == 1 ? hi : range(lo, hi);
    }
};

// ---------------------------------------------------------------------------------------------
// Golden model: docs/numerics.md in plain int64.

// Round half up: floor(v / 2^s + 1/2) for s > 0, v * 2^-s for s <= 0. Written without the
// intermediate v + 2^(s-1) so that it is exact for every s; for s >= 63 every operand of the
// contract (|v| < 2^62) rounds to 0.
int64_t rshift_round(int64_t v, int s) {
    if (s <= 0) return v * ((int64_t)1 << -s);
    if (s >= 63) return 0;
    return (v >> s) + ((v >> (s - 1)) & 1);
}

// Clip to the signed `bits`-bit range, counting clipped values.
int64_t saturate(int64_t v, int bits, uint32_t &count) {
    const int64_t hi = (int64_t)((uint64_t)1 << (bits - 1)) - 1, lo = -hi - 1;
    if (v < lo) { count++; return lo; }
    if (v > hi) { count++; return hi; }
    return v;
}

int64_t msb(int64_t x) {
    uint32_t unused = 0;
    return saturate(rshift_round(x, MSB_SHIFT), 4, unused);
}

int64_t sign_of(int64_t v) { return (v > 0) - (v < 0); }
int64_t iabs(int64_t v) { return v < 0 ? -v : v; }

int bitlen(uint64_t n) {
    int b = 0;
    while (n) { b++; n >>= 1; }
    return b;
}

// The output shift that provably keeps results within 32 bits (section 4).
int out_shift(uint64_t bound) { return std::max(0, bitlen(bound) - 31); }

struct Conv {
    int n, c, o, h, w, k, s, p;
    int ho() const { return (h + 2 * p - k) / s + 1; }
    int wo() const { return (w + 2 * p - k) / s + 1; }
    int taps() const { return k * k; }
    size_t n_act() const { return (size_t)n * c * h * w; }
    size_t n_wgt() const { return (size_t)o * c * k * k; }
    size_t n_grad() const { return (size_t)n * o * ho() * wo(); }
    size_t n_out() const { return (size_t)n * o * ho() * wo(); }
};

// x[n][c][iy][ix] on the unpadded grid; 0 in the padding.
int64_t act_at(const Conv &cv, const int8_t *x, int n, int c, int iy, int ix, bool use_msb) {
    if (iy < 0 || iy >= cv.h || ix < 0 || ix >= cv.w) return 0;
    const int64_t v = x[(((size_t)n * cv.c + c) * cv.h + iy) * cv.w + ix];
    return use_msb ? msb(v) : v;
}

// y = sat32(rshift_round(conv(x_q, W_q), r)): direct sums over C_in x k x k.
void ref_fwd(const Conv &cv, const int8_t *x, const int8_t *w, int r, std::vector<int64_t> &y, uint32_t &sat) {
    y.assign(cv.n_out(), 0);
    for (int n = 0; n < cv.n; n++)
        for (int o = 0; o < cv.o; o++)
            for (int yo = 0; yo < cv.ho(); yo++)
                for (int xo = 0; xo < cv.wo(); xo++) {
                    int64_t acc = 0;
                    for (int c = 0; c < cv.c; c++)
                        for (int kh = 0; kh < cv.k; kh++)
                            for (int kw = 0; kw < cv.k; kw++)
                                acc += act_at(cv, x, n, c, yo * cv.s + kh - cv.p, xo * cv.s + kw - cv.p, false) *
                                       w[(((size_t)o * cv.c + c) * cv.k + kh) * cv.k + kw];
                    y[(((size_t)n * cv.o + o) * cv.ho() + yo) * cv.wo() + xo] = saturate(rshift_round(acc, r), 32, sat);
                }
}

// Contract shift of the forward op: bound = 128 * max_o sum |W_q[o]|.
int fwd_shift(const Conv &cv, const int8_t *w) {
    uint64_t best = 0;
    for (int o = 0; o < cv.o; o++) {
        uint64_t sum = 0;
        for (int i = 0; i < cv.c * cv.taps(); i++) sum += (uint64_t)iabs(w[(size_t)o * cv.c * cv.taps() + i]);
        best = std::max(best, sum);
    }
    return out_shift(128 * best);
}

// W_al[o] = rshift_round(W_q[o], e_ref - s[o]), e_ref = max(s) - ALIGN_BITS.
void aligned(const Conv &cv, const int8_t *w, const int8_t *shifts, std::vector<int64_t> &wal) {
    int smax = shifts[0];
    for (int o = 1; o < cv.o; o++) smax = std::max(smax, (int)shifts[o]);
    const int e_ref = smax - ALIGN_BITS;
    wal.assign(cv.n_wgt(), 0);
    for (int o = 0; o < cv.o; o++)
        for (int i = 0; i < cv.c * cv.taps(); i++) {
            const size_t at = (size_t)o * cv.c * cv.taps() + i;
            wal[at] = rshift_round(w[at], e_ref - shifts[o]);
        }
}

// Contract shift of the backward-to-input op: bound = max|g| * max_c sum_{o,taps} |W_al[o, c]|.
int bwd_shift(const Conv &cv, const int16_t *g, const std::vector<int64_t> &wal) {
    uint64_t gmax = 0, best = 0;
    for (size_t i = 0; i < cv.n_grad(); i++) gmax = std::max(gmax, (uint64_t)iabs(g[i]));
    for (int c = 0; c < cv.c; c++) {
        uint64_t sum = 0;
        for (int o = 0; o < cv.o; o++)
            for (int t = 0; t < cv.taps(); t++) sum += (uint64_t)iabs(wal[((size_t)o * cv.c + c) * cv.taps() + t]);
        best = std::max(best, sum);
    }
    return out_shift(gmax * best);
}

// g_x = sat32(rshift_round(conv_transpose(g_q, W_al), r)): every output gradient scattered back
// over its window (the padding rows and columns are dropped).
void ref_bwd(const Conv &cv, const int16_t *g, const std::vector<int64_t> &wal, int r, std::vector<int64_t> &gx,
             uint32_t &sat) {
    std::vector<int64_t> acc(cv.n_act(), 0);
    for (int n = 0; n < cv.n; n++)
        for (int o = 0; o < cv.o; o++)
            for (int yo = 0; yo < cv.ho(); yo++)
                for (int xo = 0; xo < cv.wo(); xo++) {
                    const int64_t gv = g[(((size_t)n * cv.o + o) * cv.ho() + yo) * cv.wo() + xo];
                    for (int c = 0; c < cv.c; c++)
                        for (int kh = 0; kh < cv.k; kh++)
                            for (int kw = 0; kw < cv.k; kw++) {
                                const int iy = yo * cv.s + kh - cv.p, ix = xo * cv.s + kw - cv.p;
                                if (iy < 0 || iy >= cv.h || ix < 0 || ix >= cv.w) continue;
                                acc[(((size_t)n * cv.c + c) * cv.h + iy) * cv.w + ix] +=
                                    gv * wal[(((size_t)o * cv.c + c) * cv.k + kh) * cv.k + kw];
                            }
                }
    gx.assign(cv.n_act(), 0);
    for (size_t i = 0; i < acc.size(); i++) gx[i] = saturate(rshift_round(acc[i], r), 32, sat);
}

// G[o][c][kh][kw] = sum over images and output pixels of g * x (x_msb for the predictor).
void ref_wgrad(const Conv &cv, const int8_t *x, const int16_t *g, bool use_msb, std::vector<int64_t> &G) {
    G.assign(cv.n_wgt(), 0);
    for (int o = 0; o < cv.o; o++)
        for (int c = 0; c < cv.c; c++)
            for (int kh = 0; kh < cv.k; kh++)
                for (int kw = 0; kw < cv.k; kw++) {
                    int64_t acc = 0;
                    for (int n = 0; n < cv.n; n++)
                        for (int yo = 0; yo < cv.ho(); yo++)
                            for (int xo = 0; xo < cv.wo(); xo++)
                                acc += g[(((size_t)n * cv.o + o) * cv.ho() + yo) * cv.wo() + xo] *
                                       act_at(cv, x, n, c, yo * cv.s + kh - cv.p, xo * cv.s + kw - cv.p, use_msb);
                    G[(((size_t)o * cv.c + c) * cv.k + kh) * cv.k + kw] = acc;
                }
}

struct Psg {
    std::vector<int64_t> sign;
    uint32_t sure, tiles, recomputed;
};

// PSG (section 5): sure where |G_msb| >= T (PSG_ABS) or |G_msb| * 2^16 >= R * max|G_msb|
// (PSG_RATIO); sign(G_msb) there, sign(G_full) elsewhere. Tiles of TILE_O x TILE_I channel
// pairs (all taps); a tile holding any unsure entry is recomputed.
Psg ref_psg(const Conv &cv, const std::vector<int64_t> &gm, const std::vector<int64_t> &gf, uint32_t mode,
            uint64_t thr) {
    int64_t gmax = 0;
    for (size_t i = 0; i < gm.size(); i++) gmax = std::max(gmax, iabs(gm[i]));
    Psg r;
    r.sign.assign(gm.size(), 0);
    r.sure = 0;
    const int to_n = (cv.o + TILE_O - 1) / TILE_O, ti_n = (cv.c + TILE_I - 1) / TILE_I;
    std::vector<int> unsure_in_tile((size_t)to_n * ti_n, 0);
    for (int o = 0; o < cv.o; o++)
        for (int c = 0; c < cv.c; c++)
            for (int t = 0; t < cv.taps(); t++) {
                const size_t at = ((size_t)o * cv.c + c) * cv.taps() + t;
                const int64_t a = iabs(gm[at]);
                const bool sure = mode == E2T_WGRAD_PSG_ABS ? a >= (int64_t)thr
                                                            : a * ((int64_t)1 << RATIO_FRAC) >= (int64_t)thr * gmax;
                r.sign[at] = sure ? sign_of(gm[at]) : sign_of(gf[at]);
                r.sure += sure;
                if (!sure) unsure_in_tile[(size_t)(o / TILE_O) * ti_n + c / TILE_I] = 1;
            }
    r.tiles = (uint32_t)(to_n * ti_n);
    r.recomputed = 0;
    for (size_t i = 0; i < unsure_in_tile.size(); i++) r.recomputed += unsure_in_tile[i];
    return r;
}

// The sign-momentum update (section 6), element by element:
//   d   = sign * 2^24 + rshift_round(WD * W, 8 - e_w)
//   buf = sat32(rshift_round(MU * buf, 16) + d)
//   W   = sat32(W - rshift_round(LR * buf, 56 + e_w))
void ref_update(int64_t &w, int64_t &buf, int64_t sign, int e_w, int64_t LR, int64_t WD, int64_t MU, uint32_t &sat) {
    const int64_t d = sign * ((int64_t)1 << -MOM_EXP) + rshift_round(WD * w, WD_FRAC + MOM_EXP - e_w);
    buf = saturate(rshift_round(MU * buf, MU_FRAC) + d, 32, sat);
    w = saturate(w - rshift_round(LR * buf, LR_FRAC - MOM_EXP + e_w), 32, sat);
}

// STATS (section 9.2), per channel: (sum a_t, sum a_t b_t, min a, max a), a_t = sat18(rshift_round(a, t)),
// b_t = sat18(rshift_round(b, u)) (PRODUCT) or a_t (SQUARE); clips of a_t and b_t counted.
void ref_stats(const Conv &cv, const int32_t *a, const int32_t *b, bool product, int t, int u, std::vector<int64_t> &st,
               uint32_t &sat) {
    const size_t plane = (size_t)cv.h * cv.w;
    st.assign((size_t)4 * cv.c, 0);
    for (int c = 0; c < cv.c; c++) {
        int64_t s1 = 0, s2 = 0, lo = INT64_MAX, hi = INT64_MIN;
        for (int n = 0; n < cv.n; n++)
            for (size_t i = 0; i < plane; i++) {
                const size_t at = ((size_t)n * cv.c + c) * plane + i;
                const int64_t at_ = saturate(rshift_round(a[at], t), STAT_BITS, sat);
                const int64_t bt = product ? saturate(rshift_round(b[at], u), STAT_BITS, sat) : at_;
                s1 += at_;
                s2 += at_ * bt;
                lo = std::min(lo, (int64_t)a[at]);
                hi = std::max(hi, (int64_t)a[at]);
            }
        st[4 * c] = s1;
        st[4 * c + 1] = s2;
        st[4 * c + 2] = lo;
        st[4 * c + 3] = hi;
    }
}

// APPLY (section 9.3) with an int8 second source (act): z = sat(max?(rshift_round(M1 a + M2 b + B, S), 0),
// 0 where mask <= 0) to `bits`; per plane (sum, min, max) of z.
void ref_apply(const Conv &cv, const int32_t *a, const int8_t *b, const int8_t *mask, const int64_t *coef, int S,
               bool relu, int bits, std::vector<int64_t> &z, std::vector<int64_t> &st, uint32_t &sat) {
    const size_t plane = (size_t)cv.h * cv.w;
    z.assign(cv.n_act(), 0);
    st.assign((size_t)3 * cv.n * cv.c, 0);
    for (int n = 0; n < cv.n; n++)
        for (int c = 0; c < cv.c; c++) {
            const size_t p = (size_t)n * cv.c + c;
            int64_t sum = 0, lo = INT64_MAX, hi = INT64_MIN;
            for (size_t i = 0; i < plane; i++) {
                const size_t at = p * plane + i;
                int64_t v = rshift_round(coef[3 * c] * a[at] + coef[3 * c + 1] * b[at] + coef[3 * c + 2], S);
                if (relu) v = std::max(v, (int64_t)0);
                if (mask[at] <= 0) v = 0;
                z[at] = saturate(v, bits, sat);
                sum += z[at];
                lo = std::min(lo, z[at]);
                hi = std::max(hi, z[at]);
            }
            st[3 * p] = sum;
            st[3 * p + 1] = lo;
            st[3 * p + 2] = hi;
        }
}

// ---------------------------------------------------------------------------------------------
// The kernel's buffers (DDR in hardware), each at its m_axi depth.
struct Buffers {
    std::vector<int8_t> act, wgt, wshift, sgn, mask, dst8;
    std::vector<int16_t> grad, dst16;
    std::vector<int32_t> out, master, mom, src1, src2;
    std::vector<int64_t> scratch, coef, stats;
    Buffers()
        : act(E2T_DEPTH_ACT), wgt(E2T_DEPTH_WGT), wshift(E2T_DEPTH_WSHIFT), sgn(E2T_DEPTH_SGN), mask(E2T_DEPTH_MASK),
          dst8(E2T_DEPTH_DST8), grad(E2T_DEPTH_GRAD), dst16(E2T_DEPTH_DST16), out(E2T_DEPTH_OUT),
          master(E2T_DEPTH_MASTER), mom(E2T_DEPTH_MOM), src1(E2T_DEPTH_SRC1), src2(E2T_DEPTH_SRC2),
          scratch(E2T_DEPTH_SCRATCH), coef(E2T_DEPTH_COEF), stats(E2T_DEPTH_STATS) {}
    // Outputs start as a pattern no result equals by accident, so a skipped write shows.
    void poison() {
        std::fill(out.begin(), out.end(), (int32_t)0x5A5A5A5A);
        std::fill(sgn.begin(), sgn.end(), (int8_t)0x55);
        std::fill(scratch.begin(), scratch.end(), (int64_t)0x5A5A5A5A5A5A5A5ALL);
        std::fill(dst8.begin(), dst8.end(), (int8_t)0x55);
        std::fill(dst16.begin(), dst16.end(), (int16_t)0x5A5A);
        std::fill(stats.begin(), stats.end(), (int64_t)0x5A5A5A5A5A5A5A5ALL);
    }
};

struct Regs {
    uint32_t op, mode, shift, shift2, count, mu;
    uint64_t threshold, lr, wd;
    int32_t e_w;
    Conv cv;
};

Regs conv_regs(uint32_t op, const Conv &cv) {
    Regs r;
    r.op = op;
    r.mode = r.shift = r.shift2 = r.count = r.mu = 0;
    r.threshold = r.lr = r.wd = 0;
    r.e_w = 0;
    r.cv = cv;
    return r;
}

struct Status {
    uint32_t status, saturations, sure, tiles, recomputed;
};

Status run(const Regs &r, Buffers &b) {
    Status st = {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu};
    e2t_engine(r.op, r.mode, (uint32_t)r.cv.n, (uint32_t)r.cv.c, (uint32_t)r.cv.h, (uint32_t)r.cv.w, (uint32_t)r.cv.o,
               (uint32_t)r.cv.k, (uint32_t)r.cv.s, (uint32_t)r.cv.p, r.shift, r.threshold, r.count, r.e_w, r.lr, r.wd,
               r.mu, b.act.data(), b.wgt.data(), b.wshift.data(), b.grad.data(), b.out.data(), b.sgn.data(),
               b.scratch.data(), b.master.data(), b.mom.data(), &st.status, &st.saturations, &st.sure, &st.tiles,
               &st.recomputed, r.shift2, b.src1.data(), b.src2.data(), b.mask.data(), b.coef.data(), b.dst8.data(),
               b.dst16.data(), b.stats.data());
    return st;
}

// ---------------------------------------------------------------------------------------------
// Comparison bookkeeping.
struct Checker {
    long calls, compared, mismatches;
    std::string call, first;
    Checker() : calls(0), compared(0), mismatches(0) {}

    void begin(const char *fmt, ...) {
        char buf[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        call = buf;
        calls++;
    }
    void eq(const char *what, long index, int64_t got, int64_t want) {
        compared++;
        if (got == want) return;
        if (mismatches++ == 0) {
            char buf[512];
            snprintf(buf, sizeof buf, "%s: %s[%ld] = %lld, expected %lld", call.c_str(), what, index, (long long)got,
                     (long long)want);
            first = buf;
        }
    }
    void status(const Status &st, uint32_t status, uint32_t sat, uint32_t sure, uint32_t tiles, uint32_t recomputed) {
        eq("status", 0, st.status, status);
        eq("saturations", 0, st.saturations, sat);
        eq("psg_sure", 0, st.sure, sure);
        eq("psg_tiles", 0, st.tiles, tiles);
        eq("psg_recomputed", 0, st.recomputed, recomputed);
    }
    template <typename T>
    void array(const char *what, const T *got, const std::vector<int64_t> &want) {
        for (size_t i = 0; i < want.size(); i++) eq(what, (long)i, (int64_t)got[i], want[i]);
    }
};

std::string describe(const Conv &cv) {
    char buf[160];
    snprintf(buf, sizeof buf, "N=%d C=%d O=%d H=%d W=%d k=%d stride=%d pad=%d", cv.n, cv.c, cv.o, cv.h, cv.w, cv.k,
             cv.s, cv.p);
    return buf;
}

void require_fits(const Conv &cv) {
    if (cv.n_act() > (size_t)E2T_DEPTH_ACT || cv.n_wgt() > (size_t)E2T_DEPTH_WGT || cv.n_grad() > (size_t)E2T_DEPTH_GRAD ||
        cv.n_out() > (size_t)E2T_DEPTH_OUT || (size_t)cv.o > (size_t)E2T_DEPTH_WSHIFT) {
        fprintf(stderr, "e2t_engine_tb: shape %s exceeds the m_axi depths of engine_config.h\n", describe(cv).c_str());
        exit(2);
    }
}

// Random operands with extreme values, and per-channel weight shifts 0..20 (differences above
// ALIGN_BITS: some channels are rounded down to the shared exponent).
void fill_operands(Rng &rng, const Conv &cv, Buffers &b) {
    for (size_t i = 0; i < cv.n_act(); i++) b.act[i] = (int8_t)rng.edgy(-128, 127);
    for (size_t i = 0; i < cv.n_wgt(); i++) b.wgt[i] = (int8_t)rng.edgy(-128, 127);
    for (size_t i = 0; i < cv.n_grad(); i++) b.grad[i] = (int16_t)rng.edgy(-32768, 32767);
    for (int o = 0; o < cv.o; o++) b.wshift[o] = (int8_t)rng.range(0, 20);
}

// CONV_FWD with shift r, against the golden sums.
void check_fwd(Checker &ck, Buffers &b, const Conv &cv, int r, const char *label) {
    std::vector<int64_t> want;
    uint32_t sat = 0;
    ref_fwd(cv, b.act.data(), b.wgt.data(), r, want, sat);
    Regs regs = conv_regs(E2T_OP_CONV_FWD, cv);
    regs.shift = (uint32_t)r;
    b.poison();
    ck.begin("CONV_FWD %s r=%d (%s)", describe(cv).c_str(), r, label);
    const Status st = run(regs, b);
    ck.status(st, E2T_STATUS_OK, sat, 0, 0, 0);
    ck.array("y", b.out.data(), want);
}

// CONV_BWD_DATA with shift r (-1: the contract's), against the golden scatter.
void check_bwd(Checker &ck, Buffers &b, const Conv &cv, int r, const char *label) {
    std::vector<int64_t> wal, want;
    aligned(cv, b.wgt.data(), b.wshift.data(), wal);
    if (r < 0) r = bwd_shift(cv, b.grad.data(), wal);
    uint32_t sat = 0;
    ref_bwd(cv, b.grad.data(), wal, r, want, sat);
    Regs regs = conv_regs(E2T_OP_CONV_BWD_DATA, cv);
    regs.shift = (uint32_t)r;
    b.poison();
    ck.begin("CONV_BWD_DATA %s r=%d (%s)", describe(cv).c_str(), r, label);
    const Status st = run(regs, b);
    ck.status(st, E2T_STATUS_OK, sat, 0, 0, 0);
    ck.array("g_x", b.out.data(), want);
}

void check_wgrad_full(Checker &ck, Buffers &b, const Conv &cv) {
    std::vector<int64_t> want;
    ref_wgrad(cv, b.act.data(), b.grad.data(), false, want);
    Regs regs = conv_regs(E2T_OP_CONV_WGRAD, cv);
    regs.mode = E2T_WGRAD_FULL;
    b.poison();
    ck.begin("CONV_WGRAD FULL %s", describe(cv).c_str());
    const Status st = run(regs, b);
    ck.status(st, E2T_STATUS_OK, 0, 0, 0, 0);
    ck.array("G_full", b.scratch.data(), want);
}

// CONV_WGRAD in a PSG mode; returns the golden tile counts.
Psg check_psg(Checker &ck, Buffers &b, const Conv &cv, uint32_t mode, uint64_t thr, const char *label) {
    std::vector<int64_t> gm, gf;
    ref_wgrad(cv, b.act.data(), b.grad.data(), true, gm);
    ref_wgrad(cv, b.act.data(), b.grad.data(), false, gf);
    const Psg want = ref_psg(cv, gm, gf, mode, thr);
    Regs regs = conv_regs(E2T_OP_CONV_WGRAD, cv);
    regs.mode = mode;
    regs.threshold = thr;
    b.poison();
    ck.begin("CONV_WGRAD %s threshold=%llu (%s) %s", mode == E2T_WGRAD_PSG_ABS ? "PSG_ABS" : "PSG_RATIO",
             (unsigned long long)thr, label, describe(cv).c_str());
    const Status st = run(regs, b);
    ck.status(st, E2T_STATUS_OK, 0, want.sure, want.tiles, want.recomputed);
    ck.array("G_msb", b.scratch.data(), gm);
    ck.array("sign", b.sgn.data(), want.sign);
    return want;
}

// The median of |G_msb|: a threshold that splits the entries.
uint64_t median_abs_msb(const Conv &cv, const Buffers &b) {
    std::vector<int64_t> gm;
    ref_wgrad(cv, b.act.data(), b.grad.data(), true, gm);
    for (size_t i = 0; i < gm.size(); i++) gm[i] = iabs(gm[i]);
    std::sort(gm.begin(), gm.end());
    return (uint64_t)gm[gm.size() / 2];
}

// ---------------------------------------------------------------------------------------------
// The cases.

void conv_cases(Checker &ck, Buffers &b, Rng &rng) {
    std::vector<Conv> shapes;
    const Conv fixed[] = {
        {2, 9, 17, 7, 5, 3, 2, 1},   // odd sizes, stride 2, pad 1, channels off the tile grid
        {3, 20, 10, 1, 1, 1, 1, 0},  // fully connected: H = W = 1, k = 1
        {1, 5, 3, 8, 8, 1, 2, 0},    // 1x1, stride 2
        {1, 3, 4, 6, 5, 3, 1, 0},    // 3x3 without padding
        {2, 4, 3, 5, 6, 1, 1, 1},    // 1x1 with padding (a border of zeros in the output)
        {2, 3, 16, 8, 8, 3, 1, 1},   // the stem's: C k <= AI, the weight gradient's kernel rows in lanes
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) shapes.push_back(fixed[i]);
    for (int i = 0; i < 2; i++) {  // random shapes
        Conv cv;
        cv.k = rng.range(0, 1) ? 3 : 1;
        cv.p = cv.k == 3 ? (int)rng.range(0, 1) : 0;
        cv.s = (int)rng.range(1, 2);
        cv.n = (int)rng.range(1, 3);
        cv.c = (int)rng.range(1, 19);
        cv.o = (int)rng.range(1, 19);
        cv.h = (int)rng.range(cv.k, 9);
        cv.w = (int)rng.range(cv.k, 9);
        shapes.push_back(cv);
    }
    for (size_t i = 0; i < shapes.size(); i++) {
        const Conv &cv = shapes[i];
        require_fits(cv);
        fill_operands(rng, cv, b);
        check_fwd(ck, b, cv, fwd_shift(cv, b.wgt.data()), "contract shift");
        check_bwd(ck, b, cv, -1, "contract shift");
        check_wgrad_full(ck, b, cv);
    }
}

// The largest sums: every operand at its most negative value.
void extreme_cases(Checker &ck, Buffers &b) {
    const Conv cv = {2, 20, 17, 5, 5, 3, 1, 1};
    require_fits(cv);
    std::fill(b.act.begin(), b.act.begin() + cv.n_act(), (int8_t)-128);
    std::fill(b.wgt.begin(), b.wgt.begin() + cv.n_wgt(), (int8_t)-128);
    std::fill(b.grad.begin(), b.grad.begin() + cv.n_grad(), (int16_t)-32768);
    std::fill(b.wshift.begin(), b.wshift.begin() + cv.o, (int8_t)3);  // equal shifts: W_al = -128 * 2^12 = -2^19
    check_fwd(ck, b, cv, fwd_shift(cv, b.wgt.data()), "extremes, contract shift");
    check_fwd(ck, b, cv, 5, "extremes, rounding shift 5");
    check_bwd(ck, b, cv, -1, "extremes, contract shift");
    check_bwd(ck, b, cv, 0, "extremes, shift 0: saturates");
    b.wshift[0] = 20;  // channel 0 17 bits above the rest: they are rounded by 5 bits to e_ref
    check_bwd(ck, b, cv, -1, "extremes, one channel 2^17 above the others");
    check_wgrad_full(ck, b, cv);
    check_psg(ck, b, cv, E2T_WGRAD_PSG_RATIO, (uint64_t)1 << RATIO_FRAC, "extremes, ratio 1");
}

void psg_cases(Checker &ck, Buffers &b, Rng &rng) {
    // Random operands: every mode and threshold.
    const Conv cv = {2, 11, 13, 6, 5, 3, 1, 1};
    require_fits(cv);
    fill_operands(rng, cv, b);
    const Psg zero = check_psg(ck, b, cv, E2T_WGRAD_PSG_ABS, 0, "T = 0: all sure");
    const uint64_t mid = median_abs_msb(cv, b);
    check_psg(ck, b, cv, E2T_WGRAD_PSG_ABS, mid, "T = median |G_msb|");
    const Psg never = check_psg(ck, b, cv, E2T_WGRAD_PSG_ABS, (uint64_t)1 << 62, "T = 2^62: never sure");
    check_psg(ck, b, cv, E2T_WGRAD_PSG_RATIO, 19661, "R = 0.3");
    check_psg(ck, b, cv, E2T_WGRAD_PSG_RATIO, 0, "R = 0");
    if (zero.recomputed != 0 || never.recomputed != never.tiles) {
        fprintf(stderr, "e2t_engine_tb: the PSG threshold extremes did not behave as designed\n");
        exit(2);
    }

    // Designed operands: the gradients of the first tile row of output channels are large and
    // positive, all activations positive, the rest small: at a threshold between the two, the
    // first tile row is decided by the predictor and only the other tiles are recomputed.
    const Conv dv = {2, 2 * TILE_I + 3, TILE_O + 5, 5, 5, 3, 2, 1};
    require_fits(dv);
    for (size_t i = 0; i < dv.n_act(); i++) b.act[i] = (int8_t)rng.range(8, 127);
    for (int n = 0; n < dv.n; n++)
        for (int o = 0; o < dv.o; o++)
            for (int i = 0; i < dv.ho() * dv.wo(); i++)
                b.grad[((size_t)n * dv.o + o) * dv.ho() * dv.wo() + i] =
                    (int16_t)(o < TILE_O ? rng.edgy(4096, 32767) : rng.edgy(-32, 32));
    std::vector<int64_t> gm;
    ref_wgrad(dv, b.act.data(), b.grad.data(), true, gm);
    int64_t strong = INT64_MAX, weak = 0;
    for (int o = 0; o < dv.o; o++)
        for (int i = 0; i < dv.c * dv.taps(); i++) {
            const int64_t a = iabs(gm[(size_t)o * dv.c * dv.taps() + i]);
            if (o < TILE_O) strong = std::min(strong, a);
            else weak = std::max(weak, a);
        }
    const Psg split = check_psg(ck, b, dv, E2T_WGRAD_PSG_ABS, (uint64_t)(strong + weak) / 2, "T between the tile rows");
    if (!(split.recomputed > 0 && split.recomputed < split.tiles)) {
        fprintf(stderr, "e2t_engine_tb: the designed PSG case recomputes %u of %u tiles (want some, not all)\n",
                split.recomputed, split.tiles);
        exit(2);
    }
    check_psg(ck, b, dv, E2T_WGRAD_PSG_RATIO, 19661, "R = 0.3, designed");
}

void update_cases(Checker &ck, Buffers &b, Rng &rng) {
    struct Case {
        int e_w;
        uint64_t lr, wd;
        uint32_t mu;
        const char *label;
    };
    const Case cases[] = {
        {-24, 429496730, 429497, 58982, "defaults (lr 0.1, wd 1e-4, momentum 0.9)"},
        {-48, 0x7FFFFFFF, 0x7FFFFFFF, 0xFFFF, "largest constants, smallest exponent"},
        {-30, 0x7FFFFFFF, 0, 0xFFFF, "no weight decay"},
        {7, 0x7FFFFFFF, 0x7FFFFFFF, 0, "e_w 7: shift 56 + e_w = 63"},
        // The largest exponent the engine's argument check lets through: the shift 56 + e_w = 64
        // rounds every lr * buf to 0. The engine may compute that, or refuse the exponent.
        {8, 0x7FFFFFFF, 0x7FFFFFFF, 0, "e_w 8: shift 56 + e_w = 64, or BAD_ARG"},
    };
    const uint32_t count = 37;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const Case &cs = cases[k];
        std::vector<int64_t> w(count), m(count), s(count);
        for (uint32_t i = 0; i < count; i++) {
            w[i] = rng.edgy(INT32_MIN, INT32_MAX);
            m[i] = rng.edgy(INT32_MIN, INT32_MAX);
            s[i] = rng.range(-1, 1);
        }
        w[0] = INT32_MIN; m[0] = INT32_MIN; s[0] = -1;  // both saturate downwards
        w[1] = INT32_MAX; m[1] = INT32_MAX; s[1] = 1;
        w[2] = 0; m[2] = 0; s[2] = 0;
        for (uint32_t i = 0; i < count; i++) {
            b.master[i] = (int32_t)w[i];
            b.mom[i] = (int32_t)m[i];
            b.sgn[i] = (int8_t)s[i];
        }
        for (uint32_t i = count; i < count + 3; i++) b.master[i] = b.mom[i] = 0x13579BDF;  // must stay
        const std::vector<int64_t> w_in(w), m_in(m);
        uint32_t sat = 0;
        for (uint32_t i = 0; i < count; i++) ref_update(w[i], m[i], s[i], cs.e_w, (int64_t)cs.lr, (int64_t)cs.wd, cs.mu, sat);
        w.push_back(0x13579BDF);
        m.push_back(0x13579BDF);
        const Conv none = {0, 0, 0, 0, 0, 0, 0, 0};
        Regs regs = conv_regs(E2T_OP_UPDATE, none);
        regs.count = count;
        regs.e_w = cs.e_w;
        regs.lr = cs.lr;
        regs.wd = cs.wd;
        regs.mu = cs.mu;
        ck.begin("UPDATE count=%u e_w=%d LR=%llu WD=%llu MU=%u (%s)", count, cs.e_w, (unsigned long long)cs.lr,
                 (unsigned long long)cs.wd, cs.mu, cs.label);
        const Status st = run(regs, b);
        if (cs.e_w > 7 && st.status == E2T_STATUS_BAD_ARG) {  // refused: nothing may change
            ck.status(st, E2T_STATUS_BAD_ARG, 0, 0, 0, 0);
            ck.array("master (untouched)", b.master.data(), w_in);
            ck.array("mom (untouched)", b.mom.data(), m_in);
            continue;
        }
        ck.status(st, E2T_STATUS_OK, sat, 0, 0, 0);
        ck.array("master", b.master.data(), w);
        ck.array("mom", b.mom.data(), m);
    }
}

// STATS (PRODUCT) and APPLY (int8 second source from act, RELU, MASK, int16 outputs) on planes of
// 15 elements (no whole number of beats), with int32 extremes, coefficients at their limits and
// clipped values; then refused calls of both ops, which write nothing.
void element_cases(Checker &ck, Buffers &b, Rng &rng) {
    const Conv cv = {2, 5, 0, 3, 5, 0, 0, 0};  // N, C, (O), H, W
    if (cv.n_act() > (size_t)E2T_DEPTH_SRC1 || (size_t)3 * cv.n * cv.c > (size_t)E2T_DEPTH_STATS ||
        (size_t)3 * cv.c > (size_t)E2T_DEPTH_COEF) {
        fprintf(stderr, "e2t_engine_tb: the per-element shape exceeds the m_axi depths of engine_config.h\n");
        exit(2);
    }
    for (size_t i = 0; i < cv.n_act(); i++) {
        b.src1[i] = (int32_t)rng.edgy(INT32_MIN, INT32_MAX);
        b.src2[i] = (int32_t)rng.edgy(INT32_MIN, INT32_MAX);
        b.act[i] = (int8_t)rng.edgy(-128, 127);
        b.mask[i] = (int8_t)rng.range(-2, 2);
    }
    const int64_t m_max = ((int64_t)1 << 24) - 1, b_max = ((int64_t)1 << 56) - 1;
    for (int c = 0; c < cv.c; c++) {
        b.coef[3 * c] = rng.edgy(-m_max, m_max);
        b.coef[3 * c + 1] = rng.edgy(-m_max, m_max);
        b.coef[3 * c + 2] = rng.edgy(-b_max, b_max);
    }
    std::vector<int64_t> want, z;
    uint32_t sat = 0;
    ref_stats(cv, b.src1.data(), b.src2.data(), true, 14, 13, want, sat);
    Regs regs = conv_regs(E2T_OP_STATS, cv);
    regs.mode = E2T_STATS_PRODUCT;
    regs.shift = 14;
    regs.shift2 = 13;
    b.poison();
    ck.begin("STATS PRODUCT t=14 u=13 %s", describe(cv).c_str());
    ck.status(run(regs, b), E2T_STATUS_OK, sat, 0, 0, 0);
    ck.array("stats", b.stats.data(), want);

    sat = 0;
    ref_apply(cv, b.src1.data(), b.act.data(), b.mask.data(), b.coef.data(), 40, true, 16, z, want, sat);
    regs = conv_regs(E2T_OP_APPLY, cv);
    regs.mode = (E2T_APPLY_SRC2_INT8 << E2T_APPLY_SRC2_SHIFT) | (E2T_APPLY_RELU_ON << E2T_APPLY_RELU_SHIFT) |
                (E2T_APPLY_MASK_ON << E2T_APPLY_MASK_SHIFT) | (E2T_APPLY_OUT_INT16 << E2T_APPLY_OUT_SHIFT);
    regs.shift = 40;
    b.poison();
    ck.begin("APPLY int8 b, RELU, MASK, int16 out, S=40 %s", describe(cv).c_str());
    ck.status(run(regs, b), E2T_STATUS_OK, sat, 0, 0, 0);
    ck.array("z", b.dst16.data(), z);
    ck.array("plane stats", b.stats.data(), want);
    ck.eq("dst8 (untouched)", 0, b.dst8[0], (int8_t)0x55);
    ck.eq("out (untouched)", 0, b.out[0], (int32_t)0x5A5A5A5A);

    // Refused: shift2 63 (STATS), a mode bit above the fields and a coefficient B = 2^56 (APPLY), N = 0.
    const uint32_t apply_mode = regs.mode;
    for (int k = 0; k < 4; k++) {
        regs = conv_regs(k == 0 || k == 3 ? E2T_OP_STATS : E2T_OP_APPLY, cv);
        regs.shift2 = k == 0 ? 63 : 0;
        regs.mode = k == 1 ? apply_mode | (1u << E2T_APPLY_MODE_BITS) : k == 2 ? apply_mode : 0;
        if (k == 2) b.coef[3 * (cv.c - 1) + 2] = b_max + 1;
        if (k == 3) regs.cv.n = 0;
        b.poison();
        ck.begin("refused %s (case %d)", k == 0 || k == 3 ? "STATS" : "APPLY", k);
        ck.status(run(regs, b), k == 3 ? E2T_STATUS_BAD_SHAPE : E2T_STATUS_BAD_ARG, 0, 0, 0, 0);
        ck.eq("stats (untouched)", 0, b.stats[0], (int64_t)0x5A5A5A5A5A5A5A5ALL);
        ck.eq("dst16 (untouched)", 0, b.dst16[0], (int16_t)0x5A5A);
    }
}

// NOP and calls the engine must refuse (register map: status codes).
void status_cases(Checker &ck, Buffers &b) {
    const Conv ok = {1, 4, 2, 4, 4, 3, 1, 1};
    struct Case {
        uint32_t op, mode, shift;
        uint64_t threshold;
        Conv cv;
        uint32_t status;
        const char *label;
    };
    const Conv wide = {1, E2T_MAX_C + 1, 2, 4, 4, 3, 1, 1}, stride3 = {1, 4, 2, 4, 4, 3, 3, 1};
    const Conv bigk = {1, 4, 2, 4, 4, E2T_MAX_K + 1, 1, 0}, tiny = {1, 4, 2, 1, 1, 3, 1, 0};
    // Input within E2T_MAX_H x E2T_MAX_W, but k = 1 and pad 1 make the output map one row and one
    // column larger than the on-chip tiles (31 x 31 -> 33 x 33 on the boards here).
    const Conv bigmap = {1, 1, 1, E2T_MAX_HO - 1, E2T_MAX_WO - 1, 1, 1, 1};
    const Case cases[] = {
        {E2T_OP_NOP, 0, 0, 0, ok, E2T_STATUS_OK, "NOP"},
        {9, 0, 0, 0, ok, E2T_STATUS_BAD_OP, "unknown op"},
        {E2T_OP_CONV_FWD, 0, 0, 0, wide, E2T_STATUS_BAD_SHAPE, "C_in above E2T_MAX_C"},
        {E2T_OP_CONV_FWD, 0, 0, 0, stride3, E2T_STATUS_BAD_SHAPE, "stride 3"},
        {E2T_OP_CONV_BWD_DATA, 0, 0, 0, bigk, E2T_STATUS_BAD_SHAPE, "k above E2T_MAX_K"},
        {E2T_OP_CONV_WGRAD, 0, 0, 0, tiny, E2T_STATUS_BAD_SHAPE, "kernel larger than the padded input"},
        {E2T_OP_CONV_FWD, 0, 0, 0, bigmap, E2T_STATUS_BAD_SHAPE, "output map past E2T_MAX_HO x E2T_MAX_WO"},
        {E2T_OP_CONV_BWD_DATA, 0, 0, 0, bigmap, E2T_STATUS_BAD_SHAPE, "output map past E2T_MAX_HO x E2T_MAX_WO"},
        {E2T_OP_CONV_WGRAD, 0, 0, 0, bigmap, E2T_STATUS_BAD_SHAPE, "output map past E2T_MAX_HO x E2T_MAX_WO"},
        {E2T_OP_CONV_FWD, 0, 63, 0, ok, E2T_STATUS_BAD_ARG, "shift 63"},
        {E2T_OP_CONV_WGRAD, 3, 0, 0, ok, E2T_STATUS_BAD_ARG, "unknown mode"},
        {E2T_OP_CONV_WGRAD, E2T_WGRAD_PSG_RATIO, 0, ((uint64_t)1 << RATIO_FRAC) + 1, ok, E2T_STATUS_BAD_ARG,
         "ratio above 1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const Case &cs = cases[i];
        Regs regs = conv_regs(cs.op, cs.cv);
        regs.mode = cs.mode;
        regs.shift = cs.shift;
        regs.threshold = cs.threshold;
        b.poison();
        ck.begin("op=%u mode=%u %s (%s)", cs.op, cs.mode, describe(cs.cv).c_str(), cs.label);
        const Status st = run(regs, b);
        ck.status(st, cs.status, 0, 0, 0, 0);
        ck.eq("out (untouched)", 0, b.out[0], (int32_t)0x5A5A5A5A);
    }
    Regs regs = conv_regs(E2T_OP_UPDATE, ok);
    regs.count = 1;
    regs.e_w = -49;  // below MASTER_EXP_MIN
    ck.begin("UPDATE e_w=-49 (below MASTER_EXP_MIN)");
    ck.status(run(regs, b), E2T_STATUS_BAD_ARG, 0, 0, 0, 0);

    // A sign input outside {-1, 0, +1} (here 2, the last of the elements): refused before any
    // master weight or momentum changes.
    const uint32_t count = 9;
    std::vector<int64_t> w_in(count), m_in(count);
    for (uint32_t i = 0; i < count; i++) {
        b.master[i] = (int32_t)(0x01234567 + 977 * (int32_t)i);
        b.mom[i] = (int32_t)(-0x00765432 - 131 * (int32_t)i);
        b.sgn[i] = (int8_t)((int)(i % 3) - 1);
        w_in[i] = b.master[i];
        m_in[i] = b.mom[i];
    }
    b.sgn[count - 1] = 2;
    regs = conv_regs(E2T_OP_UPDATE, ok);
    regs.count = count;
    regs.e_w = -24;
    regs.lr = 429496730;
    regs.wd = 429497;
    regs.mu = 58982;
    ck.begin("UPDATE count=%u with sign 2 (outside {-1, 0, +1})", count);
    ck.status(run(regs, b), E2T_STATUS_BAD_ARG, 0, 0, 0, 0);
    ck.array("master (untouched)", b.master.data(), w_in);
    ck.array("mom (untouched)", b.mom.data(), m_in);
}

}  // namespace

int main(int argc, char **argv) {
    const uint64_t seed = argc > 1 ? strtoull(argv[1], 0, 0) : 20240611ULL;
    Rng rng(seed);
    Buffers b;
    Checker ck;
    conv_cases(ck, b, rng);
    extreme_cases(ck, b);
    psg_cases(ck, b, rng);
    update_cases(ck, b, rng);
    element_cases(ck, b, rng);
    status_cases(ck, b);
#ifdef E2T_AP_TYPES
    const char *types = "ap_int types";
#else
    const char *types = "native types";
#endif
    printf("e2t_engine_tb: board %s, tiles %dx%d, %s, seed %llu: %ld calls, %ld integers compared, %ld mismatches: %s\n",
           E2T_BOARD, TILE_O, TILE_I, types, (unsigned long long)seed, ck.calls, ck.compared, ck.mismatches,
           ck.mismatches ? "FAIL" : "PASS");
    if (ck.mismatches) {
        printf("e2t_engine_tb: first mismatch: %s\n", ck.first.c_str());
        return 1;
    }
    return 0;
}
