// The e2t training engine: one HLS top function, driven through AXI-Lite registers
// (hls/include/e2t_regs.h, generated from hls/regmap.py) on buffers in DDR.
//
// Arithmetic: docs/numerics.md. Types: with E2T_AP_TYPES defined, the HLS arbitrary-precision
// types at the widths of engine_config.h (the bit-true build, and what Vitis HLS synthesizes);
// without, plain C++ integers (the fast native build). Both give the same integers whenever
// the sums stay within the configured accumulator widths, which the shape checks guarantee.
#ifndef E2T_ENGINE_H
#define E2T_ENGINE_H

#include <stdint.h>

#include "engine_config.h"
#include "e2t_regs.h"

#ifdef E2T_AP_TYPES
#include <ap_int.h>
typedef ap_int<8> act_t;                       // x_q and x_msb
typedef ap_int<8> wgt_t;                       // W_q
typedef ap_int<20> wal_t;                      // W_q aligned by up to 2^12 (backward to the input)
typedef ap_int<16> grad_t;                     // g_q
typedef ap_int<E2T_ACC_FWD_BITS> acc_fwd_t;    // forward sums
typedef ap_int<E2T_ACC_WIDE_BITS> acc_wide_t;  // backward and weight-gradient sums
#else
typedef int8_t act_t;
typedef int8_t wgt_t;
typedef int32_t wal_t;
typedef int16_t grad_t;
typedef int32_t acc_fwd_t;
typedef int64_t acc_wide_t;
#endif

void e2t_engine(uint32_t op, uint32_t mode, uint32_t batch, uint32_t c_in, uint32_t h_in, uint32_t w_in,
                uint32_t c_out, uint32_t kernel, uint32_t stride, uint32_t pad, uint32_t shift, uint64_t threshold,
                uint32_t count, int32_t e_w, uint64_t lr, uint64_t wd, uint32_t mu,
                const int8_t *act, const int8_t *wgt, const int8_t *wshift, const int16_t *grad, int32_t *out,
                int8_t *sgn, int64_t *scratch, int32_t *master, int32_t *mom,
                uint32_t *status, uint32_t *saturations, uint32_t *psg_sure, uint32_t *psg_tiles,
                uint32_t *psg_recomputed, uint32_t shift2, const int32_t *src1, const int32_t *src2,
                const int8_t *mask, const int64_t *coef, int8_t *dst8, int16_t *dst16, int64_t *stats);

#endif  // E2T_ENGINE_H
