// e2t_engine: the training engine's HLS top function (see e2t_engine.h, docs/numerics.md for the
// arithmetic and docs/engine.md for this dataflow; hls/cycles.py models its loops one for one).
//
// One multiplier array of E2T_ARRAY_O x E2T_ARRAY_I DSP slices (pe_array, a single instance behind
// array_unit) serves every op, each product a 25 x 18 signed multiply:
//
//   op                 A (25 bit)                          B (18 bit)   per DSP   channel tile
//   CONV_FWD           W_q[o + AO] * 2^16 + W_q[o]          x_q          2 MACs    2 AO out x AI in
//   CONV_BWD_DATA      W_al (20 bit)                       g_q          1 MAC     AO out x AI in
//   CONV_WGRAD full    x_q                                 g_q          1 MAC     AO x AI, taps in time
//   CONV_WGRAD PSG     x_msb[tap a] * 2^20 + x_msb[tap b]   g_q          2 MACs    AO x AI, two taps at once
//   UPDATE             pieces of the int32 operands        pieces       10 products per element, 2 calls
//
// STATS and APPLY multiply on slices of their own, five a lane (elem_plane): fewer LUTs than muxing
// their operands onto the array's ports would take.
//
// Two products that share an operand come out of one DSP and are split exactly: the low field is
// the sign-extended low 16 (20) bits, the high one the rest (docs/engine.md, "packing").
//
// Data: whole images sit on chip in skewed banks (channel c, pixel i in bank (c + i) mod banks),
// so a load writes one AXI beat (8 or 16 bytes) per cycle and the array reads one pixel of
// AI (AO) channels per cycle, conflict free. Every op is a sequence of steps; a step calls up to
// three functions on disjoint buffers, which the schedule runs at the same time: load a slice of
// the NEXT image (ping-pong copies xb0/xb1, gb0/gb1), compute one block on the array (current
// copy), write the previous block's outputs (ping-pong accumulators ac0/ac1). Weights stay on
// chip for the whole call (forward, backward: the same W_q for every image). DDR traffic is
// sequential, unconditional loops of whole beats on two m_axi bundles (read-mostly and write).
//
// PSG decisions are per tile_o x tile_i tile exactly as docs/numerics.md, section 5, says: the
// array computes in its own tiles, and recomputes every array tile that meets a PSG tile holding
// an unsure entry (numbers never depend on tiles; psg_tiles / psg_recomputed count PSG tiles).
#include "e2t_engine.h"

#include "e2t_checks.h"
#include "e2t_numerics.h"

#ifdef E2T_AP_TYPES
#define E2T_I64(v) ((int64_t)(v).to_int64())
#define E2T_INT(v) ((int)(v).to_int())
#else
#define E2T_I64(v) ((int64_t)(v))
#define E2T_INT(v) ((int)(v))
#endif

// Trip counts of the pipelined loops, for tests/test_cycles.py (a build with -DE2T_TRIPS only):
// E2T_ENTER(loop) once per start of the loop, E2T_TRIP(loop) once per iteration (E2T_ENTER_AT,
// E2T_TRIP_AT: the loop's L_ id, for a loop whose template parameter names it).
#define E2T_LOOPS(X)                                                                                                 \
    X(MUL16) X(DIV16) X(WG_COUNT) X(LOAD_W) X(BWD_SMAX) X(LOAD_X) X(LOAD_G) X(FWD_WPRE) X(FWD_SWEEP) X(BWD_WPRE) X(BWD_SWEEP) \
    X(DRAIN) X(WG_SWEEP) X(WGP_GPRE) X(WGP_SWEEP) X(WGP_COPY) X(WG_WRITEBACK) X(PSG_DECIDE) X(PSG_AFLAG) X(PSG_SIGN) X(RATIO)              \
    X(UPD_LOAD32) X(UPD_LOADSGN) X(UPD_STORE32) X(UPD_STEP)                                                          \
    X(COEF_LOAD) X(ELEM_LOAD32) X(ELEM_LOAD8) X(ELEM_SWEEP) X(ELEM_STORE) X(STATS_OUT)
#define E2T_LOOP_ID(name) L_##name,
enum TripLoop { E2T_LOOPS(E2T_LOOP_ID) L_COUNT };
#ifdef E2T_TRIPS
static unsigned long long e2t_trip_table[L_COUNT][2];
#define E2T_ENTER_AT(id) (e2t_trip_table[id][0]++)
#define E2T_TRIP_AT(id) (e2t_trip_table[id][1]++)
#define E2T_ENTER(name) E2T_ENTER_AT(L_##name)
#define E2T_TRIP(name) E2T_TRIP_AT(L_##name)
#define E2T_LOOP_NAME(name) #name,
extern "C" {
const char *e2t_trip_names[] = {E2T_LOOPS(E2T_LOOP_NAME) 0};
}
// Copies the table (entries, iterations per loop, in e2t_trip_names order) and clears it.
extern "C" int e2t_trips(unsigned long long *out) {
    for (int i = 0; i < L_COUNT; i++) {
        out[2 * i] = e2t_trip_table[i][0];
        out[2 * i + 1] = e2t_trip_table[i][1];
        e2t_trip_table[i][0] = e2t_trip_table[i][1] = 0;
    }
    return L_COUNT;
}
#else
#define E2T_ENTER_AT(id) ((void)0)
#define E2T_TRIP_AT(id) ((void)0)
#define E2T_ENTER(name) ((void)0)
#define E2T_TRIP(name) ((void)0)
#endif

namespace {

// -- sizes ------------------------------------------------------------------------------------

const int AO = E2T_ARRAY_O;              // rows of the multiplier array (DSP slices)
const int AI = E2T_ARRAY_I;              // columns
const int FO = 2 * AO;                   // output channels of a forward block (two per DSP)
const int NACC = FO > AI ? FO : AI;      // channels of an output block
const int KK = E2T_MAX_K * E2T_MAX_K;
const int KKP = KK <= 4 ? 4 : KK <= 16 ? 16 : 64;  // taps per weight row, a power of two
const int LOG_KKP = KKP == 4 ? 2 : KKP == 16 ? 4 : 6;
const int LOG_AO = AO == 1 ? 0 : AO == 2 ? 1 : AO == 4 ? 2 : AO == 8 ? 3 : AO == 16 ? 4 : AO == 32 ? 5 : 6;
const int LOG_AI = AI == 1 ? 0 : AI == 2 ? 1 : AI == 4 ? 2 : AI == 8 ? 3 : AI == 16 ? 4 : AI == 32 ? 5 : 6;
const int BEAT = E2T_AXI_BITS / 8;       // bytes per AXI beat: 8 on Zynq-7000 HP ports, 16 on UltraScale+
const int BW8 = BEAT, BW16 = BEAT / 2, BW32 = BEAT / 4, BW64 = BEAT >= 8 ? BEAT / 8 : 1;  // elements per beat
const int XSLOTS = (E2T_MAX_C + AI - 1) / AI;  // input-channel groups
const int XSLOTP = XSLOTS <= 1 ? 1 : XSLOTS <= 2 ? 2 : XSLOTS <= 4 ? 4 : XSLOTS <= 8 ? 8 : 16;
const int LOG_XSLOTP = XSLOTP == 1 ? 0 : XSLOTP == 2 ? 1 : XSLOTP == 4 ? 2 : XSLOTP == 8 ? 3 : 4;
const int GSLOTS = (E2T_MAX_C + AO - 1) / AO;  // output-channel groups
const int XPLANE = E2T_MAX_H * E2T_MAX_W;      // one channel of x in a bank's slot
const int GPLANE = E2T_MAX_HO * E2T_MAX_WO;    // one channel of g
const int XDEPTH = XSLOTS * XPLANE;
const int GDEPTH = GSLOTS * GPLANE;
const int WDEPTH = E2T_MAX_C * XSLOTP * KKP;   // weight rows (o, input group, tap) of AI lanes
const int PB = 128;                      // pixels of an output block (its accumulators are LUT-RAM)
const int DMIN = 16;                     // shortest forward / backward sweep: covers the accumulator
                                         // read-modify-write distance and one step's weight prefetch
const int DMIN_W = 2 * AI;               // shortest weight-gradient sweep: the flush of 2 AI lanes a row
const int HALF = AI / 2;                 // pixel-lane weight gradient: the largest C, the shortest Wo, and
                                         // the cycles of one group (prefetch of AI lanes of g, two a cycle)
// The pixel-lane weight gradient (the stem's) is built, and its predictor packs two entries a DSP
// (about half the cycles), where the engine has the LUTs for them and a read port fast enough for
// them to pay: the board data decides (hls/boards.py, pixel_lanes_built, wgp_pack). Without the
// lanes the channel sweep computes the same sums.
#if !defined(E2T_WGP_PACK) || !defined(E2T_WGP_PIX)
#error "engine_config.h predates E2T_WGP_PIX: generate it again (python -m hls.boards BOARD)"
#endif
const bool WGP_PIX = E2T_WGP_PIX;
const bool WGP_PACK = E2T_WGP_PIX && E2T_WGP_PACK;
const int GS_DEPTH = 1024;               // G store entries per array row (weight-gradient partial sums)
const int UCH = NACC * PB < AI * XDEPTH ? NACC * PB : AI * XDEPTH;  // UPDATE chunk (elements): what the
                                         // output block, G store and x buffer it borrows hold
const int MAXA = (E2T_MAX_C + E2T_TILE_O - 1) / E2T_TILE_O;  // PSG tiles per column / row
const int MAXB = (E2T_MAX_C + E2T_TILE_I - 1) / E2T_TILE_I;
const int PIXBITS = GPLANE <= 64 ? 6 : GPLANE <= 256 ? 8 : GPLANE <= 1024 ? 10 : GPLANE <= 4096 ? 12 : 14;
const int XPIXBITS = XPLANE <= 64 ? 6 : XPLANE <= 256 ? 8 : XPLANE <= 1024 ? 10 : XPLANE <= 4096 ? 12 : 14;
const int MBITS = 18;                    // STATS: m = N H W <= 2^MBITS elements a channel
const int SWEEP_BITS = 23 + PIXBITS + 1;  // one sweep of x g products (|x g| <= 2^22) over a map

static_assert((AO & (AO - 1)) == 0 && (AI & (AI - 1)) == 0, "array dimensions are powers of two");
static_assert(BW8 <= AI && BW16 <= AO, "a beat of x (g) fits the banks of one pixel row");
static_assert(NACC % 8 == 0 && PB % BW32 == 0, "update chunks and output blocks hold whole beats");
static_assert(XSLOTS * KK * AI <= GS_DEPTH, "one array row of weight-gradient tiles fits the G store");
static_assert(UCH / AO <= GS_DEPTH && UCH % BW8 == 0 && UCH % NACC == 0, "an UPDATE chunk fits the buffers it borrows");
static_assert(2 * E2T_MAX_W <= PB && E2T_MAX_WO <= PB, "two output rows fit a block");
static_assert(DMIN >= FO, "a sweep is long enough to prefetch the next step's weights");
static_assert(AI >= 2 && HALF * KK <= PB, "a pixel-lane tile's entries fit the output block's pixels");
static_assert(2 * AO <= NACC, "a pixel-lane tile's two sums a row have their own output-block rows");
static_assert(SWEEP_BITS <= 48 && E2T_ACC_WIDE_BITS <= 64, "sums fit the widths");
static_assert(E2T_MAX_BATCH * XPLANE <= (1 << MBITS) && e2t::COEF_M_BITS + 31 <= e2t::COEF_B_BITS,
              "the per-element ops' sums fit their widths");
static_assert(E2T_MAX_H * E2T_MAX_W + E2T_MAX_PAD * E2T_MAX_W <= XDEPTH,
              "a folded plane's rows shifted past its end stay in the x buffer (load_planes)");
static_assert(XPLANE <= NACC * PB && 3 * XPLANE <= AO * GDEPTH && BW8 <= NACC,
              "a plane fits each copy of the buffers STATS and APPLY borrow (gb: the mask and an int32 b's halves)");

#ifdef E2T_AP_TYPES
typedef ap_int<25> mul_a_t;   // DSP48 A / pre-adder port
typedef ap_int<18> mul_b_t;   // B port
typedef ap_int<43> mul_p_t;   // the product
typedef ap_int<SWEEP_BITS> sweep_t;
#define E2T_MUL(a, b) ((a) * (b))
#else
typedef int32_t mul_a_t;
typedef int32_t mul_b_t;
typedef int64_t mul_p_t;
typedef int64_t sweep_t;
#define E2T_MUL(a, b) ((int64_t)(a) * (b))
#endif

// STATS and APPLY at the widths of docs/numerics.md, section 9: operands a_t, b_t and their
// products; the channel sums over m <= 2^18 elements, |sum a_t| <= 2^35 and |sum a_t b_t| <= 2^52
// (+2^52, at a_t = b_t = -2^17 throughout, takes a 54th bit); APPLY's coefficients M1, M2 and B,
// its sum v = M1 a + M2 b + B (|v| < 2^57), a plane's sum of H W output values, and an int32 plus
// its rounding half (at most 2^31: STATS's b by u <= 32).
#ifdef E2T_AP_TYPES
typedef ap_int<e2t::STAT_BITS> stat_t;
typedef ap_int<2 * e2t::STAT_BITS> stat_prod_t;
typedef ap_int<e2t::STAT_BITS + MBITS> stat_sum_t;
typedef ap_int<2 * e2t::STAT_BITS + MBITS> stat_sq_t;
typedef ap_int<e2t::COEF_M_BITS + 1> coef_m_t;
typedef ap_int<e2t::COEF_B_BITS + 1> coef_b_t;
typedef ap_int<e2t::COEF_B_BITS + 2> apply_v_t;
typedef ap_int<32 + XPIXBITS> plane_sum_t;
typedef ap_int<33> stat_in_t;
#else
typedef int32_t stat_t;
typedef int64_t stat_prod_t;
typedef int64_t stat_sum_t;
typedef int64_t stat_sq_t;
typedef int32_t coef_m_t;
typedef int64_t coef_b_t;
typedef int64_t apply_v_t;
typedef int64_t plane_sum_t;
typedef int64_t stat_in_t;
#endif

using e2t::Shape;

inline int64_t abs64(int64_t v) { return v < 0 ? -v : v; }
inline int imin(int a, int b) { return a < b ? a : b; }
inline int imax(int a, int b) { return a > b ? a : b; }
// v * 2^n for n >= 0, as a shift (no multiplier), two's complement.
inline int64_t shl64(int64_t v, int n) { return (int64_t)((uint64_t)v << n); }
// rshift_round of docs/numerics.md with a shift, never a multiply: the same integers as
// e2t::rshift_round for every operand the engine meets.
inline int64_t round_shift(int64_t v, int s) { return s > 0 ? (v + ((int64_t)1 << (s - 1))) >> s : shl64(v, -s); }
// The low `bits` bits of v as a signed number (the low field of a packed product).
inline int64_t low_field(int64_t v, int bits) {
    const int64_t m = ((int64_t)1 << bits) - 1, h = (int64_t)1 << (bits - 1);
    return ((v & m) ^ h) - h;
}
// rshift_round of an int32 by s in 0..32, on 33 bits. Every shift past 32 gives 0 for every int32,
// as 32 does (v + 2^(s-1) lies in [0, 2^s)), so STATS clamps its shift there (per_element).
inline int64_t round_shift32(int32_t v, int s) {
    const stat_in_t w = (stat_in_t)v + (s > 0 ? (stat_in_t)((stat_in_t)1 << (s - 1)) : (stat_in_t)0);
    return E2T_I64((stat_in_t)(w >> s));
}
// Whether v lies in `bits` signed bits, bits one of the formats of STATS and APPLY (8, 16, 18, 32):
// the bits above the format all equal its sign, tested on fixed bit ranges, not by 64-bit compares.
inline bool fits(int64_t v, int bits) {
    const int64_t t = bits == 8 ? v >> 7 : bits == 16 ? v >> 15 : bits == 18 ? v >> 17 : v >> 31;
    return t == 0 || t == -1;
}
// d * v for a small |d| <= 3 (tap offsets): shifts and adds.
inline int small_mul(int d, int v) {
    const int a = d < 0 ? -d : d;
    const int r = (a & 1 ? v : 0) + (a & 2 ? v << 1 : 0);
    return d < 0 ? -r : r;
}

// a * b (0 <= b < 2^16) by shift and add, and ceil(a / b) (0 <= a < 2^16, 1 <= b < 2^16) by
// restoring division: the few per-call sizes built from register values (no DSP, no divider).
int64_t kmul(int64_t a, int64_t b) {
    E2T_ENTER(MUL16);
    int64_t r = 0;
KMUL:
    for (int i = 0; i < 16; i++) {
#pragma HLS PIPELINE II = 1
        E2T_TRIP(MUL16);
        if ((b >> i) & 1) r += a << i;
    }
    return r;
}

int kdiv_ceil(int a, int b) {
    E2T_ENTER(DIV16);
    const uint32_t n = (uint32_t)(a + b - 1);
    uint32_t q = 0, rem = 0;
KDIV:
    for (int i = 15; i >= 0; i--) {
#pragma HLS PIPELINE II = 1
        E2T_TRIP(DIV16);
        rem = (rem << 1) | ((n >> i) & 1);
        if (rem >= (uint32_t)b) {
            rem -= (uint32_t)b;
            q |= 1u << i;
        }
    }
    return (int)q;
}

// The sizes of one conv call, built once from the shape registers (products by kmul: a few
// per call, never per block).
struct Call {
    int n, c, h, w, o, k, s, p, ho, wo;
    int kk, hw, howo;        // k^2, H W, Ho Wo
    int ncg, nog, nogf;      // input groups of AI, output groups of AO (FO)
    uint32_t img_x, img_g;   // elements of one image of x (C H W) and of g (O Ho Wo)
    int smax;                // CONV_BWD_DATA: max_o s[o]
    // blocks (forward: output rows, backward: rows of g_x): rows of a band, bands, pixels and
    // sweep trips of a full and of the last band, the row strides of the band's sources
    int rb, nb, np_full, np_last, tot_full, tot_last, src_step, out_step;
    // backward parity classes (index py s + px): steps and, for a full / the last band, pixels
    // and trips of the class sweep
    int cl_steps[4], cl_np[2][4], cl_tot[2][4];
    // CONV_WGRAD pixel-lane sweep (pix: stride 1, C <= AI / 2, Wo >= AI / 2): entries C k^2 of a row
    // and their pairs, groups of up to AI pixels of one output row in the map
    bool pix;
    int ck, ckh, ngr;
    // CONV_WGRAD's kernel rows in lanes (fold: no pixel lanes, k >= 2, C k <= AI): lane c k + ky
    // holds input channel c's kernel row ky; p W (the loads' shift), taps a lane (k, else k^2).
    // Its spare lanes (sp): in the full pass the last column k - 1 rides in lanes C k.. (port B),
    // so the lanes sweep k - 1 columns: tf, taps a lane in the full pass; spq = C k, the first spare
    // lane; spc = m, the channels the spare lanes advance a sweep, spm = m k their planes
    bool fold, sp;
    int pw, tl, tf, spq, spc, spm;
};

Call make_call(const Shape &sh) {
    Call k;
    k.n = sh.n; k.c = sh.c; k.h = sh.h; k.w = sh.w; k.o = sh.o; k.k = sh.k; k.s = sh.s; k.p = sh.p;
    k.ho = sh.ho; k.wo = sh.wo;
    k.kk = (int)kmul(sh.k, sh.k);
    k.hw = (int)kmul(sh.h, sh.w);
    k.howo = (int)kmul(sh.ho, sh.wo);
    k.ncg = (sh.c + AI - 1) >> LOG_AI;
    k.nog = (sh.o + AO - 1) >> LOG_AO;
    k.nogf = (sh.o + FO - 1) >> (LOG_AO + 1);
    k.img_x = (uint32_t)kmul(k.hw, sh.c);
    k.img_g = (uint32_t)kmul(k.howo, sh.o);
    k.smax = 0;
    k.pix = k.fold = k.sp = false;
    k.ck = k.ckh = k.ngr = k.pw = k.spq = k.spc = k.spm = 0;
    k.tl = k.tf = k.kk;
    k.rb = k.nb = k.np_full = k.np_last = k.tot_full = k.tot_last = k.src_step = k.out_step = 0;
    for (int i = 0; i < 4; i++) {
        k.cl_steps[i] = 0;
        k.cl_np[0][i] = k.cl_np[1][i] = k.cl_tot[0][i] = k.cl_tot[1][i] = 0;
    }
    return k;
}

// The sizes of an op that uses no conv shape (UPDATE): all 0.
Call no_call() {
    Shape zero;
    zero.n = zero.c = zero.h = zero.w = zero.o = zero.k = zero.s = zero.p = zero.ho = zero.wo = 0;
    return make_call(zero);
}

// Forward blocks: bands of floor(PB / Wo) output rows; R = ncg k^2 steps a block.
void plan_fwd(Call &k) {
    k.rb = imin(k.ho, kdiv_ceil(PB - k.wo + 1, k.wo));
    k.nb = kdiv_ceil(k.ho, k.rb);
    k.np_full = (int)kmul(k.rb, k.wo);
    k.np_last = (int)kmul(k.ho - (int)kmul(k.nb - 1, k.rb), k.wo);
    const int R = k.ncg * k.kk;
    k.tot_full = (int)kmul(R, imax(k.np_full, DMIN));
    k.tot_last = (int)kmul(R, imax(k.np_last, DMIN));
    k.src_step = (int)kmul(k.rb, k.w << (k.s - 1));  // input rows advance s rb a band
    k.out_step = k.np_full;
}

// Backward blocks: bands of floor(PB / W) rows of g_x (even at stride 2, so every band starts on
// an even row), each swept per parity class with the class's own taps.
void plan_bwd(Call &k) {
    const int ss = k.s - 1;
    k.rb = imin(k.h, kdiv_ceil(PB - k.w + 1, k.w));
    if (k.s == 2 && k.rb < k.h) k.rb &= ~1;
    k.nb = kdiv_ceil(k.h, k.rb);
    const int last_rows = k.h - (int)kmul(k.nb - 1, k.rb);
    k.np_full = (int)kmul(k.rb, k.w);
    k.np_last = (int)kmul(last_rows, k.w);
    k.src_step = (int)kmul(k.rb >> ss, k.wo);  // g rows advance rb / s a band
    k.out_step = k.np_full;
    for (int py = 0; py < k.s; py++)
        for (int px = 0; px < k.s; px++) {
            const int ci = (py << ss) + px;
            const int kh0 = (py + k.p) & ss, kw0 = (px + k.p) & ss;
            const int nkh = k.k > kh0 ? (k.k - kh0 + ss) >> ss : 0, nkw = k.k > kw0 ? (k.k - kw0 + ss) >> ss : 0;
            const int ntap = (int)kmul(nkh, nkw);
            k.cl_steps[ci] = ntap > 0 ? (int)kmul(k.nog, ntap) : 1;
            const int nxc = k.w > px ? (k.w - px + ss) >> ss : 0;
            for (int f = 0; f < 2; f++) {
                const int rows = f == 0 ? k.rb : last_rows;
                const int nyc = rows > py ? (rows - py + ss) >> ss : 0;
                const int np = (int)kmul(nyc, nxc);
                k.cl_np[f][ci] = np;
                k.cl_tot[f][ci] = np > 0 ? (int)kmul(k.cl_steps[ci], imax(np, DMIN)) : 0;
            }
        }
}

// -- the multiplier array ----------------------------------------------------------------------

// AO x AI products of 25 x 18 bits, one DSP slice each. The only multiplier of the conv ops and
// UPDATE: each reaches it through array_unit (one instance), the operands muxed in by the op that
// runs (STATS and APPLY have their own few, elem_plane).
// `chain`: each column's products are summed down the rows (the DSP cascade, PCIN + A x B), so
// p[AO - 1][l] is column l's sum (CONV_BWD_DATA); else p holds the plain products.
void pe_array(const mul_a_t a[AO][AI], const mul_b_t b[AO][AI], mul_p_t p[AO][AI], bool chain) {
#pragma HLS INLINE off
#pragma HLS PIPELINE II = 1
PE_COL:
    for (int l = 0; l < AI; l++) {
        mul_p_t casc = 0;
    PE_ROW:
        for (int r = 0; r < AO; r++) {
            mul_p_t prod = E2T_MUL(a[r][l], b[r][l]);
#pragma HLS BIND_OP variable = prod op = mul impl = dsp
            casc = chain ? (mul_p_t)(casc + prod) : prod;
            p[r][l] = casc;
        }
    }
}

// -- DDR -> chip -------------------------------------------------------------------------------

// W_q (O x C x k x k, one byte a cycle) into the weight rows: lane c mod AI of row (o, c / AI, tap).
void load_w(const int8_t *wgt, const Call &k, wgt_t wm[AI][WDEPTH]) {
    const int total = (int)kmul((int)kmul(k.o, k.c), k.kk);
    int o = 0, c = 0, t = 0;
    E2T_ENTER(LOAD_W);
LOAD_W:
    for (int f = 0; f < total; f++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = E2T_DEPTH_WGT
        E2T_TRIP(LOAD_W);
        wm[c & (AI - 1)][(o << (LOG_XSLOTP + LOG_KKP)) | ((c >> LOG_AI) << LOG_KKP) | t] = wgt[f];
        if (++t == k.kk) {
            t = 0;
            if (++c == k.c) {
                c = 0;
                o++;
            }
        }
    }
}

// Planes of channels [c0, c1) of one image (n elements a channel, channel c0 at DDR element a0)
// into skewed banks: plane v, pixel i in bank (v + i) mod BANKS at (v / BANKS) PLANE + i. A plane
// a channel (fk = 1, pw = 0: plane v = c), or for the weight gradient's folded sweep (wg_tile's
// k.fold: fk = k kernel rows, pw = p W) k planes a channel, v = v0 + (c - c0) k + ky: the channel
// read again for each row ky, its element j written to pixel i = j + (p - ky) W, the plane's rows
// shifted by ky - p (those that leave it at the top are not written; those past its end land in
// the slots above, unused by a fold's C k <= AI planes). Whole beats of BEAT elements a cycle when
// n is a multiple of one. x (AI banks) and g (AO banks) through load_x and load_g, one instance
// each (ALLOCATION in the top), so that both load at once.
template <bool IS_X, typename S, typename T, int BANKS, int LOG_BANKS, int BEAT, int PLANE, int DEPTH>
void load_planes(const S *src, uint32_t a0, int c0, int c1, int v0, int n, int fk, int w, int pw,
                 T buf[BANKS][DEPTH]) {
#pragma HLS INLINE
    if (c0 >= c1) return;
    const bool beats = n % BEAT == 0;
    const int step = beats ? BEAT : 1;
    int c = c0, v = v0, ky = 0, j = 0, off = pw;  // element j of the channel, to pixel j + off
    uint32_t a = a0, ac = a0;                     // DDR: the next element, the channel's first
    if (IS_X) E2T_ENTER(LOAD_X);
    else E2T_ENTER(LOAD_G);
LOAD_PLANES:
    while (c < c1) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = DEPTH / BEAT
        if (IS_X) E2T_TRIP(LOAD_X);
        else E2T_TRIP(LOAD_G);
        const int i = j + off, base = (v >> LOG_BANKS) * PLANE + i;
        if (beats) {
            for (int e = 0; e < BEAT; e++)
                if (i + e >= 0) buf[(v + i + e) & (BANKS - 1)][base + e] = src[a + e];
        } else if (i >= 0) {
            buf[(v + i) & (BANKS - 1)][base] = src[a];
        }
        a += step;
        j += step;
        if (j == n) {  // the channel's next kernel row (read again), or the next channel
            j = 0;
            v++;
            if (++ky == fk) {
                ky = 0;
                c++;
                ac = a;
                off = pw;
            } else {
                a = ac;
                off -= w;
            }
        }
    }
}

// Channels [c0, c1) of one image of x (channel c0 at DDR element a0), as planes from v0: one a
// channel, or k a channel in the weight gradient's folded sweep (k.fold).
void load_x(const int8_t *act, uint32_t a0, int c0, int c1, int v0, const Call &k, act_t xb[AI][XDEPTH]) {
    load_planes<true, int8_t, act_t, AI, LOG_AI, BW8, XPLANE, XDEPTH>(act, a0, c0, c1, v0, k.hw, k.fold ? k.k : 1,
                                                                      k.w, k.fold ? k.pw : 0, xb);
}

// Planes [c0, c1) (relative to the buffer's first channel) of one image of g, from DDR element a0.
void load_g(const int16_t *grad, uint32_t a0, int c0, int c1, const Call &k, grad_t gb[AO][GDEPTH]) {
    load_planes<false, int16_t, grad_t, AO, LOG_AO, BW16, GPLANE, GDEPTH>(grad, a0, c0, c1, c0, k.howo, 1, 0, 0, gb);
}

// -- chip -> DDR -------------------------------------------------------------------------------

// nch channels of npix pixels each from the block accumulators: out[a0 + ch plane + q] =
// sat32(rshift_round(acc, r)). One inner loop (one burst) per channel, whole beats when aligned.
void drain(const acc_wide_t ac[NACC][PB], int32_t *out, uint32_t a0, uint32_t plane, int nch, int npix, int r,
           bool beats, uint32_t &sat) {
    uint32_t a = a0, n_sat = 0;
DRAIN_CH:
    for (int ch = 0; ch < nch; ch++) {
#pragma HLS LOOP_TRIPCOUNT max = NACC
        const int trips = beats ? npix / BW32 : npix;
        E2T_ENTER(DRAIN);
    DRAIN:
        for (int q = 0; q < trips; q++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = PB / BW32
            E2T_TRIP(DRAIN);
            if (beats) {
                for (int e = 0; e < BW32; e++)
                    out[a + q * BW32 + e] = (int32_t)e2t::saturate(round_shift(E2T_I64(ac[ch][q * BW32 + e]), r),
                                                                   e2t::OUT_LO, e2t::OUT_HI, n_sat);
            } else {
                out[a + q] = (int32_t)e2t::saturate(round_shift(E2T_I64(ac[ch][q]), r), e2t::OUT_LO, e2t::OUT_HI, n_sat);
            }
        }
        a += plane;
    }
    sat += n_sat;
}

// The adder trees after the array, two a row over its AI lanes: each product split at 16 bits into
// its low field (sign-extended) and the rest, (P >> 16) + (low field < 0), exact for the packed
// products (docs/engine.md, Packing), and both summed; where the pixel-lane predictor packs
// (WGP_PACK), a third tree over the rests' low 4 bits. The forward and the pixel-lane weight
// gradient share one instance (ALLOCATION in array_unit). Every sum fits 32 bits: |P| <= 2^38.
void row_sums(const mul_p_t P[AO][AI], int32_t lo[AO], int32_t hi[AO], int32_t nib[AO]) {
#pragma HLS INLINE off
#pragma HLS PIPELINE II = 1
    for (int r = 0; r < AO; r++) {
        int32_t t1 = 0, t2 = 0, t3 = 0;
        for (int l = 0; l < AI; l++) {
            const int64_t pv = E2T_I64(P[r][l]), f = low_field(pv, 16), q = (pv >> 16) + (f < 0 ? 1 : 0);
            t1 += (int32_t)f;
            t2 += (int32_t)q;
            if (WGP_PACK) t3 += (int32_t)low_field(q, 4);
        }
        lo[r] = t1;
        hi[r] = t2;
        nib[r] = t3;
    }
}

// -- the ops on the array ----------------------------------------------------------------------

enum { U_FWD, U_BWD, U_WG, U_WGP, U_UPD };

// What one array_unit call computes. Forward: output group og, rows [y0, y0 + rows) (npix
// pixels, `total` sweep trips), base = (y0 s - pad) W; backward: input group cg, rows [y0,
// y0 + rows) of g_x, f = 0 full band / 1 last, base = (y0 / s) Wo; weight gradient: tile (og
// local to the G store group, cg), predictor or full, first image of the group, G store base;
// update: len elements.
struct Job {
    int mode, og, cg, y0, rows, npix, total, base, f, gsbase, len;
    bool pred, first, flush_only;
};

// A STATS or APPLY call's registers and its plane's channel coefficients (in), the plane's sums
// (out): STATS sum a_t, sum a_t b_t, min a, max a; APPLY the sum, min and max of the outputs.
struct Elem {
    bool apply, product, relu, mask;  // APPLY, or STATS (PRODUCT: b from src2); APPLY's RELU and MASK
    int t, u, src2;                   // shifts (STATS t, u clamped at 32; APPLY S in t), APPLY's second source
    int bits;                         // the format of the shift's result: APPLY's output, STATS's a_t (18)
    int64_t lo, hi;                   // its range
    coef_m_t m1, m2;
    coef_b_t b;
    stat_sum_t s1;
    stat_sq_t s2;
    plane_sum_t sz;
    int32_t mn, mx;
};

// Weight row of output channel o (AI lanes: input group cg, tap t), zero outside the shape.
void weight_row(const wgt_t wm[AI][WDEPTH], const Call &k, int o, int cg, int t, wgt_t row[AI]) {
#pragma HLS INLINE
    const int at = (o << (LOG_XSLOTP + LOG_KKP)) | (cg << LOG_KKP) | t;
    for (int l = 0; l < AI; l++) row[l] = (o < k.o && (cg << LOG_AI) + l < k.c) ? wm[l][at] : (wgt_t)0;
}

// CONV_FWD block: acc[o][p] for the FO output channels of group og and the block's pixels p,
// summed over R = ncg k^2 steps (input group, tap), one sweep of L = max(npix, DMIN) cycles each.
// A step's weights sit in registers (wreg); the next step's arrive one row a cycle (wnext).
void fwd_block(const act_t xb[AI][XDEPTH], const wgt_t wm[AI][WDEPTH], acc_wide_t ac[NACC][PB], const Call &k,
               const Job &j) {
#pragma HLS INLINE
    wgt_t wreg[FO][AI], wnext[FO][AI];
#pragma HLS ARRAY_PARTITION variable = wreg complete dim = 0
#pragma HLS ARRAY_PARTITION variable = wnext complete dim = 0
    const int R = k.ncg * k.kk, L = imax(j.npix, DMIN), o0 = j.og * FO;
    E2T_ENTER(FWD_WPRE);
FWD_WPRE:
    for (int q = 0; q < FO; q++) {
#pragma HLS PIPELINE II = 1
        E2T_TRIP(FWD_WPRE);
        weight_row(wm, k, o0 + q, 0, 0, wreg[q]);
    }
    // this step: input group cg, tap (kh, kw), kh W; the next step's group and tap index
    int st = 0, cg = 0, kh = 0, kw = 0, khw = 0;
    int cg_n = k.kk > 1 ? 0 : 1, t_n = k.kk > 1 ? 1 : 0;
    // the sweep's pixel: output column xo; input row iy, its offset rb = iy W, input column ix
    int p = 0, xo = 0, iy = (j.y0 << (k.s - 1)) - k.p, rb = j.base, ix = -k.p;
    E2T_ENTER(FWD_SWEEP);
FWD_SWEEP:
    for (int it = 0; it < j.total; it++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = XSLOTS * KK * PB
#pragma HLS DEPENDENCE variable = ac inter false
        E2T_TRIP(FWD_SWEEP);
        if (p < FO && st + 1 < R) weight_row(wm, k, o0 + p, cg_n, t_n, wnext[p]);
        if (p < j.npix) {
            const bool v = iy >= 0 && iy < k.h && ix >= 0 && ix < k.w;
            const int i = rb + ix;
            act_t xv[AI];
            for (int l = 0; l < AI; l++) xv[l] = v ? xb[(l + i) & (AI - 1)][cg * XPLANE + i] : (act_t)0;
            mul_a_t A[AO][AI];
            mul_b_t B[AO][AI];
            mul_p_t P[AO][AI];
            for (int r = 0; r < AO; r++)
                for (int l = 0; l < AI; l++) {
                    A[r][l] = (mul_a_t)(E2T_INT(wreg[AO + r][l]) * 65536 + E2T_INT(wreg[r][l]));
                    B[r][l] = (mul_b_t)E2T_INT(xv[l]);
                }
            pe_array(A, B, P, false);
            int32_t lo[AO], hi[AO], nib[AO];  // each packed product split, summed over the AI inputs
            row_sums(P, lo, hi, nib);
            for (int r = 0; r < AO; r++) {
                ac[r][p] = (st == 0 ? (acc_wide_t)0 : ac[r][p]) + lo[r];
                ac[AO + r][p] = (st == 0 ? (acc_wide_t)0 : ac[AO + r][p]) + hi[r];
            }
        }
        if (p == L - 1) {  // next step
            for (int q = 0; q < FO; q++)
                for (int l = 0; l < AI; l++) wreg[q][l] = wnext[q][l];
            st++;
            cg = cg_n;
            if (++kw == k.k) {
                kw = 0;
                khw += k.w;
                if (++kh == k.k) {
                    kh = 0;
                    khw = 0;
                }
            }
            if (++t_n == k.kk) {
                t_n = 0;
                cg_n++;
            }
            p = 0;
            xo = 0;
            iy = (j.y0 << (k.s - 1)) - k.p + kh;
            rb = j.base + khw;
            ix = kw - k.p;
        } else {
            p++;
            if (++xo == k.wo) {
                xo = 0;
                iy += k.s;
                rb += k.w << (k.s - 1);
                ix = kw - k.p;
            } else {
                ix += k.s;
            }
        }
    }
}

// CONV_BWD_DATA block: g_x partial sums acc[c][p] for the AI input channels of group cg and the
// rows [y0, y0 + rows) of g_x, as a gather over the parity classes of the stride (4 at stride 2,
// each with only its own taps; 1 at stride 1). A class sweeps its pixels once per step (output
// group, tap); a step's aligned weights sit in registers, the next step's are prefetched.
void bwd_block(const grad_t gb[AO][GDEPTH], const wgt_t wm[AI][WDEPTH], const int8_t dsh[E2T_MAX_C],
               acc_wide_t ac[NACC][PB], const Call &k, const Job &j) {
#pragma HLS INLINE
    wal_t wreg[AO][AI], wnext[AO][AI];
#pragma HLS ARRAY_PARTITION variable = wreg complete dim = 0
#pragma HLS ARRAY_PARTITION variable = wnext complete dim = 0
    const int cg = j.cg, ss = k.s - 1;
BWD_CLASS_Y:
    for (int py = 0; py < k.s; py++)
    BWD_CLASS_X:
        for (int px = 0; px < k.s; px++) {
            const int ci = (py << ss) + px, npix = k.cl_np[j.f][ci], total = k.cl_tot[j.f][ci];
            if (npix == 0) continue;
            const int steps = k.cl_steps[ci], L = imax(npix, DMIN);
            const int nxc = (k.w - px + ss) >> ss;
            const int kh0 = (py + k.p) & ss, kw0 = (px + k.p) & ss;
            const bool taps = kh0 < k.k && kw0 < k.k;
            // this step: output group og, tap (kh, kw); the next step's
            int st = 0, og = 0, kh = kh0, kw = kw0, og_n = 0, kh_n = kh0, kw_n = kw0 + k.s;
            if (kw_n >= k.k) {
                kw_n = kw0;
                kh_n += k.s;
                if (kh_n >= k.k) {
                    kh_n = kh0;
                    og_n = 1;
                }
            }
            E2T_ENTER(BWD_WPRE);
        BWD_WPRE:
            for (int r = 0; r < AO; r++) {
#pragma HLS PIPELINE II = 1
                E2T_TRIP(BWD_WPRE);
                wgt_t row[AI];
                weight_row(wm, k, r, cg, small_mul(kh, k.k) + kw, row);
                const int sh = k.smax - e2t::ALIGN_BITS - dsh[r < k.o ? r : 0];
                for (int l = 0; l < AI; l++) wreg[r][l] = taps ? (wal_t)round_shift(E2T_INT(row[l]), sh) : (wal_t)0;
            }
            // the sweep's pixel: class column ii; g coordinates (yo, xo), g row offset grow = yo Wo;
            // the block's pixel index pix = (y - y0) W + x
            int q = 0, ii = 0;
            int dy = (py + k.p - kh) >> ss, dx = (px + k.p - kw) >> ss;
            int yo = (j.y0 >> ss) + dy, xo = dx, grow = j.base + small_mul(dy, k.wo), pix = (py ? k.w : 0) + px;
            E2T_ENTER(BWD_SWEEP);
        BWD_SWEEP:
            for (int it = 0; it < total; it++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = GSLOTS * KK * PB
#pragma HLS DEPENDENCE variable = ac inter false
                E2T_TRIP(BWD_SWEEP);
                if (q < AO && st + 1 < steps) {
                    wgt_t row[AI];
                    const int o = (og_n << LOG_AO) + q;
                    weight_row(wm, k, o, cg, small_mul(kh_n, k.k) + kw_n, row);
                    const int sh = k.smax - e2t::ALIGN_BITS - dsh[o < k.o ? o : 0];
                    for (int l = 0; l < AI; l++) wnext[q][l] = (wal_t)round_shift(E2T_INT(row[l]), sh);
                }
                if (q < npix) {
                    const bool v = yo >= 0 && yo < k.ho && xo >= 0 && xo < k.wo;
                    const int gi = grow + xo;
                    mul_a_t A[AO][AI];
                    mul_b_t B[AO][AI];
                    mul_p_t P[AO][AI];
                    for (int r = 0; r < AO; r++) {
                        const grad_t gv = v ? gb[(r + gi) & (AO - 1)][og * GPLANE + gi] : (grad_t)0;
                        for (int l = 0; l < AI; l++) {
                            A[r][l] = (mul_a_t)E2T_INT(wreg[r][l]);
                            B[r][l] = (mul_b_t)E2T_INT(gv);
                        }
                    }
                    pe_array(A, B, P, true);  // column sums over the AO output channels
                    for (int l = 0; l < AI; l++)
                        ac[l][pix] = (st == 0 ? (acc_wide_t)0 : ac[l][pix]) + E2T_I64(P[AO - 1][l]);
                }
                if (q == L - 1) {  // next step
                    for (int r = 0; r < AO; r++)
                        for (int l = 0; l < AI; l++) wreg[r][l] = wnext[r][l];
                    st++;
                    og = og_n;
                    kh = kh_n;
                    kw = kw_n;
                    kw_n += k.s;
                    if (kw_n >= k.k) {
                        kw_n = kw0;
                        kh_n += k.s;
                        if (kh_n >= k.k) {
                            kh_n = kh0;
                            og_n++;
                        }
                    }
                    q = 0;
                    ii = 0;
                    dy = (py + k.p - kh) >> ss;
                    dx = (px + k.p - kw) >> ss;
                    yo = (j.y0 >> ss) + dy;
                    xo = dx;
                    grow = j.base + small_mul(dy, k.wo);
                    pix = (py ? k.w : 0) + px;
                } else {
                    q++;
                    if (++ii == nxc) {
                        ii = 0;
                        yo++;
                        grow += k.wo;
                        xo = dx;
                        pix += (k.w << ss) - ((nxc - 1) << ss);
                    } else {
                        xo++;
                        pix += k.s;
                    }
                }
            }
        }
}

// CONV_WGRAD tile of one image: for the AO output channels of group og (local to the G store
// group) and the AI input channels of group cg, every tap's sum over the image's pixels. One
// sweep of L = max(Ho Wo, DMIN_W) cycles per step: full, one tap of x_q; predictor, two taps of
// x_msb packed into one DSP, so about half the sweeps. Lane sums stay in registers; at a sweep's
// end they move to a shift chain that the next sweep's first cycles add into the G store (2 AI
// lanes a row, one a cycle): no sum waits on a memory round trip. The last sweep's chain is
// added by the next tile's first sweep (the chain and where it goes persist between calls), and
// a flush-only call ends a pass. `first`: the group's first image writes the G store.
void wg_tile(const act_t xb[AI][XDEPTH], const grad_t gb[AO][GDEPTH], acc_wide_t gs[AO][GS_DEPTH], const Call &k,
             const Job &j) {
#pragma HLS INLINE
    sweep_t la[AO][AI], lb[AO][AI];
    static sweep_t sh[AO][2 * AI];
    static bool pend = false, pend_first = false;
    static int pend_base = 0, pend_tap = 0, pend_bc = 0;
#pragma HLS ARRAY_PARTITION variable = la complete dim = 0
#pragma HLS ARRAY_PARTITION variable = lb complete dim = 0
#pragma HLS ARRAY_PARTITION variable = sh complete dim = 0
    const bool pred = j.pred, spare = !pred && k.sp;
    const int steps = j.flush_only ? 0 : pred ? (k.tl + 1) >> 1 : k.tf, L = imax(k.howo, DMIN_W);
    const int FL = pred ? 2 * AI : AI;
    const int slot = j.cg * XPLANE;
    // folded (k.fold): lane l is (c, ky) = (l / k, l mod k), its plane input channel c shifted by
    // ky - p rows (load_planes), so the lanes read one address, the step's tap (p, kx) of a plane
    // whose rows start at the output row's: lane l's own row is iy + ky - p. Its spare lanes
    // (spare: k.sp, the full pass): lane l >= C k of sweep t reads column k - 1 of plane
    // l - C k + t m k through port B (bank offset db), channel l / k - C + t m (bc + (l - C k) / k),
    // row ky = l mod k as the lanes below; those past m k lanes or C channels are not flushed
    int lky[AI];
#pragma HLS ARRAY_PARTITION variable = lky complete dim = 0
    for (int l = 0, ky = 0; l < AI; l++) {
#pragma HLS UNROLL
        lky[l] = ky;
        if (++ky == k.k) ky = 0;
    }
    // where the chain's sums go: the previous sweep's tap(s) in this tile, or the pending ones
    int fl_base = pend_base, fl_tap = pend_tap, fl_bc = pend_bc;
    bool fl_on = pend, fl_first = pend_first;
    int fc = 0, fky = 0, fkk = 0;  // folded: the flushed lane's (c, ky) and ky k
    int bc = 0, db = spare ? (AI - k.spq) & (AI - 1) : 0;  // spare lanes: this sweep's first channel, bank offset
    // tap a (full: the step's; predictor: 2 st) and tap b = a + 1 (predictor only); folded, the
    // kernel row stays p (the lanes hold the rows) and the taps are a row's kx
    const int kh0 = k.fold ? k.p : 0;
    int st = 0, p = 0, xo = 0;
    int kha = kh0, kwa = 0, khb = k.k > 1 ? kh0 : 1, kwb = spare ? k.k - 1 : k.k > 1 ? 1 : 0;
    int iya = kha - k.p, ixa = -k.p, rba = small_mul(kha - k.p, k.w);
    int iyb = khb - k.p, ixb = kwb - k.p, rbb = small_mul(khb - k.p, k.w);
    E2T_ENTER(WG_SWEEP);
WG_SWEEP:
    for (int it = 0; it < j.total; it++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = KK * GPLANE
        E2T_TRIP(WG_SWEEP);
        if (fl_on && p < FL) {  // flush lane p of every row, from the previous sweep
            const bool bl = spare && p >= k.spq;  // a spare lane: column k - 1
            const int tap = bl ? k.k - 1 : fl_tap + (pred && p >= AI ? 1 : 0), q = p & (AI - 1);
            if (q == 0 || (spare && p == k.spq)) {
                fc = q == 0 ? 0 : fl_bc;
                fky = 0;
                fkk = 0;
            }
            const int idx = fl_base + (k.fold ? ((fkk + tap) << LOG_AI) + fc : (tap << LOG_AI) + q);
            const bool wr = tap < k.tl && (!bl || (fc < k.c && p < k.spq + k.spm));
            for (int r = 0; r < AO; r++) {
                const sweep_t v = sh[r][0];
                if (wr) gs[r][idx] = fl_first ? (acc_wide_t)v : (acc_wide_t)(gs[r][idx] + v);
                for (int e = 0; e + 1 < 2 * AI; e++) sh[r][e] = sh[r][e + 1];
            }
            if (++fky == k.k) {
                fky = 0;
                fkk = 0;
                fc++;
            } else {
                fkk += k.k;
            }
        }
        if (st < steps && p < k.howo) {
            bool rok[E2T_MAX_K];  // folded: the rows iy + ky - p of the lanes' kernel rows ky fall on x
            for (int d = 0; d < E2T_MAX_K; d++) rok[d] = iya + d - k.p >= 0 && iya + d - k.p < k.h;
            const bool ra = iya >= 0 && iya < k.h, rb = iyb >= 0 && iyb < k.h;
            const bool ca = ixa >= 0 && ixa < k.w;
            const bool cb = (pred ? (st << 1) + 1 < k.tl : spare) && ixb >= 0 && ixb < k.w;
            const int ia = rba + ixa, ib = rbb + ixb;
            mul_a_t A[AO][AI];
            mul_b_t B[AO][AI];
            mul_p_t P[AO][AI];
            for (int l = 0; l < AI; l++) {
                const bool va = ca && (k.fold ? rok[lky[l]] : ra), vb = cb && (k.fold ? rok[lky[l]] : rb);
                const int xa = va ? E2T_INT(xb[(l + ia) & (AI - 1)][slot + ia]) : 0;
                const int xv = vb ? E2T_INT(xb[(l + ib + db) & (AI - 1)][slot + ib]) : 0;
                const int av = pred ? e2t::msb((int8_t)xa) * (1 << 20) + e2t::msb((int8_t)xv)
                                    : spare && l >= k.spq ? xv : xa;
                for (int r = 0; r < AO; r++) A[r][l] = (mul_a_t)av;
            }
            for (int r = 0; r < AO; r++) {
                const grad_t gv = gb[(r + p) & (AO - 1)][j.og * GPLANE + p];
                for (int l = 0; l < AI; l++) B[r][l] = (mul_b_t)E2T_INT(gv);
            }
            pe_array(A, B, P, false);
            for (int r = 0; r < AO; r++)
                for (int l = 0; l < AI; l++) {
                    const int64_t pv = E2T_I64(P[r][l]);  // predictor: high field = (P >> 20) + (low < 0)
                    const int64_t f = pred ? low_field(pv, 20) : 0, hi = pred ? (pv >> 20) + (f < 0 ? 1 : 0) : pv;
                    la[r][l] = (p == 0 ? (sweep_t)0 : la[r][l]) + hi;
                    lb[r][l] = (p == 0 ? (sweep_t)0 : lb[r][l]) + f;
                }
        }
        if (st < steps && p == L - 1) {
            for (int r = 0; r < AO; r++)
                for (int l = 0; l < AI; l++) {
                    sh[r][l] = la[r][l];
                    sh[r][AI + l] = lb[r][l];
                }
        }
        if (p == L - 1) {  // next step: its tap(s) and their input coordinates
            fl_on = true;  // the sweep just ended is the next one's to flush
            fl_base = j.gsbase;
            fl_tap = pred ? st << 1 : st;
            fl_first = j.first;
            fl_bc = bc;
            p = 0;
            xo = 0;
            st++;
            if (spare) {  // the spare lanes' next planes; their column stays k - 1
                bc += k.spc;
                db = (db + k.spm) & (AI - 1);
            }
            for (int adv = 0; adv < 2; adv++) {
                if (adv == 1 && !pred) break;
                if (++kwa == k.k && !k.fold) {
                    kwa = 0;
                    kha++;
                }
                if (!spare && ++kwb == k.k && !k.fold) {
                    kwb = 0;
                    khb++;
                }
            }
            iya = kha - k.p;
            ixa = kwa - k.p;
            rba = small_mul(kha - k.p, k.w);
            iyb = khb - k.p;
            ixb = kwb - k.p;
            rbb = small_mul(khb - k.p, k.w);
        } else {
            p++;
            if (++xo == k.wo) {
                xo = 0;
                iya += k.s;
                iyb += k.s;
                rba += k.w << (k.s - 1);
                rbb += k.w << (k.s - 1);
                ixa = kwa - k.p;
                ixb = kwb - k.p;
            } else {
                ixa += k.s;
                ixb += k.s;
            }
        }
    }
    // the last sweep's sums wait in the chain for the next call (a flush-only call ends a pass)
    pend = steps > 0;
    pend_base = fl_base;
    pend_tap = fl_tap;
    pend_first = fl_first;
    pend_bc = fl_bc;
}

// CONV_WGRAD tile of one image in the pixel-lane sweep (k.pix: stride 1, C <= AI / 2, Wo >= AI / 2),
// for layers with too few input channels to fill the AI lanes (the stem: 3). Lane l is output
// pixel p0 + l of a group (a run of up to AI pixels of one output row; lanes past the row's end
// carry g = 0), row r output channel o of group og; each cycle one entry (c, tap), or with
// WGP_PACK two consecutive ones in one DSP under the predictor (fields 20 bits apart, as in
// wg_tile). DSP (r, l) multiplies x[c][input pixel of p0 + l at the tap] (per lane: AI consecutive
// pixels of one channel, AI different banks at stride 1; a packed second entry uses the other
// port) by g[o][p0 + l] (per DSP, held in registers for the group's L = max(steps, HALF) cycles;
// the next group's arrive two lanes a cycle meanwhile, on both ports of the g banks).
// The datapath after the array is the forward's: each product split at 16 bits (low field, rest),
// the two adder trees of a row over the AI lanes, the accumulators ac[r] and ac[AO + r] (the output
// block, free in a weight-gradient call) at the entry instead of the pixel: ac[r][tb + j] holds
// the entry's sum of low fields, ac[AO + r][tb + j] the rest's, G = rest 2^16 + low (WGP_COPY).
// Packed, a third 4-bit tree per row recovers the two entries' sums (entry b = t3 2^16 + t1,
// entry a = (t2 - t3) / 16), accumulated at ac[(j odd) AO + r][tb + j / 2]. An entry is revisited
// after L >= HALF cycles, beyond the read-modify-write. wg_pass copies the sums into the G store
// after the batch.
void wgp_tile(const act_t xb[AI][XDEPTH], const grad_t gb[AO][GDEPTH], acc_wide_t ac[NACC][PB], const Call &k,
              const Job &j) {
#pragma HLS INLINE
    grad_t greg[AO][AI], gnext[AO][AI];
#pragma HLS ARRAY_PARTITION variable = greg complete dim = 0
#pragma HLS ARRAY_PARTITION variable = gnext complete dim = 0
    const bool pred = j.pred, pack = WGP_PACK && j.pred;
    const int S = pack ? k.ckh : k.ck, L = imax(S, HALF), gbase = j.og * GPLANE, tb = j.gsbase;
    E2T_ENTER(WGP_GPRE);
WGP_GPRE:  // the first group's g: pixels q and q + HALF of row 0
    for (int q = 0; q < HALF; q++) {
#pragma HLS PIPELINE II = 1
        E2T_TRIP(WGP_GPRE);
        for (int h = 0; h < 2; h++) {
            const int l = q + h * HALF;
            for (int r = 0; r < AO; r++) greg[r][l] = l < k.wo ? gb[(r + l) & (AO - 1)][gbase + l] : (grad_t)0;
        }
    }
    // the group: output row yo (its first pixel rs = yo Wo, input row offset yw = yo W), first column
    // xo0, first pixel p0, number grp; the next group's first column and pixel
    int u = 0, grp = 0, yo = 0, yw = 0, rs = 0, xo0 = 0, p0 = 0;
    int nxo0 = AI < k.wo ? AI : 0, np0 = AI < k.wo ? AI : k.wo;
    // entry a = (ca, kha, kwa): the step's (predictor: 2 u), entry b = a + 1 (predictor only)
    int ca = 0, kha = 0, kwa = 0, cb = k.k > 1 ? 0 : 1, khb = 0, kwb = k.k > 1 ? 1 : 0;
    E2T_ENTER(WGP_SWEEP);
WGP_SWEEP:
    for (int it = 0; it < j.total; it++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_HO * ((E2T_MAX_WO + AI - 1) / AI) * HALF * KK
#pragma HLS DEPENDENCE variable = ac inter false
        E2T_TRIP(WGP_SWEEP);
        if (u < S) {
            const int ja = pack ? u << 1 : u;
            const bool hb = pack && ja + 1 < k.ck;
            const int iya = yo + kha - k.p, iyb = yo + khb - k.p;
            const int ia0 = yw + small_mul(kha - k.p, k.w) + xo0 + kwa - k.p;
            const int ib0 = yw + small_mul(khb - k.p, k.w) + xo0 + kwb - k.p;
            const int ixa0 = xo0 + kwa - k.p, ixb0 = xo0 + kwb - k.p;
            mul_a_t A[AO][AI];
            mul_b_t B[AO][AI];
            mul_p_t P[AO][AI];
            for (int l = 0; l < AI; l++) {
                const bool in = xo0 + l < k.wo;
                const bool va = in && iya >= 0 && iya < k.h && ixa0 + l >= 0 && ixa0 + l < k.w;
                const bool vb = hb && in && iyb >= 0 && iyb < k.h && ixb0 + l >= 0 && ixb0 + l < k.w;
                const int xa = va ? E2T_INT(xb[(ca + ia0 + l) & (AI - 1)][ia0 + l]) : 0;
                const int xv = vb ? E2T_INT(xb[(cb + ib0 + l) & (AI - 1)][ib0 + l]) : 0;
                const int av = pack ? e2t::msb((int8_t)xa) * (1 << 20) + e2t::msb((int8_t)xv)
                                    : pred ? e2t::msb((int8_t)xa) : xa;
                for (int r = 0; r < AO; r++) {
                    A[r][l] = (mul_a_t)av;
                    B[r][l] = (mul_b_t)E2T_INT(greg[r][l]);
                }
            }
            pe_array(A, B, P, false);
            const bool init = j.first && grp == 0;
            int32_t lo[AO], hi[AO], nib[AO];  // the forward's trees; packed, nib: entry b's 4 bits above its low field
            row_sums(P, lo, hi, nib);
            for (int r = 0; r < AO; r++) {
                // packed: entry a = (hi - nib) / 16 at row r, entry b = nib 2^16 + lo at row AO + r (pair u);
                // else the entry's two sums, low at row r, rest at row AO + r
                const int64_t t1 = lo[r], t2 = hi[r], t3 = nib[r];
                const int64_t s0 = pack ? (t2 - t3) >> 4 : t1, s1 = pack ? shl64(t3, 16) + t1 : t2;
                ac[r][tb + u] = (acc_wide_t)((init ? 0 : E2T_I64(ac[r][tb + u])) + s0);
                if (!pack || hb) ac[AO + r][tb + u] = (acc_wide_t)((init ? 0 : E2T_I64(ac[AO + r][tb + u])) + s1);
            }
        }
        if (u < HALF && grp + 1 < k.ngr) {  // the next group's g, lanes u and u + HALF
            for (int h = 0; h < 2; h++) {
                const int l = u + h * HALF, p = np0 + l;
                for (int r = 0; r < AO; r++)
                    gnext[r][l] = nxo0 + l < k.wo ? gb[(r + p) & (AO - 1)][gbase + p] : (grad_t)0;
            }
        }
        if (u == L - 1) {  // next group: its registers, coordinates and first entries
            for (int r = 0; r < AO; r++)
                for (int l = 0; l < AI; l++) greg[r][l] = gnext[r][l];
            if (nxo0 == 0) {
                yo++;
                yw += k.w;
                rs += k.wo;
            }
            xo0 = nxo0;
            p0 = np0;
            grp++;
            const bool more = xo0 + AI < k.wo;
            nxo0 = more ? xo0 + AI : 0;
            np0 = more ? p0 + AI : rs + k.wo;
            u = 0;
            ca = kha = kwa = 0;
            cb = k.k > 1 ? 0 : 1;
            khb = 0;
            kwb = k.k > 1 ? 1 : 0;
        } else {
            u++;
            for (int adv = 0; adv < 2; adv++) {
                if (adv == 1 && !pack) break;
                if (++kwa == k.k) {
                    kwa = 0;
                    if (++kha == k.k) {
                        kha = 0;
                        ca++;
                    }
                }
                if (++kwb == k.k) {
                    kwb = 0;
                    if (++khb == k.k) {
                        khb = 0;
                        cb++;
                    }
                }
            }
        }
    }
}

// UPDATE on one chunk: master in ac[e mod NACC][e / NACC], momentum in gs[e mod AO][e / AO], signs
// in xb[e mod AI][e / AI]. The products go through the array in pieces of 25 x 18 bits: WD W and
// MU buf (6 DSPs), then LR buf' (4 DSPs), two array calls an element (II = 2).
void upd_chunk(const act_t xb[AI][XDEPTH], acc_wide_t ac[NACC][PB], acc_wide_t gs[AO][GS_DEPTH], const Job &j,
               int e_w, uint64_t lr, uint64_t wd, uint32_t mu, uint32_t &sat) {
#pragma HLS INLINE
    uint32_t n_sat = 0;
    const int64_t u0w = (int64_t)(wd & 0x1FFFF), u1w = (int64_t)(wd >> 17);
    const int64_t u0l = (int64_t)(lr & 0x1FFFF), u1l = (int64_t)(lr >> 17);
    const int64_t one = (int64_t)1 << -e2t::MOM_EXP;
    E2T_ENTER(UPD_STEP);
UPD_STEP:
    for (int e = 0; e < j.len; e++) {
#pragma HLS PIPELINE II = 2
#pragma HLS LOOP_TRIPCOUNT max = UCH
        E2T_TRIP(UPD_STEP);
        const int64_t w = E2T_I64(ac[e & (NACC - 1)][e / NACC]);
        const int64_t b = E2T_I64(gs[e & (AO - 1)][e >> LOG_AO]);
        const int s = E2T_INT(xb[e & (AI - 1)][e >> LOG_AI]);
        mul_a_t A[AO][AI];
        mul_b_t B[AO][AI];
        mul_p_t P[AO][AI];
        for (int r = 0; r < AO; r++)
            for (int l = 0; l < AI; l++) {
                A[r][l] = 0;
                B[r][l] = 0;
            }
        // U V = V1 U1 2^41 + V1 U0 2^24 + V0 U1 2^17 + V0 U0 (U = U1 2^17 + U0 < 2^31, V = V1 2^24 + V0)
        const int64_t w0 = w & 0xFFFFFF, w1 = w >> 24, b0 = b & 0xFFFFFF, b1 = b >> 24;
        A[0][0] = (mul_a_t)w1; B[0][0] = (mul_b_t)u1w;
        A[0][1] = (mul_a_t)w1; B[0][1] = (mul_b_t)u0w;
        A[0][2] = (mul_a_t)w0; B[0][2] = (mul_b_t)u1w;
        A[0][3] = (mul_a_t)w0; B[0][3] = (mul_b_t)u0w;
        A[0][4] = (mul_a_t)b1; B[0][4] = (mul_b_t)(int64_t)mu;
        A[0][5] = (mul_a_t)b0; B[0][5] = (mul_b_t)(int64_t)mu;
        pe_array(A, B, P, false);
        const int64_t wdw = shl64(E2T_I64(P[0][0]), 41) + shl64(E2T_I64(P[0][1]), 24) + shl64(E2T_I64(P[0][2]), 17) +
                            E2T_I64(P[0][3]);
        const int64_t mub = shl64(E2T_I64(P[0][4]), 24) + E2T_I64(P[0][5]);
        const int64_t d = (s > 0 ? one : s < 0 ? -one : 0) + round_shift(wdw, e2t::WD_FRAC + e2t::MOM_EXP - e_w);
        const int64_t bn = e2t::saturate(round_shift(mub, e2t::MU_FRAC) + d, e2t::MOM_LO, e2t::MOM_HI, n_sat);
        const int64_t bn0 = bn & 0xFFFFFF, bn1 = bn >> 24;
        A[0][0] = (mul_a_t)bn1; B[0][0] = (mul_b_t)u1l;
        A[0][1] = (mul_a_t)bn1; B[0][1] = (mul_b_t)u0l;
        A[0][2] = (mul_a_t)bn0; B[0][2] = (mul_b_t)u1l;
        A[0][3] = (mul_a_t)bn0; B[0][3] = (mul_b_t)u0l;
        A[0][4] = 0;
        A[0][5] = 0;
        pe_array(A, B, P, false);
        const int64_t lrb = shl64(E2T_I64(P[0][0]), 41) + shl64(E2T_I64(P[0][1]), 24) + shl64(E2T_I64(P[0][2]), 17) +
                            E2T_I64(P[0][3]);
        const int64_t wn = e2t::saturate(w - round_shift(lrb, e2t::LR_FRAC - e2t::MOM_EXP + e_w), e2t::MASTER_LO,
                                         e2t::MASTER_HI, n_sat);
        ac[e & (NACC - 1)][e / NACC] = (acc_wide_t)wn;
        gs[e & (AO - 1)][e >> LOG_AO] = (acc_wide_t)bn;
    }
    sat += n_sat;
}

// The array and its sequencers: one instance serves the conv ops and UPDATE (ALLOCATION in the
// top), and pe_array is its only multiplier (ALLOCATION here): AO x AI DSP slices.
void array_unit(const Job &j, const Call &k, const act_t xb[AI][XDEPTH], const grad_t gb[AO][GDEPTH],
                const wgt_t wm[AI][WDEPTH], const int8_t dsh[E2T_MAX_C], acc_wide_t ac[NACC][PB],
                acc_wide_t gs[AO][GS_DEPTH], int e_w, uint64_t lr, uint64_t wd, uint32_t mu, uint32_t &sat) {
#pragma HLS INLINE off
#pragma HLS ALLOCATION function instances = pe_array limit = 1
#pragma HLS ALLOCATION function instances = row_sums limit = 1
    if (j.mode == U_FWD) fwd_block(xb, wm, ac, k, j);
    else if (j.mode == U_BWD) bwd_block(gb, wm, dsh, ac, k, j);
    else if (j.mode == U_WG) wg_tile(xb, gb, gs, k, j);
    else if (WGP_PIX && j.mode == U_WGP) wgp_tile(xb, gb, ac, k, j);
    else upd_chunk(xb, ac, gs, j, e_w, lr, wd, mu, sat);
}

// The argument list of the on-chip buffers, which every op receives (they never run at once).
#define E2T_BUF_PARAMS                                                                                              \
    act_t xb0[AI][XDEPTH], act_t xb1[AI][XDEPTH], grad_t gb0[AO][GDEPTH], grad_t gb1[AO][GDEPTH],                \
        wgt_t wm[AI][WDEPTH], acc_wide_t ac0[NACC][PB], acc_wide_t ac1[NACC][PB], acc_wide_t gs[AO][GS_DEPTH],   \
        int8_t dsh[E2T_MAX_C]
#define E2T_BUF_ARGS xb0, xb1, gb0, gb1, wm, ac0, ac1, gs, dsh

// The array on the current block into accumulators `pa` and, with `dr`, the previous block out
// of the other ones: one fixed copy of each per branch (manual ping-pong), inlined where called.
void array_and_drain(int pa, bool dr, const act_t xb[AI][XDEPTH], const grad_t gb[AO][GDEPTH], const Job &j,
                     const Call &k, int32_t *out, uint32_t d_at, uint32_t plane, int d_nch, int d_npix, int r,
                     bool beats, uint32_t &sat, const wgt_t wm[AI][WDEPTH], acc_wide_t ac0[NACC][PB],
                     acc_wide_t ac1[NACC][PB], acc_wide_t gs[AO][GS_DEPTH], const int8_t dsh[E2T_MAX_C]) {
#pragma HLS INLINE
    uint32_t none = 0;
    if (pa == 0) {
        array_unit(j, k, xb, gb, wm, dsh, ac0, gs, 0, 0, 0, 0, none);
        if (dr) drain(ac1, out, d_at, plane, d_nch, d_npix, r, beats, sat);
    } else {
        array_unit(j, k, xb, gb, wm, dsh, ac1, gs, 0, 0, 0, 0, none);
        if (dr) drain(ac0, out, d_at, plane, d_nch, d_npix, r, beats, sat);
    }
}

// One step of CONV_FWD (FWD: x is the image loaded and read) or CONV_BWD_DATA (g): a slice of
// the next image into the idle copy (`ld`), the block into accumulators `pa`, the previous block
// out of the other ones (`dr`). The three calls touch disjoint buffers and ports (read bundle,
// array, write bundle), so the schedule overlaps them; each branch passes one fixed set of copies
// (manual ping-pong).
template <bool FWD>
void band_step(int px, int pa, bool ld, bool dr, const int8_t *act, const int16_t *grad, uint32_t sl, int c0, int c1,
               const Job &j, const Call &k, int32_t *out, uint32_t d_at, int d_nch, int d_npix, int r, bool beats,
               uint32_t &sat, E2T_BUF_PARAMS) {
#pragma HLS INLINE
    const uint32_t plane = FWD ? (uint32_t)k.howo : (uint32_t)k.hw;
    if (px == 0) {
        if (ld && FWD) load_x(act, sl, c0, c1, c0, k, xb1);
        if (ld && !FWD) load_g(grad, sl, c0, c1, k, gb1);
        array_and_drain(pa, dr, xb0, gb0, j, k, out, d_at, plane, d_nch, d_npix, r, beats, sat, wm, ac0, ac1, gs, dsh);
    } else {
        if (ld && FWD) load_x(act, sl, c0, c1, c0, k, xb0);
        if (ld && !FWD) load_g(grad, sl, c0, c1, k, gb0);
        array_and_drain(pa, dr, FWD ? xb1 : xb0, FWD ? gb0 : gb1, j, k, out, d_at, plane, d_nch, d_npix, r, beats, sat,
                        wm, ac0, ac1, gs, dsh);
    }
}

// The last block's drain, after the last step (its accumulators: the copy the last step filled).
void drain_last(int pa, const Call &k, int32_t *out, uint32_t d_at, uint32_t plane, int d_nch, int d_npix, int r,
                bool beats, uint32_t &sat, const acc_wide_t ac0[NACC][PB], const acc_wide_t ac1[NACC][PB]) {
#pragma HLS INLINE
    (void)k;
    if (pa == 1) drain(ac0, out, d_at, plane, d_nch, d_npix, r, beats, sat);
    else drain(ac1, out, d_at, plane, d_nch, d_npix, r, beats, sat);
}

// -- CONV_FWD and CONV_BWD_DATA ------------------------------------------------------------

// The steps of CONV_FWD (FWD) and CONV_BWD_DATA after their weights: blocks of a group (forward:
// FO output channels; backward: AI input channels) x a band of rows (of y; of g_x), at most PB
// pixels; B blocks an image, and each step loads 1/B of the next image's planes (x; g).
template <bool FWD>
void band_steps(const int8_t *act, const int16_t *grad, int32_t *out, const Call &k, int r, uint32_t &sat,
                E2T_BUF_PARAMS) {
#pragma HLS INLINE
    const int groups = FWD ? k.nogf : k.ncg, planes = FWD ? k.c : k.o, width = FWD ? FO : AI;
    const int chans = FWD ? k.o : k.c, rows = FWD ? k.ho : k.h;
    const int B = (int)kmul(groups, k.nb), ps = kdiv_ceil(planes, B);  // planes of the next image a step
    const uint32_t ps_e = (uint32_t)kmul(ps, FWD ? k.hw : k.howo);
    const uint32_t grp_e = FWD ? (uint32_t)k.howo << (LOG_AO + 1) : (uint32_t)k.hw << LOG_AI;
    const uint32_t in_img = FWD ? k.img_x : k.img_g, out_img = FWD ? k.img_g : k.img_x;
    const bool beats = (FWD ? k.wo : k.w) % BW32 == 0;
    const int base0 = FWD ? -(int)kmul(k.p, k.w) : 0;  // forward: (0 s - pad) W
    if (FWD) load_x(act, 0, 0, k.c, 0, k, xb0);
    else load_g(grad, 0, 0, k.o, k, gb0);
    uint32_t img_in = 0, img_out = 0, d_at = 0;
    int pa = 0, d_nch = 0, d_npix = 0;
    bool dr = false;
CONV_IMAGE:
    for (int n = 0; n < k.n; n++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_BATCH
        const bool next = n + 1 < k.n;
        uint32_t sl = img_in + in_img, a_grp = img_out;
        int c0 = 0;
    CONV_GROUP:
        for (int grp = 0; grp < groups; grp++) {
#pragma HLS LOOP_TRIPCOUNT max = XSLOTS
            int y0 = 0, base = base0;
            uint32_t a_blk = a_grp;
        CONV_BAND:
            for (int b = 0; b < k.nb; b++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_H
                const bool last = b == k.nb - 1;
                const int nrows = last ? rows - y0 : k.rb, npix = last ? k.np_last : k.np_full;
                const Job j = FWD ? Job{U_FWD, grp, 0, y0, nrows, npix, last ? k.tot_last : k.tot_full, base, 0, 0, 0,
                                        false, false, false}
                                  : Job{U_BWD, 0, grp, y0, nrows, npix, 0, base, last ? 1 : 0, 0, 0, false, false, false};
                const int c1 = imin(planes, c0 + ps);
                const bool ld = next && c0 < c1;
                band_step<FWD>(n & 1, pa, ld, dr, act, grad, sl, c0, c1, j, k, out, d_at, d_nch, d_npix, r, beats, sat,
                               E2T_BUF_ARGS);
                if (ld) sl += ps_e;
                c0 = c1;
                dr = true;
                d_at = a_blk;
                d_nch = imin(width, chans - grp * width);
                d_npix = npix;
                pa ^= 1;
                y0 += k.rb;
                base += k.src_step;
                a_blk += (uint32_t)k.out_step;
            }
            a_grp += grp_e;
        }
        img_in += in_img;
        img_out += out_img;
    }
    drain_last(pa, k, out, d_at, FWD ? (uint32_t)k.howo : (uint32_t)k.hw, d_nch, d_npix, r, beats, sat, ac0, ac1);
}

// y = rshift_round(conv(x_q, W_q), r), saturated to int32.
void conv_fwd(const int8_t *act, const int8_t *wgt, int32_t *out, const Shape &sh, int r, uint32_t &sat,
              E2T_BUF_PARAMS) {
#pragma HLS INLINE
    Call k = make_call(sh);
    plan_fwd(k);
    load_w(wgt, k, wm);
    band_steps<true>(act, 0, out, k, r, sat, E2T_BUF_ARGS);
}

// g_x = rshift_round(conv_transpose(g_q, W_al), r), W_al[o] = rshift_round(W_q[o], max(s) - 12 - s[o]).
void conv_bwd_data(const int16_t *grad, const int8_t *wgt, const int8_t *wshift, int32_t *out, const Shape &sh,
                   int r, uint32_t &sat, E2T_BUF_PARAMS) {
#pragma HLS INLINE
    Call k = make_call(sh);
    int smax = 0;
    E2T_ENTER(BWD_SMAX);
BWD_SMAX:
    for (int o = 0; o < k.o; o++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_C
        E2T_TRIP(BWD_SMAX);
        const int s = wshift[o];
        if (s > smax) smax = s;
        dsh[o] = (int8_t)s;
    }
    k.smax = smax;
    plan_bwd(k);
    load_w(wgt, k, wm);
    band_steps<false>(0, grad, out, k, r, sat, E2T_BUF_ARGS);
}

// -- CONV_WGRAD --------------------------------------------------------------------------------

// One pass of weight-gradient tiles over the batch for the output groups [og0, og1) (one G store
// group): x (all C) and g (the group's channels) of image n+1 load in slices while the array
// computes image n's tiles. use_only (PSG recompute): only the array tiles marked in `only`.
void wg_pass(const int8_t *act, const int16_t *grad, const Call &k, int og0, int og1, bool pred,
             const bool only[GSLOTS][XSLOTS], bool use_only, E2T_BUF_PARAMS) {
    const int gch = imin(k.o, og1 * AO) - og0 * AO;
    (void)ac1;
    int ntile = 0;
    E2T_ENTER(WG_COUNT);
WG_COUNT:
    for (int og = og0; og < og1; og++)
        for (int cg = 0; cg < k.ncg; cg++) {
#pragma HLS PIPELINE II = 1
            E2T_TRIP(WG_COUNT);
            ntile += (!use_only || only[og][cg]) ? 1 : 0;
        }
    if (ntile == 0) return;
    const int psx = kdiv_ceil(k.c, ntile), psg = kdiv_ceil(gch, ntile);
    const uint32_t psx_e = (uint32_t)kmul(psx, k.hw), psg_e = (uint32_t)kmul(psg, k.howo);
    const int psv = k.fold ? (int)kmul(psx, k.k) : psx;  // x planes of a slice
    const int steps = pred ? (k.tl + 1) >> 1 : k.tf;
    // sweep trips of a tile: taps x max(Ho Wo, DMIN_W), or (pixel lanes) groups x max(entries, HALF)
    const int total = k.pix ? (int)kmul(k.ngr, imax(WGP_PACK && pred ? k.ckh : k.ck, HALF))
                            : (int)kmul(steps, imax(k.howo, DMIN_W));
    const int tile_e = k.kk << LOG_AI;  // G store entries of one tile, in each row
    const int mode = k.pix ? U_WGP : U_WG, tstep = k.pix ? k.ck : tile_e;  // pixel lanes: sums in ac0
    const uint32_t g_first = (uint32_t)kmul(og0 * AO, k.howo);
    load_x(act, 0, 0, k.c, 0, k, xb0);
    load_g(grad, g_first, 0, gch, k, gb0);
    uint32_t img_x = 0, img_g = g_first, none = 0;
WG_IMAGE:
    for (int n = 0; n < k.n; n++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_BATCH
        const bool next = n + 1 < k.n;
        uint32_t slx = img_x + k.img_x, slg = img_g + k.img_g;
        int cx = 0, cv = 0, cl = 0, gsbase = 0;
    WG_TILE_O:
        for (int og = og0; og < og1; og++)
        WG_TILE_C:
            for (int cg = 0; cg < k.ncg; cg++) {
#pragma HLS LOOP_TRIPCOUNT max = XSLOTS
                if (!use_only || only[og][cg]) {
                    const Job j = {mode, og - og0, cg, 0, 0, 0, total, 0, 0, gsbase, 0, pred, n == 0, false};
                    const int cx1 = imin(k.c, cx + psx), cl1 = imin(gch, cl + psg);
                    const bool ldx = next && cx < cx1, ldg = next && cl < cl1;
                    if ((n & 1) == 0) {
                        if (ldx) load_x(act, slx, cx, cx1, cv, k, xb1);
                        if (ldg) load_g(grad, slg, cl, cl1, k, gb1);
                        array_unit(j, k, xb0, gb0, wm, dsh, ac0, gs, 0, 0, 0, 0, none);
                    } else {
                        if (ldx) load_x(act, slx, cx, cx1, cv, k, xb0);
                        if (ldg) load_g(grad, slg, cl, cl1, k, gb0);
                        array_unit(j, k, xb1, gb1, wm, dsh, ac0, gs, 0, 0, 0, 0, none);
                    }
                    if (ldx) slx += psx_e;
                    if (ldg) slg += psg_e;
                    cx = cx1;
                    cv += psv;
                    cl = cl1;
                }
                gsbase += tstep;
            }
        img_x += k.img_x;
        img_g += k.img_g;
    }
    if (!WGP_PIX || !k.pix) {  // the last tile's last sweep, into the G store
        const Job fl = {U_WG, 0, 0, 0, 0, 0, pred ? 2 * AI : AI, 0, 0, 0, 0, pred, false, true};
        array_unit(fl, k, xb0, gb0, wm, dsh, ac0, gs, 0, 0, 0, 0, none);
        return;
    }
    // pixel lanes: the tiles' sums (entry j = c k^2 + t of tile i at ac0[r][i C k^2 + j] and
    // ac0[AO + r][...], the low fields and the rest; packed predictor: ac0[(j odd) AO + r][i C k^2 + j / 2])
    // into the G store's layout (row r, tile base + t AI + c), every row at once, one entry a cycle
    int og = og0, c = 0, t = 0, e = 0, tb = 0, gb_at = 0;
    E2T_ENTER(WGP_COPY);
WGP_COPY:
    while (og < og1) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = GSLOTS * HALF * KK
        E2T_TRIP(WGP_COPY);
        if (!use_only || only[og][0])
            for (int r = 0; r < AO; r++) {
                const int64_t lo = E2T_I64(ac0[r][tb + e]), rest = E2T_I64(ac0[AO + r][tb + e]);
                const int64_t packed = E2T_I64(ac0[((e & 1) << LOG_AO) + r][tb + (e >> 1)]);
                gs[r][gb_at + (t << LOG_AI) + c] = (acc_wide_t)(WGP_PACK && pred ? packed : shl64(rest, 16) + lo);
            }
        e++;
        if (++t == k.kk) {
            t = 0;
            if (++c == k.c) {
                c = 0;
                e = 0;
                tb += k.ck;
                gb_at += tile_e;
                og++;
            }
        }
    }
}

// Walks the entries (o, c, t) of output rows [o_first, o_first + rows) in OIHW order and their
// place in the G store: row bank ol mod AO, index obase + cbase + t AI + c mod AI.
struct GsCursor {
    int ol, c, t, obase, cbase;
    void next(const Call &k) {
        if (++t == k.kk) {
            t = 0;
            if ((++c & (AI - 1)) == 0) cbase += k.kk << LOG_AI;
            if (c == k.c) {
                c = 0;
                cbase = 0;
                if ((++ol & (AO - 1)) == 0) obase += k.ncg * (k.kk << LOG_AI);
            }
        }
    }
    int bank() const { return ol & (AO - 1); }
    int index() const { return obase + cbase + (t << LOG_AI) + (c & (AI - 1)); }
};

// The G store's group (output rows [og0 AO, og1 AO) x all C inputs) -> scratch (int64, OIHW, one
// burst for the group, whole beats when C k^2 is a multiple of one); max |G| into gmax.
void wg_writeback(int64_t *scratch, const Call &k, int og0, int og1, const acc_wide_t gs[AO][GS_DEPTH], int64_t &gmax) {
    const int ck = (int)kmul(k.c, k.kk), count = (int)kmul(imin(k.o, og1 * AO) - og0 * AO, ck);
    const int per = BW64 > 1 && ck % BW64 == 0 ? BW64 : 1;
    uint32_t a = (uint32_t)kmul(og0 * AO, ck);
    GsCursor cur = {0, 0, 0, 0, 0};
    int64_t m = gmax;
    E2T_ENTER(WG_WRITEBACK);
WG_WRITEBACK:
    for (int e0 = 0; e0 < count; e0 += per) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = E2T_DEPTH_SCRATCH
        E2T_TRIP(WG_WRITEBACK);
        for (int e = 0; e < per; e++) {
            const int64_t g = E2T_I64(gs[cur.bank()][cur.index()]);
            scratch[a + e] = g;
            if (abs64(g) > m) m = abs64(g);
            cur.next(k);
        }
        a += per;
    }
    gmax = m;
}

// CONV_WGRAD. FULL: scratch = G_full. PSG_ABS / PSG_RATIO: pass 1 writes G_msb (the predictor,
// two taps a DSP) and max|G_msb|; then every entry is decided (one burst over scratch: sure,
// the PSG tiles holding an unsure entry, recomputed), and per G store group the array tiles that
// meet such a PSG tile are recomputed at full precision and every sign is written.
void conv_wgrad(const int8_t *act, const int16_t *grad, int8_t *sgn, int64_t *scratch, const Shape &sh,
                uint32_t mode, uint64_t threshold, uint32_t &sure, uint32_t &tiles, uint32_t &recomputed,
                E2T_BUF_PARAMS) {
#pragma HLS INLINE
    Call k = make_call(sh);
    const bool psg = mode != E2T_WGRAD_FULL;
    const int row_e = k.ncg * (k.kk << LOG_AI);
    int gr = imin(k.nog, kdiv_ceil(GS_DEPTH - row_e + 1, row_e));  // output groups a G store group
    // the pixel-lane sweep, where it is built, when the input channels fill at most half the lanes
    // and an output row at least half (so it never uses fewer lanes than the channel sweep), at
    // stride 1 (AI consecutive input pixels of a channel: AI banks); its groups of output channels
    // also fit the output block (floor(PB / (C k^2)) of them)
    k.pix = WGP_PIX && k.s == 1 && (k.c << 1) <= AI && (k.wo << 1) >= AI;
    if (k.pix) {
        k.ck = (int)kmul(k.c, k.kk);
        k.ckh = (k.ck + 1) >> 1;
        k.ngr = (int)kmul(k.ho, (k.wo + AI - 1) >> LOG_AI);
        gr = imin(gr, kdiv_ceil(PB - k.ck + 1, k.ck));
    }
    // the kernel rows in lanes, where the pixel lanes do not run and C k lanes fit the array (the
    // stem's on the 64-bit boards: 9 of 16 lanes, 3 sweeps instead of 9): lane c k + ky sweeps input
    // channel c's kernel row ky, its plane shifted by the loads (load_planes), so that every lane
    // still reads one address
    const int ck1 = k.pix || k.k < 2 ? 0 : (int)kmul(k.c, k.k);
    if (!k.pix && k.k >= 2 && ck1 <= AI) {
        k.fold = true;
        k.pw = (int)kmul(k.p, k.w);
        k.tl = k.tf = k.k;
        // the spare lanes: m = floor((AI - C k) / k) channels' k rows a sweep cover column k - 1
        // of all C channels in the k - 1 sweeps of columns 0 .. k - 2 ((k - 1) m >= C; the
        // stem: lanes 9-14, 2 sweeps instead of 3), read through the predictor's port B
        const int m = kdiv_ceil(AI - ck1 + 1, k.k) - 1;
        k.spm = (int)kmul(m, k.k);
        k.sp = m >= 1 && k.spm - m >= k.c;  // (k - 1) m = m k - m
        k.spq = ck1;
        k.spc = m;
        if (k.sp) k.tf = k.k - 1;
    }
    static bool none[GSLOTS][XSLOTS];
    int64_t gmax = 0;
WG_GROUP1:
    for (int og0 = 0; og0 < k.nog; og0 += gr) {
#pragma HLS LOOP_TRIPCOUNT max = GSLOTS
        const int og1 = imin(k.nog, og0 + gr);
        wg_pass(act, grad, k, og0, og1, psg, none, false, E2T_BUF_ARGS);
        wg_writeback(scratch, k, og0, og1, gs, gmax);
    }
    sure = tiles = recomputed = 0;
    if (!psg) return;
    // the adaptive threshold R max|G_msb| (R <= 2^16), by shift and add
    int64_t rg = 0;
    E2T_ENTER(RATIO);
RATIO:
    for (int i = 0; i < 17; i++) {
#pragma HLS PIPELINE II = 1
        E2T_TRIP(RATIO);
        if ((threshold >> i) & 1) rg += gmax << i;
    }
    const bool use_abs = mode == E2T_WGRAD_PSG_ABS;
    const int64_t T = (int64_t)threshold;
    static bool flag[MAXA][MAXB];
#pragma HLS ARRAY_PARTITION variable = flag complete dim = 0
    const int na = (k.o + E2T_TILE_O - 1) / E2T_TILE_O, nbt = (k.c + E2T_TILE_I - 1) / E2T_TILE_I;
PSG_CLEAR:
    for (int a = 0; a < MAXA; a++)
        for (int b = 0; b < MAXB; b++) {
#pragma HLS UNROLL
            flag[a][b] = false;  // registers: one cycle
        }
    const int ck = (int)kmul(k.c, k.kk), count = (int)kmul(k.o, ck);
    const int per = BW64 > 1 && ck % BW64 == 0 ? BW64 : 1;
    {
        int c = 0, t = 0, a = 0, b = 0, ot = 0, ct = 0;
        uint32_t n_sure = 0, n_rec = 0;
        E2T_ENTER(PSG_DECIDE);
    PSG_DECIDE:
        for (int e0 = 0; e0 < count; e0 += per) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = E2T_DEPTH_SCRATCH
            E2T_TRIP(PSG_DECIDE);
            for (int e = 0; e < per; e++) {
                const int64_t v = abs64(scratch[e0 + e]);
                const bool ok = use_abs ? v >= T : shl64(v, e2t::RATIO_FRAC) >= rg;
                n_sure += ok ? 1 : 0;
                if (!ok && !flag[a][b]) {  // the PSG tile's first unsure entry: one more to recompute
                    flag[a][b] = true;
                    n_rec++;
                }
                if (++t == k.kk) {
                    t = 0;
                    if (++ct == E2T_TILE_I) {
                        ct = 0;
                        b++;
                    }
                    if (++c == k.c) {
                        c = 0;
                        ct = 0;
                        b = 0;
                        if (++ot == E2T_TILE_O) {
                            ot = 0;
                            a++;
                        }
                    }
                }
            }
        }
        sure = n_sure;
        recomputed = n_rec;
    }
    tiles = (uint32_t)kmul(na, nbt);
    // the array tiles to recompute: those meeting a PSG tile with an unsure entry
    static bool only[GSLOTS][XSLOTS];
    E2T_ENTER(PSG_AFLAG);
PSG_AFLAG:
    for (int og = 0; og < k.nog; og++)
        for (int cg = 0; cg < k.ncg; cg++) {
#pragma HLS PIPELINE II = 1
            E2T_TRIP(PSG_AFLAG);
            const int a0 = (og * AO) / E2T_TILE_O, a1 = imin(na - 1, (og * AO + AO - 1) / E2T_TILE_O);
            const int b0 = (cg * AI) / E2T_TILE_I, b1 = imin(nbt - 1, (cg * AI + AI - 1) / E2T_TILE_I);
            bool f = false;
            for (int da = 0; da <= (AO + E2T_TILE_O - 1) / E2T_TILE_O; da++)
                for (int db = 0; db <= (AI + E2T_TILE_I - 1) / E2T_TILE_I; db++)
                    if (a0 + da <= a1 && b0 + db <= b1) f = f || flag[a0 + da][b0 + db];
            only[og][cg] = f;
        }
WG_GROUP2:
    for (int og0 = 0; og0 < k.nog; og0 += gr) {
#pragma HLS LOOP_TRIPCOUNT max = GSLOTS
        const int og1 = imin(k.nog, og0 + gr);
        wg_pass(act, grad, k, og0, og1, false, only, true, E2T_BUF_ARGS);
        const int gcount = (int)kmul(imin(k.o, og1 * AO) - og0 * AO, ck);
        uint32_t a = (uint32_t)kmul(og0 * AO, ck);
        GsCursor cur = {0, 0, 0, 0, 0};
        E2T_ENTER(PSG_SIGN);
    PSG_SIGN:
        for (int e0 = 0; e0 < gcount; e0 += per) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = E2T_DEPTH_SCRATCH
            E2T_TRIP(PSG_SIGN);
            for (int e = 0; e < per; e++) {
                const int64_t gm = scratch[a + e];
                const bool redo = only[og0 + (cur.ol >> LOG_AO)][cur.c >> LOG_AI];
                const int64_t gf = redo ? E2T_I64(gs[cur.bank()][cur.index()]) : 0;
                const int64_t v = abs64(gm);
                const bool ok = use_abs ? v >= T : shl64(v, e2t::RATIO_FRAC) >= rg;
                sgn[a + e] = e2t::sign_of(ok ? gm : gf);
                cur.next(k);
            }
            a += per;
        }
    }
}

// -- UPDATE ------------------------------------------------------------------------------------

// Elements [a0, a0 + len) of DDR into buf[e mod BANKS][e / BANKS], whole beats of BEAT elements
// when `beats` (trips counted as loop LOOP): UPDATE's master into ac, momentum into gs, signs into
// xb; a plane of STATS and APPLY (per_element).
template <int LOOP, typename S, typename T, int BANKS, int DEPTH, int BEAT>
void chunk_in(const S *src, uint32_t a0, int len, bool beats, T buf[BANKS][DEPTH]) {
#pragma HLS INLINE
    const int per = beats ? BEAT : 1;
    E2T_ENTER_AT(LOOP);
CHUNK_IN:
    for (int e0 = 0; e0 < len; e0 += per) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = UCH / BEAT
        E2T_TRIP_AT(LOOP);
        for (int e = 0; e < per; e++) buf[(e0 + e) & (BANKS - 1)][(e0 + e) / BANKS] = src[a0 + e0 + e];
    }
}

// And back: buf[e mod BANKS][e / BANKS] as D (BEAT of them a beat) into DDR elements [a0, a0 + len).
template <int LOOP, typename D, int BANKS, int DEPTH, int BEAT>
void chunk_out(D *dst, uint32_t a0, int len, bool beats, const acc_wide_t buf[BANKS][DEPTH]) {
#pragma HLS INLINE
    const int per = beats ? BEAT : 1;
    E2T_ENTER_AT(LOOP);
CHUNK_OUT:
    for (int e0 = 0; e0 < len; e0 += per) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = UCH / BEAT
        E2T_TRIP_AT(LOOP);
        for (int e = 0; e < per; e++) dst[a0 + e0 + e] = (D)E2T_I64(buf[(e0 + e) & (BANKS - 1)][(e0 + e) / BANKS]);
    }
}

void load32_ac(const int32_t *src, uint32_t a0, int len, bool beats, acc_wide_t ac[NACC][PB]) {
    chunk_in<L_UPD_LOAD32, int32_t, acc_wide_t, NACC, PB, BW32>(src, a0, len, beats, ac);
}

void load32_gs(const int32_t *src, uint32_t a0, int len, bool beats, acc_wide_t gs[AO][GS_DEPTH]) {
    chunk_in<L_UPD_LOAD32, int32_t, acc_wide_t, AO, GS_DEPTH, BW32>(src, a0, len, beats, gs);
}

void load_signs(const int8_t *sgn, uint32_t a0, int len, bool beats, act_t xb[AI][XDEPTH]) {
    chunk_in<L_UPD_LOADSGN, int8_t, act_t, AI, XDEPTH, BW8>(sgn, a0, len, beats, xb);
}

void store32_ac(int32_t *dst, uint32_t a0, int len, bool beats, const acc_wide_t ac[NACC][PB]) {
    chunk_out<L_UPD_STORE32, int32_t, NACC, PB, BW32>(dst, a0, len, beats, ac);
}

void store32_gs(int32_t *dst, uint32_t a0, int len, bool beats, const acc_wide_t gs[AO][GS_DEPTH]) {
    chunk_out<L_UPD_STORE32, int32_t, AO, GS_DEPTH, BW32>(dst, a0, len, beats, gs);
}

// UPDATE: the sign-momentum step on `count` master weights and momenta, in place, in chunks of
// UCH elements: bursts in (master, momentum, signs), the array's two calls an element, bursts out.
void update(int32_t *master, int32_t *mom, const int8_t *sgn, uint32_t count, int e_w, uint64_t lr, uint64_t wd,
            uint32_t mu, uint32_t &sat, E2T_BUF_PARAMS) {
#pragma HLS INLINE
    (void)xb1;
    (void)gb1;
    (void)ac1;
    const Call none = no_call();
UPDATE:
    for (uint32_t a0 = 0; a0 < count; a0 += UCH) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_DEPTH_MASTER / UCH
        const int len = count - a0 < (uint32_t)UCH ? (int)(count - a0) : UCH;
        const bool b32 = len % BW32 == 0, b8 = len % BW8 == 0;
        load32_ac(master, a0, len, b32, ac0);
        load32_gs(mom, a0, len, b32, gs);
        load_signs(sgn, a0, len, b8, xb0);
        const Job j = {U_UPD, 0, 0, 0, 0, 0, 0, 0, 0, 0, len, false, false, false};
        array_unit(j, none, xb0, gb0, wm, dsh, ac0, gs, e_w, lr, wd, mu, sat);
        store32_ac(master, a0, len, b32, ac0);
        store32_gs(mom, a0, len, b32, gs);
    }
}

// -- STATS and APPLY ---------------------------------------------------------------------------

// APPLY's coefficients, once a call: M1[c], M2[c], B[c] from coef[3 c], coef[3 c + 1], coef[3 c + 2].
void load_coef(const int64_t *coef, int nc, coef_m_t m1[E2T_MAX_C], coef_m_t m2[E2T_MAX_C], coef_b_t cb[E2T_MAX_C]) {
    int c = 0, f = 0;
    E2T_ENTER(COEF_LOAD);
COEF_LOAD:
    for (int i = 0; i < 3 * nc; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = 3 * E2T_MAX_C
        E2T_TRIP(COEF_LOAD);
        const int64_t v = coef[i];
        if (f == 0) m1[c] = (coef_m_t)v;
        else if (f == 1) m2[c] = (coef_m_t)v;
        else cb[c] = (coef_b_t)v;
        if (++f == 3) {
            f = 0;
            c++;
        }
    }
}

// STATS or APPLY on one plane of len elements in one copy of the buffers: a in ac[e mod NACC][e /
// NACC], the mask at entry e and an int32 b's halves at entries XPLANE + 2 e (low) and + 1 (high)
// of gb (entry i at gb[i mod AO][i / AO]), an int8 b in xb[e mod AI][e / AI]; APPLY writes its
// outputs back over a. BW32 lanes a cycle (one int32 beat of a), each with DSP slices of its own
// (the array's ports take no more sources; hls/resources.py, elementwise_dsp_choice): APPLY's M1 a
// and M2 b, 25 x 32 bits, two slices each, and STATS's a_t b_t, 18 x 18 bits, one. A lane has one
// rounding shift, by `shift`: APPLY's of v, STATS's of a; then one saturation, to APPLY's output
// format or to STATS's 18 bits, by the bits above the format. STATS's b_t has a shift of its own,
// on 33 bits (u <= 32).
void elem_plane(const act_t xb[AI][XDEPTH], const grad_t gb[AO][GDEPTH], acc_wide_t ac[NACC][PB], int len, Elem &el,
                uint32_t &sat) {
#pragma HLS INLINE off
    uint32_t n_sat = 0;
    stat_sum_t s1 = 0;
    stat_sq_t s2 = 0;
    plane_sum_t sz = 0;
    int32_t mn = INT32_MAX, mx = INT32_MIN;
    E2T_ENTER(ELEM_SWEEP);
ELEM_SWEEP:
    for (int e0 = 0; e0 < len; e0 += BW32) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = XPLANE / BW32
#pragma HLS DEPENDENCE variable = ac inter false
        E2T_TRIP(ELEM_SWEEP);
        for (int l = 0; l < BW32; l++) {
            const int e = e0 + l, h = XPLANE + (e << 1);
            if (e >= len) continue;
            const int32_t a = (int32_t)E2T_I64(ac[e & (NACC - 1)][e / NACC]);
            const uint32_t b32 = ((uint32_t)E2T_INT(gb[(h + 1) & (AO - 1)][(h + 1) >> LOG_AO]) << 16) |
                                 ((uint32_t)E2T_INT(gb[h & (AO - 1)][h >> LOG_AO]) & 0xFFFF);
            const int32_t b = el.src2 == E2T_APPLY_SRC2_INT8 ? E2T_INT(xb[e & (AI - 1)][e >> LOG_AI])
                            : el.src2 == E2T_APPLY_SRC2_INT32 || el.product ? (int32_t)b32 : 0;
            const apply_v_t v = el.apply ? (apply_v_t)(E2T_MUL(el.m1, a) + E2T_MUL(el.m2, b) + el.b) : (apply_v_t)a;
            int64_t y = round_shift(E2T_I64(v), el.t);
            if ((el.relu && y < 0) || (el.mask && E2T_INT(gb[e & (AO - 1)][e >> LOG_AO]) <= 0)) y = 0;
            const bool in = fits(y, el.bits);
            const int32_t z = (int32_t)(in ? y : y < 0 ? el.lo : el.hi);
            n_sat += in ? 0 : 1;
            int32_t m = a;
            if (el.apply) {
                ac[e & (NACC - 1)][e / NACC] = (acc_wide_t)z;
                sz += z;
                m = z;
            } else {
                const int64_t ub = round_shift32(b, el.u);
                const bool bin = !el.product || fits(ub, e2t::STAT_BITS);
                const int32_t bt = !el.product ? z : (int32_t)(bin ? ub : ub < 0 ? el.lo : el.hi);
                n_sat += bin ? 0 : 1;
                s1 += (stat_t)z;
                s2 += (stat_prod_t)E2T_MUL((stat_t)z, (stat_t)bt);
            }
            mn = m < mn ? m : mn;
            mx = m > mx ? m : mx;
        }
    }
    el.s1 = s1;
    el.s2 = s2;
    el.sz = sz;
    el.mn = mn;
    el.mx = mx;
    sat += n_sat;
}

// A plane's inputs (DDR elements [a0, a0 + len)) into one copy of the buffers, in elem_plane's
// layout: src1 into ac, an int32 b (src2: `b32`) into gb as halves, an int8 b (act: `b8`) into xb,
// the mask (`bm`) into gb; bursts one after the other (act on the write bundle's read channel,
// the rest on the read bundle), whole beats where the plane fills them (`w32`, `w8`).
void elem_load(const int32_t *src1, const int32_t *src2, const int8_t *act, const int8_t *mask, uint32_t a0, int len,
               bool b32, bool b8, bool bm, bool w32, bool w8, act_t xb[AI][XDEPTH], grad_t gb[AO][GDEPTH],
               acc_wide_t ac[NACC][PB]) {
#pragma HLS INLINE off
    chunk_in<L_ELEM_LOAD32, int32_t, acc_wide_t, NACC, PB, BW32>(src1, a0, len, w32, ac);
    if (b32) {
        const int per = w32 ? BW32 : 1;
        E2T_ENTER(ELEM_LOAD32);
    HALVES_IN:
        for (int e0 = 0; e0 < len; e0 += per) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = XPLANE / BW32
            E2T_TRIP(ELEM_LOAD32);
            for (int e = 0; e < per; e++) {
                const int32_t v = src2[a0 + e0 + e];
                const int h = XPLANE + ((e0 + e) << 1);
                gb[h & (AO - 1)][h >> LOG_AO] = (grad_t)(int16_t)(uint16_t)v;
                gb[(h + 1) & (AO - 1)][(h + 1) >> LOG_AO] = (grad_t)(int16_t)(v >> 16);
            }
        }
    }
    if (b8) chunk_in<L_ELEM_LOAD8, int8_t, act_t, AI, XDEPTH, BW8>(act, a0, len, w8, xb);
    if (bm) chunk_in<L_ELEM_LOAD8, int8_t, grad_t, AO, GDEPTH, BW8>(mask, a0, len, w8, gb);
}

// APPLY's plane out of one copy: its outputs into DDR elements [a0, a0 + len) (int8, int16 or
// int32 by `of`, whole beats where the plane fills them), then its sum, min and max at stats[s0].
void elem_store(int8_t *dst8, int16_t *dst16, int32_t *out, int64_t *stats, uint32_t a0, uint32_t s0, int len,
                uint32_t of, bool w8, bool w16, bool w32, const Elem &el, const acc_wide_t ac[NACC][PB]) {
#pragma HLS INLINE off
    if (of == E2T_APPLY_OUT_INT8) chunk_out<L_ELEM_STORE, int8_t, NACC, PB, BW8>(dst8, a0, len, w8, ac);
    else if (of == E2T_APPLY_OUT_INT16) chunk_out<L_ELEM_STORE, int16_t, NACC, PB, BW16>(dst16, a0, len, w16, ac);
    else chunk_out<L_ELEM_STORE, int32_t, NACC, PB, BW32>(out, a0, len, w32, ac);
    stats[s0] = E2T_I64(el.sz);
    stats[s0 + 1] = el.mn;
    stats[s0 + 2] = el.mx;
}

// STATS (apply false) or APPLY over the N x C planes of P = H W elements, in DDR order: plane
// (n, c) is elements [(n C + c) P, (n C + c + 1) P) of every tensor, read once. The planes stream
// through two copies of the buffers they borrow (ac0 / ac1, gb0 / gb1, xb0 / xb1): after the first
// plane's loads, each step loads the next plane into the idle copy while the current one is swept
// and (APPLY) stored with its plane sums; the load and the sweep touch disjoint copies and ports
// (read bundle; sweep, write bundle), so the schedule overlaps them, as the conv ops' steps. STATS
// adds each plane's sums to its channel's (C x 4 on chip) and writes stats[c] after the last one.
// The rest of the on-chip state: the C x 3 coefficients.
void per_element(bool apply, const int32_t *src1, const int32_t *src2, const int8_t *act, const int8_t *mask,
                 const int64_t *coef, int8_t *dst8, int16_t *dst16, int32_t *out, int64_t *stats, const Shape &sh,
                 uint32_t mode, int t, int u, uint32_t &sat, E2T_BUF_PARAMS) {
#pragma HLS INLINE
    (void)wm;
    (void)gs;
    (void)dsh;
    const uint32_t of = (mode >> E2T_APPLY_OUT_SHIFT) & E2T_APPLY_OUT_MASK;
    Elem el;
    el.apply = apply;
    el.product = !apply && mode == E2T_STATS_PRODUCT;
    el.relu = apply && ((mode >> E2T_APPLY_RELU_SHIFT) & E2T_APPLY_RELU_MASK);
    el.mask = apply && ((mode >> E2T_APPLY_MASK_SHIFT) & E2T_APPLY_MASK_MASK);
    el.src2 = apply ? (int)((mode >> E2T_APPLY_SRC2_SHIFT) & E2T_APPLY_SRC2_MASK) : E2T_APPLY_SRC2_NONE;
    el.t = t;
    el.u = u < 32 ? u : 32;
    el.bits = !apply ? e2t::STAT_BITS : of == E2T_APPLY_OUT_INT8 ? 8 : of == E2T_APPLY_OUT_INT16 ? 16 : 32;
    el.lo = !apply ? -((int64_t)1 << (e2t::STAT_BITS - 1)) : of == E2T_APPLY_OUT_INT8 ? e2t::ACT_LO
          : of == E2T_APPLY_OUT_INT16 ? e2t::GRAD_LO : e2t::OUT_LO;
    el.hi = -el.lo - 1;
    el.m1 = el.m2 = 0;
    el.b = 0;
    coef_m_t m1[E2T_MAX_C], m2[E2T_MAX_C];
    coef_b_t cb[E2T_MAX_C];
    stat_sum_t s1[E2T_MAX_C];
    stat_sq_t s2[E2T_MAX_C];
    int32_t mn[E2T_MAX_C], mx[E2T_MAX_C];
    if (apply) load_coef(coef, sh.c, m1, m2, cb);
    const int np = (int)kmul(sh.h, sh.w);
    const bool w32 = np % BW32 == 0, w16 = np % BW16 == 0, w8 = np % BW8 == 0;
    const bool b32 = el.product || el.src2 == E2T_APPLY_SRC2_INT32, b8 = el.src2 == E2T_APPLY_SRC2_INT8;
    elem_load(src1, src2, act, mask, 0, np, b32, b8, el.mask, w32, w8, xb0, gb0, ac0);
    uint32_t a0 = 0, s0 = 0;
    int p = 0;  // the copy of the current plane
PLANES_N:
    for (int n = 0; n < sh.n; n++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_BATCH
    PLANES_C:
        for (int c = 0; c < sh.c; c++) {
#pragma HLS LOOP_TRIPCOUNT max = E2T_MAX_C
            const bool ld = n + 1 < sh.n || c + 1 < sh.c;
            const uint32_t next = a0 + (uint32_t)np;
            if (apply) {
                el.m1 = m1[c];
                el.m2 = m2[c];
                el.b = cb[c];
            }
            if (p == 0) {
                if (ld) elem_load(src1, src2, act, mask, next, np, b32, b8, el.mask, w32, w8, xb1, gb1, ac1);
                elem_plane(xb0, gb0, ac0, np, el, sat);
                if (apply) elem_store(dst8, dst16, out, stats, a0, s0, np, of, w8, w16, w32, el, ac0);
            } else {
                if (ld) elem_load(src1, src2, act, mask, next, np, b32, b8, el.mask, w32, w8, xb0, gb0, ac0);
                elem_plane(xb1, gb1, ac1, np, el, sat);
                if (apply) elem_store(dst8, dst16, out, stats, a0, s0, np, of, w8, w16, w32, el, ac1);
            }
            if (!apply) {
                s1[c] = (n == 0 ? (stat_sum_t)0 : s1[c]) + el.s1;
                s2[c] = (n == 0 ? (stat_sq_t)0 : s2[c]) + el.s2;
                mn[c] = n == 0 || el.mn < mn[c] ? el.mn : mn[c];
                mx[c] = n == 0 || el.mx > mx[c] ? el.mx : mx[c];
            }
            a0 = next;
            s0 += 3;
            p ^= 1;
        }
    }
    if (apply) return;
    E2T_ENTER(STATS_OUT);
STATS_OUT:
    for (int i = 0; i < 4 * sh.c; i++) {
#pragma HLS PIPELINE II = 1
#pragma HLS LOOP_TRIPCOUNT max = 4 * E2T_MAX_C
        E2T_TRIP(STATS_OUT);
        const int c = i >> 2, f = i & 3;
        stats[i] = f == 0 ? E2T_I64(s1[c]) : f == 1 ? E2T_I64(s2[c]) : f == 2 ? (int64_t)mn[c] : (int64_t)mx[c];
    }
}

}  // namespace

void e2t_engine(uint32_t op, uint32_t mode, uint32_t batch, uint32_t c_in, uint32_t h_in, uint32_t w_in,
                uint32_t c_out, uint32_t kernel, uint32_t stride, uint32_t pad, uint32_t shift, uint64_t threshold,
                uint32_t count, int32_t e_w, uint64_t lr, uint64_t wd, uint32_t mu,
                const int8_t *act, const int8_t *wgt, const int8_t *wshift, const int16_t *grad, int32_t *out,
                int8_t *sgn, int64_t *scratch, int32_t *master, int32_t *mom,
                uint32_t *status, uint32_t *saturations, uint32_t *psg_sure, uint32_t *psg_tiles,
                uint32_t *psg_recomputed, uint32_t shift2, const int32_t *src1, const int32_t *src2,
                const int8_t *mask, const int64_t *coef, int8_t *dst8, int16_t *dst16, int64_t *stats) {
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
    #pragma HLS INTERFACE mode=m_axi port=act offset=slave bundle=gmem_wr depth=E2T_DEPTH_ACT max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=act offset=0x0A4 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=wgt offset=slave bundle=gmem_rd depth=E2T_DEPTH_WGT max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=wgt offset=0x0B0 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=wshift offset=slave bundle=gmem_rd depth=E2T_DEPTH_WSHIFT max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=wshift offset=0x0BC bundle=control
    #pragma HLS INTERFACE mode=m_axi port=grad offset=slave bundle=gmem_rd depth=E2T_DEPTH_GRAD max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=grad offset=0x0C8 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=out offset=slave bundle=gmem_wr depth=E2T_DEPTH_OUT max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=out offset=0x0D4 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=sgn offset=slave bundle=gmem_wr depth=E2T_DEPTH_SGN max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=sgn offset=0x0E0 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=scratch offset=slave bundle=gmem_wr depth=E2T_DEPTH_SCRATCH max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=scratch offset=0x0EC bundle=control
    #pragma HLS INTERFACE mode=m_axi port=master offset=slave bundle=gmem_rd depth=E2T_DEPTH_MASTER max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=master offset=0x0F8 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=mom offset=slave bundle=gmem_wr depth=E2T_DEPTH_MOM max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=mom offset=0x104 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=status offset=0x110 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=saturations offset=0x118 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=psg_sure offset=0x120 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=psg_tiles offset=0x128 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=psg_recomputed offset=0x130 bundle=control
    #pragma HLS INTERFACE mode=s_axilite port=shift2 offset=0x138 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=src1 offset=slave bundle=gmem_rd depth=E2T_DEPTH_SRC1 max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=src1 offset=0x140 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=src2 offset=slave bundle=gmem_rd depth=E2T_DEPTH_SRC2 max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=src2 offset=0x14C bundle=control
    #pragma HLS INTERFACE mode=m_axi port=mask offset=slave bundle=gmem_rd depth=E2T_DEPTH_MASK max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=mask offset=0x158 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=coef offset=slave bundle=gmem_rd depth=E2T_DEPTH_COEF max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=coef offset=0x164 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=dst8 offset=slave bundle=gmem_wr depth=E2T_DEPTH_DST8 max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=dst8 offset=0x170 bundle=control
    #pragma HLS INTERFACE mode=m_axi port=dst16 offset=slave bundle=gmem_wr depth=E2T_DEPTH_DST16 max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=dst16 offset=0x17C bundle=control
    #pragma HLS INTERFACE mode=m_axi port=stats offset=slave bundle=gmem_wr depth=E2T_DEPTH_STATS max_widen_bitwidth=E2T_AXI_BITS
    #pragma HLS INTERFACE mode=s_axilite port=stats offset=0x188 bundle=control
    // END GENERATED INTERFACE
    // On-chip buffers (docs/engine.md): x and g images twice (ping-pong), the weights, the output
    // blocks twice (LUT-RAM), the weight-gradient G store; every op uses them (never two at once).
    static act_t xb0[AI][XDEPTH], xb1[AI][XDEPTH];
    static grad_t gb0[AO][GDEPTH], gb1[AO][GDEPTH];
    static wgt_t wm[AI][WDEPTH];
    static acc_wide_t ac0[NACC][PB], ac1[NACC][PB];
    static acc_wide_t gs[AO][GS_DEPTH];
    static int8_t dsh[E2T_MAX_C];
#pragma HLS ARRAY_PARTITION variable = xb0 complete dim = 1
#pragma HLS ARRAY_PARTITION variable = xb1 complete dim = 1
#pragma HLS ARRAY_PARTITION variable = gb0 complete dim = 1
#pragma HLS ARRAY_PARTITION variable = gb1 complete dim = 1
#pragma HLS ARRAY_PARTITION variable = wm complete dim = 1
#pragma HLS ARRAY_PARTITION variable = ac0 complete dim = 1
#pragma HLS ARRAY_PARTITION variable = ac0 cyclic factor = BW32 dim = 2
#pragma HLS ARRAY_PARTITION variable = ac1 complete dim = 1
#pragma HLS ARRAY_PARTITION variable = ac1 cyclic factor = BW32 dim = 2
#pragma HLS ARRAY_PARTITION variable = gs complete dim = 1
#pragma HLS ARRAY_PARTITION variable = dsh complete dim = 1
#pragma HLS BIND_STORAGE variable = xb0 type = ram_t2p impl = bram
#pragma HLS BIND_STORAGE variable = xb1 type = ram_t2p impl = bram
#pragma HLS BIND_STORAGE variable = gb0 type = ram_t2p impl = bram
#pragma HLS BIND_STORAGE variable = gb1 type = ram_t2p impl = bram
#pragma HLS BIND_STORAGE variable = wm type = ram_t2p impl = bram
#pragma HLS BIND_STORAGE variable = gs type = ram_t2p impl = bram
#pragma HLS BIND_STORAGE variable = ac0 type = ram_s2p impl = lutram
#pragma HLS BIND_STORAGE variable = ac1 type = ram_s2p impl = lutram
#pragma HLS ALLOCATION function instances = array_unit limit = 1
#pragma HLS ALLOCATION function instances = load_x limit = 1
#pragma HLS ALLOCATION function instances = load_g limit = 1
#pragma HLS ALLOCATION function instances = drain limit = 1
#pragma HLS ALLOCATION function instances = load_w limit = 1
#pragma HLS ALLOCATION function instances = kmul limit = 1
#pragma HLS ALLOCATION function instances = kdiv_ceil limit = 1
#pragma HLS ALLOCATION function instances = elem_load limit = 1
#pragma HLS ALLOCATION function instances = elem_plane limit = 1
#pragma HLS ALLOCATION function instances = elem_store limit = 1
    uint32_t sat = 0, sure = 0, tiles = 0, recomputed = 0;
    Shape sh;
    const uint32_t st = e2t::check_call(op, mode, batch, c_in, h_in, w_in, c_out, kernel, stride, pad, shift, threshold,
                                        count, e_w, lr, wd, mu, wshift, sgn, shift2, coef, sh);
    if (st != E2T_STATUS_OK) {
        // refused: no buffer is written, only the status registers
    } else if (op == E2T_OP_CONV_FWD) {
        conv_fwd(act, wgt, out, sh, (int)shift, sat, E2T_BUF_ARGS);
    } else if (op == E2T_OP_CONV_BWD_DATA) {
        conv_bwd_data(grad, wgt, wshift, out, sh, (int)shift, sat, E2T_BUF_ARGS);
    } else if (op == E2T_OP_CONV_WGRAD) {
        conv_wgrad(act, grad, sgn, scratch, sh, mode, threshold, sure, tiles, recomputed, E2T_BUF_ARGS);
    } else if (op == E2T_OP_UPDATE) {
        update(master, mom, sgn, count, e_w, lr, wd, mu, sat, E2T_BUF_ARGS);
    } else if (op == E2T_OP_STATS || op == E2T_OP_APPLY) {
        per_element(op == E2T_OP_APPLY, src1, src2, act, mask, coef, dst8, dst16, out, stats, sh, mode, (int)shift,
                    (int)shift2, sat, E2T_BUF_ARGS);
    }
    *status = st;
    *saturations = sat;
    *psg_sure = sure;
    *psg_tiles = tiles;
    *psg_recomputed = recomputed;
}
