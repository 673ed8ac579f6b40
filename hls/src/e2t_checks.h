// Which register settings the engine accepts: shared by the HLS kernel (e2t_engine.cpp) and the
// fast CPU build (hls/fast/e2t_fast.cpp), so both refuse exactly the same calls with the same code.
#ifndef E2T_CHECKS_H
#define E2T_CHECKS_H

#include <stdint.h>

#include "e2t_numerics.h"
#include "e2t_regs.h"
#include "engine_config.h"

namespace e2t {

// A conv call's shape registers, with the output size derived by shape_ok.
struct Shape {
    int n, c, h, w, o, k, s, p, ho, wo;
    int hp() const { return h + 2 * p; }
    int wp() const { return w + 2 * p; }
};

// a * b for 0 <= a, 0 <= b < 2^16, by shift and add: the checks (and the kernel's per-call
// sizes) need a few products of register values, and a sequential adder costs no DSP slice.
static inline int64_t mul16(int64_t a, int64_t b) {
    int64_t r = 0;
MUL16:
    for (int i = 0; i < 16; i++) {
#pragma HLS PIPELINE II = 1
        if ((b >> i) & 1) r += a << i;
    }
    return r;
}

// The registers describe a conv the buffers can hold and the accumulators can sum exactly.
// Division by the stride (1 or 2) is a shift; products go through mul16 (no multiplier).
static inline bool shape_ok(Shape &sh, uint32_t op) {
    if (sh.n < 1 || sh.n > E2T_MAX_BATCH || sh.c < 1 || sh.c > E2T_MAX_C || sh.o < 1 || sh.o > E2T_MAX_C) return false;
    if (sh.h < 1 || sh.h > E2T_MAX_H || sh.w < 1 || sh.w > E2T_MAX_W || sh.k < 1 || sh.k > E2T_MAX_K) return false;
    if ((sh.s != 1 && sh.s != 2) || sh.p < 0 || sh.p > E2T_MAX_PAD || sh.hp() < sh.k || sh.wp() < sh.k) return false;
    sh.ho = ((sh.hp() - sh.k) >> (sh.s - 1)) + 1;
    sh.wo = ((sh.wp() - sh.k) >> (sh.s - 1)) + 1;
    if (sh.ho > E2T_MAX_HO || sh.wo > E2T_MAX_WO) return false;  // the output tiles hold E2T_MAX_HO x E2T_MAX_WO
    const int64_t taps = mul16(sh.k, sh.k);
    if (op == E2T_OP_CONV_FWD) return mul16(sh.c, taps) < ((int64_t)1 << (E2T_ACC_FWD_BITS - 15));     // |x W| <= 2^14
    if (op == E2T_OP_CONV_BWD_DATA) return mul16(sh.o, taps) < ((int64_t)1 << (E2T_ACC_WIDE_BITS - 35));  // |g W_al| <= 2^34
    return mul16(mul16(sh.n, sh.ho), sh.wo) < ((int64_t)1 << (E2T_ACC_WIDE_BITS - 23));                 // |x g| <= 2^22
}

// Per-channel weight shifts of CONV_BWD_DATA lie in [0, WSHIFT_MAX], so alignment shifts stay small.
static inline bool wshift_ok(const int8_t *wshift, int o) {
    bool ok = true;
CHECK_WSHIFT:
    for (int i = 0; i < o; i++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_C
        ok &= wshift[i] >= 0 && wshift[i] <= WSHIFT_MAX;
    }
    return ok;
}

// Sign inputs of UPDATE lie in {-1, 0, +1}: anything else is refused before a weight changes.
static inline bool signs_ok(const int8_t *sgn, uint32_t count) {
    bool ok = true;
CHECK_SIGNS:
    for (uint32_t i = 0; i < count; i++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_DEPTH_MASTER
#pragma HLS PIPELINE II = 1
        ok &= sgn[i] >= -1 && sgn[i] <= 1;
    }
    return ok;
}

// APPLY's coefficients (docs/numerics.md, section 9): |M1|, |M2| < 2^COEF_M_BITS, |B| < 2^COEF_B_BITS.
static inline bool coef_ok(const int64_t *coef, int c) {
    bool ok = true;
CHECK_COEF:
    for (int i = 0; i < 3 * c; i++) {
#pragma HLS LOOP_TRIPCOUNT max = 3 * E2T_MAX_C
#pragma HLS PIPELINE II = 1
        const int64_t v = coef[i];
        const int bits = i % 3 == 2 ? COEF_B_BITS : COEF_M_BITS;
        ok &= v > -((int64_t)1 << bits) && v < ((int64_t)1 << bits);
    }
    return ok;
}

// APPLY's mode register: a known second source and output, nothing above the fields.
static inline bool apply_mode_ok(uint32_t mode) {
    const uint32_t src2 = (mode >> E2T_APPLY_SRC2_SHIFT) & E2T_APPLY_SRC2_MASK;
    const uint32_t out = (mode >> E2T_APPLY_OUT_SHIFT) & E2T_APPLY_OUT_MASK;
    return (mode >> E2T_APPLY_MODE_BITS) == 0 && src2 <= E2T_APPLY_SRC2_INT8 && out <= E2T_APPLY_OUT_INT32;
}

// The status an op gets before it runs: OK, or why it is refused. Fills in `sh` for conv ops.
static inline uint32_t check_call(uint32_t op, uint32_t mode, uint32_t batch, uint32_t c_in, uint32_t h_in, uint32_t w_in,
                           uint32_t c_out, uint32_t kernel, uint32_t stride, uint32_t pad, uint32_t shift,
                           uint64_t threshold, uint32_t count, int32_t e_w, uint64_t lr, uint64_t wd, uint32_t mu,
                           const int8_t *wshift, const int8_t *sgn, uint32_t shift2, const int64_t *coef, Shape &sh) {
    sh.n = (int)batch; sh.c = (int)c_in; sh.h = (int)h_in; sh.w = (int)w_in; sh.o = (int)c_out;
    sh.k = (int)kernel; sh.s = (int)stride; sh.p = (int)pad; sh.ho = sh.wo = 0;
    const bool conv = op == E2T_OP_CONV_FWD || op == E2T_OP_CONV_BWD_DATA || op == E2T_OP_CONV_WGRAD;
    const bool elem = op == E2T_OP_STATS || op == E2T_OP_APPLY;  // per-element ops over N x C x H x W
    if (op != E2T_OP_NOP && op != E2T_OP_UPDATE && !conv && !elem) return E2T_STATUS_BAD_OP;
    if (elem) {
        if (batch < 1 || batch > E2T_MAX_BATCH || c_in < 1 || c_in > E2T_MAX_C || h_in < 1 || h_in > E2T_MAX_H ||
            w_in < 1 || w_in > E2T_MAX_W)
            return E2T_STATUS_BAD_SHAPE;
        if (shift > SHIFT_MAX) return E2T_STATUS_BAD_ARG;
        if (op == E2T_OP_STATS)
            return mode > E2T_STATS_PRODUCT || shift2 > SHIFT_MAX ? E2T_STATUS_BAD_ARG : E2T_STATUS_OK;
        return apply_mode_ok(mode) && coef_ok(coef, sh.c) ? E2T_STATUS_OK : E2T_STATUS_BAD_ARG;
    }
    if (conv && (batch > E2T_MAX_BATCH || c_in > E2T_MAX_C || c_out > E2T_MAX_C || h_in > E2T_MAX_H ||
                 w_in > E2T_MAX_W || kernel > E2T_MAX_K || !shape_ok(sh, op)))
        return E2T_STATUS_BAD_SHAPE;
    if ((op == E2T_OP_CONV_FWD || op == E2T_OP_CONV_BWD_DATA) && shift > 62) return E2T_STATUS_BAD_ARG;
    if (op == E2T_OP_CONV_BWD_DATA && !wshift_ok(wshift, sh.o)) return E2T_STATUS_BAD_ARG;
    if (op == E2T_OP_CONV_WGRAD && (mode > E2T_WGRAD_PSG_RATIO || threshold > ((uint64_t)1 << 62) ||
                                    (mode == E2T_WGRAD_PSG_RATIO && threshold > ((uint64_t)1 << RATIO_FRAC))))
        return E2T_STATUS_BAD_ARG;
    if (op == E2T_OP_UPDATE && (e_w < MASTER_EXP_MIN || e_w > MASTER_EXP_MAX || lr >= ((uint64_t)1 << 31) ||
                                wd >= ((uint64_t)1 << 31) || mu >= ((uint32_t)1 << MU_FRAC) || !signs_ok(sgn, count)))
        return E2T_STATUS_BAD_ARG;
    return E2T_STATUS_OK;
}

}  // namespace e2t

#endif  // E2T_CHECKS_H
