// e2t_engine: the training engine's HLS top function (see e2t_engine.h and docs/numerics.md).
//
// Every op walks the channel grid in tiles of E2T_TILE_O x E2T_TILE_I channels, keeps a tile of
// the input (zero-padded) and of the gradient on chip, and runs a pipelined loop over kernel
// taps and output pixels whose body multiplies all channel pairs of the tile at once (the
// unrolled inner loops). Sums are exact at the widths of engine_config.h; outputs are rounded
// with the shift the host passes, weight gradients never leave as magnitudes (PSG writes signs).
#include "e2t_engine.h"

#include "e2t_checks.h"
#include "e2t_numerics.h"

#ifdef E2T_AP_TYPES
#define E2T_I64(v) ((int64_t)(v).to_int64())
#define E2T_MUL_WIDE(a, b) ((a) * (b))
#else
#define E2T_I64(v) ((int64_t)(v))
#define E2T_MUL_WIDE(a, b) ((int64_t)(a) * (b))
#endif

namespace {

const int TO = E2T_TILE_O;
const int TI = E2T_TILE_I;
const int KK = E2T_MAX_K * E2T_MAX_K;
const int PIX = E2T_MAX_HO * E2T_MAX_WO;  // output maps: shape_ok refuses larger ones
const int XB_H = E2T_MAX_H + 2 * E2T_MAX_PAD;
const int XB_W = E2T_MAX_W + 2 * E2T_MAX_PAD;

using e2t::Shape;

inline int64_t abs64(int64_t v) { return v < 0 ? -v : v; }

// Input channels [ct, ct + TI) of image n, zero-padded by p; the 4-bit MSB part when `use_msb`.
void load_act(const int8_t *act, const Shape &sh, int n, int ct, bool use_msb, act_t xb[TI][XB_H][XB_W]) {
LOAD_ACT:
    for (int ti = 0; ti < TI; ti++)
        for (int y = 0; y < sh.hp(); y++) {
#pragma HLS LOOP_TRIPCOUNT max = XB_H
            for (int x = 0; x < sh.wp(); x++) {
#pragma HLS LOOP_TRIPCOUNT max = XB_W
#pragma HLS PIPELINE II = 1
                const int c = ct + ti, iy = y - sh.p, ix = x - sh.p;
                int8_t v = 0;
                if (c < sh.c && iy >= 0 && iy < sh.h && ix >= 0 && ix < sh.w)
                    v = act[(((int64_t)n * sh.c + c) * sh.h + iy) * sh.w + ix];
                xb[ti][y][x] = use_msb ? e2t::msb(v) : v;
            }
        }
}

// Output-gradient channels [ot, ot + TO) of image n.
void load_grad(const int16_t *grad, const Shape &sh, int n, int ot, grad_t gb[TO][PIX]) {
    const int pix = sh.ho * sh.wo;
LOAD_GRAD:
    for (int to = 0; to < TO; to++)
        for (int i = 0; i < pix; i++) {
#pragma HLS LOOP_TRIPCOUNT max = PIX
#pragma HLS PIPELINE II = 1
            const int o = ot + to;
            gb[to][i] = o < sh.o ? grad[((int64_t)n * sh.o + o) * pix + i] : (int16_t)0;
        }
}

// Weights of output channels [ot, ot + TO) x input channels [ct, ct + TI).
void load_wgt(const int8_t *wgt, const Shape &sh, int ot, int ct, wgt_t wb[TO][TI][KK]) {
    const int taps = sh.k * sh.k;
LOAD_WGT:
    for (int to = 0; to < TO; to++)
        for (int ti = 0; ti < TI; ti++)
            for (int t = 0; t < taps; t++) {
#pragma HLS LOOP_TRIPCOUNT max = KK
#pragma HLS PIPELINE II = 1
                const int o = ot + to, c = ct + ti;
                wb[to][ti][t] = (o < sh.o && c < sh.c) ? wgt[((int64_t)o * sh.c + c) * taps + t] : (int8_t)0;
            }
}

// y = rshift_round(conv(x_q, W_q), r), saturated to int32.
void conv_fwd(const int8_t *act, const int8_t *wgt, int32_t *out, const Shape &sh, int r, uint32_t &sat) {
    static act_t xb[TI][XB_H][XB_W];
    static wgt_t wb[TO][TI][KK];
    static acc_fwd_t acc[TO][PIX];
#pragma HLS ARRAY_PARTITION variable = xb dim = 1 complete
#pragma HLS ARRAY_PARTITION variable = wb dim = 1 complete
#pragma HLS ARRAY_PARTITION variable = wb dim = 2 complete
#pragma HLS ARRAY_PARTITION variable = acc dim = 1 complete
    const int pix = sh.ho * sh.wo;
FWD_IMAGE:
    for (int n = 0; n < sh.n; n++)
    FWD_OTILE:
        for (int ot = 0; ot < sh.o; ot += TO) {
        FWD_ZERO:
            for (int i = 0; i < pix; i++) {
#pragma HLS LOOP_TRIPCOUNT max = PIX
#pragma HLS PIPELINE II = 1
                for (int to = 0; to < TO; to++) acc[to][i] = 0;
            }
        FWD_CTILE:
            for (int ct = 0; ct < sh.c; ct += TI) {
                load_act(act, sh, n, ct, false, xb);
                load_wgt(wgt, sh, ot, ct, wb);
            FWD_TAP_H:
                for (int kh = 0; kh < sh.k; kh++)
                FWD_TAP_W:
                    for (int kw = 0; kw < sh.k; kw++)
                    FWD_ROW:
                        for (int yo = 0; yo < sh.ho; yo++)
                        FWD_COL:
                            for (int xo = 0; xo < sh.wo; xo++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_WO
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = acc inter false
                                const int i = yo * sh.wo + xo, t = kh * sh.k + kw;
                                for (int to = 0; to < TO; to++) {
                                    acc_fwd_t sum = acc[to][i];
                                    for (int ti = 0; ti < TI; ti++)
                                        sum += wb[to][ti][t] * xb[ti][yo * sh.s + kh][xo * sh.s + kw];
                                    acc[to][i] = sum;
                                }
                            }
            }
        FWD_WRITE:
            for (int to = 0; to < TO; to++)
                for (int i = 0; i < pix; i++) {
#pragma HLS LOOP_TRIPCOUNT max = PIX
#pragma HLS PIPELINE II = 1
                    if (ot + to < sh.o)
                        out[((int64_t)n * sh.o + ot + to) * pix + i] =
                            (int32_t)e2t::saturate(e2t::rshift_round(E2T_I64(acc[to][i]), r), e2t::OUT_LO, e2t::OUT_HI, sat);
                }
        }
}

// g_x = rshift_round(conv_transpose(g_q, W_al), r) with W_al[o] = rshift_round(W_q[o], e_ref - s[o]),
// e_ref = max(s) - ALIGN_BITS: each gradient pixel is scattered into a padded accumulator.
void conv_bwd_data(const int16_t *grad, const int8_t *wgt, const int8_t *wshift, int32_t *out, const Shape &sh,
                   int r, uint32_t &sat) {
    static grad_t gb[TO][PIX];
    static wal_t wb[TO][TI][KK];
    static acc_wide_t acc[TI][XB_H * XB_W];
#pragma HLS ARRAY_PARTITION variable = gb dim = 1 complete
#pragma HLS ARRAY_PARTITION variable = wb dim = 1 complete
#pragma HLS ARRAY_PARTITION variable = wb dim = 2 complete
#pragma HLS ARRAY_PARTITION variable = acc dim = 1 complete
    const int taps = sh.k * sh.k, wp = sh.wp();
    int smax = wshift[0];
BWD_SMAX:
    for (int o = 1; o < sh.o; o++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_C
        if (wshift[o] > smax) smax = wshift[o];
    }
BWD_IMAGE:
    for (int n = 0; n < sh.n; n++)
    BWD_CTILE:
        for (int ct = 0; ct < sh.c; ct += TI) {
        BWD_ZERO:
            for (int i = 0; i < sh.hp() * wp; i++) {
#pragma HLS LOOP_TRIPCOUNT max = XB_H * XB_W
#pragma HLS PIPELINE II = 1
                for (int ti = 0; ti < TI; ti++) acc[ti][i] = 0;
            }
        BWD_OTILE:
            for (int ot = 0; ot < sh.o; ot += TO) {
                load_grad(grad, sh, n, ot, gb);
            BWD_ALIGN:
                for (int to = 0; to < TO; to++)
                    for (int ti = 0; ti < TI; ti++)
                        for (int t = 0; t < taps; t++) {
#pragma HLS LOOP_TRIPCOUNT max = KK
#pragma HLS PIPELINE II = 1
                            const int o = ot + to, c = ct + ti;
                            int64_t v = 0;
                            if (o < sh.o && c < sh.c)
                                v = e2t::rshift_round(wgt[((int64_t)o * sh.c + c) * taps + t],
                                                      smax - e2t::ALIGN_BITS - wshift[o]);
                            wb[to][ti][t] = (wal_t)v;
                        }
            BWD_TAP_H:
                for (int kh = 0; kh < sh.k; kh++)
                BWD_TAP_W:
                    for (int kw = 0; kw < sh.k; kw++)
                    BWD_ROW:
                        for (int yo = 0; yo < sh.ho; yo++)
                        BWD_COL:
                            for (int xo = 0; xo < sh.wo; xo++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_WO
#pragma HLS PIPELINE II = 1
#pragma HLS DEPENDENCE variable = acc inter false
                                const int i = yo * sh.wo + xo, t = kh * sh.k + kw;
                                const int at = (yo * sh.s + kh) * wp + xo * sh.s + kw;
                                for (int ti = 0; ti < TI; ti++) {
                                    acc_wide_t sum = acc[ti][at];
                                    for (int to = 0; to < TO; to++) sum += E2T_MUL_WIDE(gb[to][i], wb[to][ti][t]);
                                    acc[ti][at] = sum;
                                }
                            }
            }
        BWD_WRITE:
            for (int ti = 0; ti < TI; ti++)
                for (int y = 0; y < sh.h; y++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_H
                    for (int x = 0; x < sh.w; x++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_W
#pragma HLS PIPELINE II = 1
                        if (ct + ti < sh.c)
                            out[(((int64_t)n * sh.c + ct + ti) * sh.h + y) * sh.w + x] = (int32_t)e2t::saturate(
                                e2t::rshift_round(E2T_I64(acc[ti][(y + sh.p) * wp + x + sh.p]), r), e2t::OUT_LO,
                                e2t::OUT_HI, sat);
                    }
                }
        }
}

// One weight-gradient tile, G[to][ti][tap] = sum over images and pixels of g * x (x_msb when `use_msb`).
void wgrad_tile(const int8_t *act, const int16_t *grad, const Shape &sh, int ot, int ct, bool use_msb,
                acc_wide_t G[TO][TI][KK]) {
    static act_t xb[TI][XB_H][XB_W];
    static grad_t gb[TO][PIX];
#pragma HLS ARRAY_PARTITION variable = xb dim = 1 complete
#pragma HLS ARRAY_PARTITION variable = gb dim = 1 complete
WG_ZERO:
    for (int t = 0; t < KK; t++) {
#pragma HLS PIPELINE II = 1
        for (int to = 0; to < TO; to++)
            for (int ti = 0; ti < TI; ti++) G[to][ti][t] = 0;
    }
WG_IMAGE:
    for (int n = 0; n < sh.n; n++) {
        load_act(act, sh, n, ct, use_msb, xb);
        load_grad(grad, sh, n, ot, gb);
    WG_TAP_H:
        for (int kh = 0; kh < sh.k; kh++)
        WG_TAP_W:
            for (int kw = 0; kw < sh.k; kw++)
            WG_ROW:
                for (int yo = 0; yo < sh.ho; yo++)
                WG_COL:
                    for (int xo = 0; xo < sh.wo; xo++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_WO
#pragma HLS PIPELINE II = 1
                        const int i = yo * sh.wo + xo, t = kh * sh.k + kw;
                        for (int to = 0; to < TO; to++)
                            for (int ti = 0; ti < TI; ti++)
                                G[to][ti][t] += gb[to][i] * xb[ti][yo * sh.s + kh][xo * sh.s + kw];
                    }
    }
}

// CONV_WGRAD. FULL: scratch = G_full. PSG_ABS / PSG_RATIO: pass 1 writes G_msb to scratch (and
// finds max|G_msb|), pass 2 decides each tile and recomputes at full precision only the tiles
// holding an entry the predictor is unsure of; sgn = sign of the chosen gradient.
void conv_wgrad(const int8_t *act, const int16_t *grad, int8_t *sgn, int64_t *scratch, const Shape &sh,
                uint32_t mode, uint64_t threshold, uint32_t &sure, uint32_t &tiles, uint32_t &recomputed) {
    static acc_wide_t G[TO][TI][KK];
    static acc_wide_t F[TO][TI][KK];
#pragma HLS ARRAY_PARTITION variable = G dim = 1 complete
#pragma HLS ARRAY_PARTITION variable = G dim = 2 complete
#pragma HLS ARRAY_PARTITION variable = F dim = 1 complete
#pragma HLS ARRAY_PARTITION variable = F dim = 2 complete
    const int taps = sh.k * sh.k;
    const bool psg = mode != E2T_WGRAD_FULL;
    int64_t gmax = 0;
WG_PASS1_O:
    for (int ot = 0; ot < sh.o; ot += TO)
    WG_PASS1_C:
        for (int ct = 0; ct < sh.c; ct += TI) {
            wgrad_tile(act, grad, sh, ot, ct, psg, G);
        WG_STORE:
            for (int to = 0; to < TO; to++)
                for (int ti = 0; ti < TI; ti++)
                    for (int t = 0; t < taps; t++) {
#pragma HLS LOOP_TRIPCOUNT max = KK
#pragma HLS PIPELINE II = 1
                        const int o = ot + to, c = ct + ti;
                        if (o < sh.o && c < sh.c) {
                            const int64_t g = E2T_I64(G[to][ti][t]);
                            scratch[((int64_t)o * sh.c + c) * taps + t] = g;
                            if (abs64(g) > gmax) gmax = abs64(g);
                        }
                    }
        }
    sure = tiles = recomputed = 0;
    if (!psg) return;
WG_PASS2_O:
    for (int ot = 0; ot < sh.o; ot += TO)
    WG_PASS2_C:
        for (int ct = 0; ct < sh.c; ct += TI) {
            bool unsure = false;
            tiles++;
        WG_DECIDE:
            for (int to = 0; to < TO; to++)
                for (int ti = 0; ti < TI; ti++)
                    for (int t = 0; t < taps; t++) {
#pragma HLS LOOP_TRIPCOUNT max = KK
#pragma HLS PIPELINE II = 1
                        const int o = ot + to, c = ct + ti;
                        if (o < sh.o && c < sh.c) {
                            const int64_t a = abs64(scratch[((int64_t)o * sh.c + c) * taps + t]);
                            const bool ok = mode == E2T_WGRAD_PSG_ABS ? a >= (int64_t)threshold
                                                                      : (a << e2t::RATIO_FRAC) >= (int64_t)threshold * gmax;
                            sure += ok;
                            unsure |= !ok;
                        }
                    }
            if (unsure) {
                recomputed++;
                wgrad_tile(act, grad, sh, ot, ct, false, F);
            }
        WG_SIGN:
            for (int to = 0; to < TO; to++)
                for (int ti = 0; ti < TI; ti++)
                    for (int t = 0; t < taps; t++) {
#pragma HLS LOOP_TRIPCOUNT max = KK
#pragma HLS PIPELINE II = 1
                        const int o = ot + to, c = ct + ti;
                        if (o < sh.o && c < sh.c) {
                            const int64_t at = ((int64_t)o * sh.c + c) * taps + t;
                            const int64_t gm = scratch[at];
                            const int8_t s = mode == E2T_WGRAD_PSG_ABS
                                ? e2t::psg_sign_abs(gm, unsure ? E2T_I64(F[to][ti][t]) : 0, (int64_t)threshold)
                                : e2t::psg_sign_ratio(gm, unsure ? E2T_I64(F[to][ti][t]) : 0, (int64_t)threshold, gmax);
                            sgn[at] = s;
                        }
                    }
        }
}

// UPDATE: the sign-momentum step on `count` master weights and momenta, in place.
void update(int32_t *master, int32_t *mom, const int8_t *sgn, uint32_t count, int e_w, uint64_t lr, uint64_t wd,
            uint32_t mu, uint32_t &sat) {
UPDATE:
    for (uint32_t i = 0; i < count; i++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_DEPTH_MASTER
#pragma HLS PIPELINE II = 1
        int32_t w = master[i], b = mom[i];
        e2t::sign_update(w, b, sgn[i], e_w, (int64_t)lr, (int64_t)wd, (int64_t)mu, sat);
        master[i] = w;
        mom[i] = b;
    }
}

}  // namespace

void e2t_engine(uint32_t op, uint32_t mode, uint32_t batch, uint32_t c_in, uint32_t h_in, uint32_t w_in,
                uint32_t c_out, uint32_t kernel, uint32_t stride, uint32_t pad, uint32_t shift, uint64_t threshold,
                uint32_t count, int32_t e_w, uint64_t lr, uint64_t wd, uint32_t mu,
                const int8_t *act, const int8_t *wgt, const int8_t *wshift, const int16_t *grad, int32_t *out,
                int8_t *sgn, int64_t *scratch, int32_t *master, int32_t *mom,
                uint32_t *status, uint32_t *saturations, uint32_t *psg_sure, uint32_t *psg_tiles,
                uint32_t *psg_recomputed) {
    // BEGIN GENERATED INTERFACE (python -m hls.regmap)
    #pragma HLS INTERFACE mode=s_axilite port=return bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=op offset=0x010 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=mode offset=0x018 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=batch offset=0x020 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=c_in offset=0x028 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=h_in offset=0x030 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=w_in offset=0x038 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=c_out offset=0x040 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=kernel offset=0x048 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=stride offset=0x050 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=pad offset=0x058 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=shift offset=0x060 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=threshold offset=0x068 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=count offset=0x074 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=e_w offset=0x07C bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=lr offset=0x084 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=wd offset=0x090 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=mu offset=0x09C bundle=control
    #pragma HLS INTERFACE mode=m_axi port=act offset=slave bundle=gmem_act depth=E2T_DEPTH_ACT max_widen_bitwidth=64
    #pragma HLS INTERFACE mode=s_axilite port=act offset=0x0A4 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=wgt offset=slave bundle=gmem_wgt depth=E2T_DEPTH_WGT max_widen_bitwidth=64
    #pragma HLS INTERFACE mode=s_axilite port=wgt offset=0x0B0 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=wshift offset=slave bundle=gmem_wshift depth=E2T_DEPTH_WSHIFT max_widen_bitwidth=64
    #pragma HLS INTERFACE mode=s_axilite port=wshift offset=0x0BC bundle=control
    #pragma HLS INTERFACE mode=m_axi port=grad offset=slave bundle=gmem_grad depth=E2T_DEPTH_GRAD max_widen_bitwidth=64
    #pragma HLS INTERFACE mode=s_axilite port=grad offset=0x0C8 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem_out depth=E2T_DEPTH_OUT max_widen_bitwidth=64
    #pragma HLS INTERFACE mode=s_axilite port=out offset=0x0D4 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=sgn offset=slave bundle=gmem_sgn depth=E2T_DEPTH_SGN max_widen_bitwidth=64
    #pragma HLS INTERFACE mode=s_axilite port=sgn offset=0x0E0 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=scratch offset=slave bundle=gmem_scratch depth=E2T_DEPTH_SCRATCH max_widen_bitwidth=64
    #pragma HLS INTERFACE mode=s_axilite port=scratch offset=0x0EC bundle=control
    #pragma HLS INTERFACE mode=m_axi port=master offset=slave bundle=gmem_master depth=E2T_DEPTH_MASTER max_widen_bitwidth=64
    #pragma HLS INTERFACE mode=s_axilite port=master offset=0x0F8 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=mom offset=slave bundle=gmem_mom depth=E2T_DEPTH_MOM max_widen_bitwidth=64
    #pragma HLS INTERFACE mode=s_axilite port=mom offset=0x104 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=status offset=0x110 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=saturations offset=0x118 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=psg_sure offset=0x120 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=psg_tiles offset=0x128 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=psg_recomputed offset=0x130 bundle=control
    // END GENERATED INTERFACE
    uint32_t sat = 0, sure = 0, tiles = 0, recomputed = 0;
    Shape sh;
    const uint32_t st = e2t::check_call(op, mode, batch, c_in, h_in, w_in, c_out, kernel, stride, pad, shift, threshold,
                                        count, e_w, lr, wd, mu, wshift, sgn, sh);
    if (st != E2T_STATUS_OK) {
        // refused: no buffer is written, only the status registers
    } else if (op == E2T_OP_CONV_FWD) {
        conv_fwd(act, wgt, out, sh, (int)shift, sat);
    } else if (op == E2T_OP_CONV_BWD_DATA) {
        conv_bwd_data(grad, wgt, wshift, out, sh, (int)shift, sat);
    } else if (op == E2T_OP_CONV_WGRAD) {
        conv_wgrad(act, grad, sgn, scratch, sh, mode, threshold, sure, tiles, recomputed);
    } else if (op == E2T_OP_UPDATE) {
        update(master, mom, sgn, count, e_w, lr, wd, mu, sat);
    }
    *status = st;
    *saturations = sat;
    *psg_sure = sure;
    *psg_tiles = tiles;
    *psg_recomputed = recomputed;
}
