// The ops of the engine's fast CPU build, written once for every CPU path: the build compiles this
// file once per path (hls/fast/e2t_fast_simd.h says which and with what flags), each copy in its
// own namespace E2T_FAST_NS, and hls/fast/e2t_fast.cpp picks one at run time. Same integers as
// the HLS kernel (hls/src/e2t_engine.cpp, the spec of every op) and the numeric contract
// (contract/numerics.py, docs/numerics.md); element-wise arithmetic from e2t_numerics.h.
//
// Every convolution is an int16 GEMM on the path's `vdot` (int16 x int16, two products summed
// into an int32 lane) without an im2col matrix: the operand that varies across the L vector lanes
// is loaded straight from a re-laid-out, zero-padded int16 copy of one input, the other is a
// broadcast int16 pair; micro-tiles keep MR x NR accumulators in registers (row_dot).
//
// - CONV_FWD: lanes = L output pixels of a row, pair = two input channels at one tap. The copy
//   holds (x[c], x[c + 1]) per padded position (stride 2: even and odd columns apart), so a tap's
//   operand is one contiguous load; weight pairs are broadcast. With AVX-512 VNNI the lanes hold
//   channel quads instead, x + 128 as unsigned bytes, for vpdpbusd (four int8 products per lane
//   and step; the offset's share, 128 sum W[o], is subtracted at the end). A map narrower than
//   the lanes (its width divides L) gets whole rows per vector from a copy per kernel column.
//   The kernel's shape check keeps every sum in int32, as in the native kernel.
// - CONV_BWD_DATA: the transposed conv as a gather over (output-channel pair, tap) for each output
//   phase (stride 2: the 4 parities of (y, x), each with only its own taps). Aligned weights reach
//   2^19, too wide for one int16 pass: either W_al / 2^z fits (2^z the largest power of two
//   dividing every weight, the usual case as channel shifts differ little) or W_al = H 2^10 + L
//   with |H|, |L| <= 2^9 + 1, two passes on the same gradient loads. int32 lanes are widened into
//   int64 every F steps, F from the operands' ranges so that no lane can overflow. Narrow phase
//   rows are packed as in CONV_FWD.
// - CONV_WGRAD: lanes = L output channels of a packed gradient, pair = two neighbouring output
//   pixels; the activations (x_q, or x_msb for the PSG predictor) are broadcast from an int16
//   copy. Lanes are widened into per-thread int64 sums every <= 255 pixel pairs (|x g| <= 2^22;
//   the predictor's |x_msb g| <= 2^18 allows 4095). PSG: both activation copies in one pass,
//   G_msb for every entry, the kernel's tile decisions and counts, then G_full only for the input
//   channels x output-channel vectors that meet a tile holding an unsure entry.
// - UPDATE: e2t::sign_update element by element.
// - STATS, APPLY: streaming passes, one (n, c) plane of H W elements at a time. STATS in int32
//   lanes (a_t, b_t are int18; their products widened to int64); APPLY's sums M1 a + M2 b + B in
//   int64 lanes (AVX2: vpmuldq on even and odd elements), its clamps in int32 lanes.
//
// Threads: OpenMP over output blocks (fwd, bwd), pixel blocks (wgrad: per-thread int64 sums
// added at the end; integer sums do not depend on the order) or planes (STATS: per-plane sums
// added per channel in image order), for ops of at least PAR_* work; smaller ones run on the
// calling thread alone. Copies live in grow-only buffers
// per calling thread, reused across calls. No code here has external linkage except the entry
// point in E2T_FAST_NS (no STL, static inline helpers), so copies built for different CPUs never
// share a function: the build checks the objects for weak symbols.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "e2t_checks.h"
#include "e2t_fast_simd.h"
#include "e2t_numerics.h"
#include "e2t_regs.h"
#include "engine_config.h"

#ifndef E2T_FAST_NS
#error "the build names this path's namespace with -DE2T_FAST_NS=..."
#endif

static_assert(E2T_ACC_FWD_BITS <= 32, "the fast build sums the forward pass in int32, as the native kernel does");
static_assert(E2T_ACC_WIDE_BITS <= 64, "backward and weight-gradient sums are int64");
static_assert((int64_t)E2T_MAX_BATCH * E2T_MAX_C * (E2T_MAX_H + 2 * E2T_MAX_PAD) *
                      (E2T_MAX_W + 2 * E2T_MAX_PAD + E2T_MAX_K + 2 * E2T_LANES) < ((int64_t)1 << 31),
              "offsets into the operand copies are int32");

namespace {

// ------------------------------------------------------------------------------------------
// Shapes, small helpers, an array type (internal linkage, unlike std::vector's instantiations).

using e2t::Shape;

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
inline int round_up(int a, int b) { return ceil_div(a, b) * b; }
inline int64_t abs64(int64_t v) { return v < 0 ? -v : v; }
template <class T>
inline T tmin(T a, T b) { return a < b ? a : b; }
template <class T>
inline T tmax(T a, T b) { return a < b ? b : a; }

// A growable array of trivially copyable T, zero-initialised on construction.
template <class T>
class Arr {
  public:
    explicit Arr(size_t n = 0) : n_(n), cap_(n) {
        p_ = n ? (T *)calloc(n, sizeof(T)) : nullptr;
        if (n && !p_) abort();
    }
    ~Arr() { free(p_); }
    Arr(const Arr &) = delete;
    Arr &operator=(const Arr &) = delete;
    T &operator[](size_t i) { return p_[i]; }
    const T &operator[](size_t i) const { return p_[i]; }
    T *data() { return p_; }
    const T *begin() const { return p_; }
    const T *end() const { return p_ + n_; }
    size_t size() const { return n_; }
    bool empty() const { return n_ == 0; }
    void clear() { n_ = 0; }
    void push_back(const T &v) {
        if (n_ == cap_) {
            cap_ = cap_ ? 2 * cap_ : 16;
            p_ = (T *)realloc(p_, cap_ * sizeof(T));
            if (!p_) abort();
        }
        p_[n_++] = v;
    }

  private:
    T *p_;
    size_t n_, cap_;
};

// ------------------------------------------------------------------------------------------
// Threads and scratch memory.

// An op forks OpenMP threads only from these sizes on. Each parallel region wakes the pool's
// sleeping thread (hls/csim.py asks libgomp for the passive wait policy): on the 2-core virtual
// machine 15 us to a few hundred, a scheduler slice when another process holds the other core,
// and the other core's cache holds none of the operands. Measured there with calls alternating
// one and two threads after 1 ms idle: two were slower up to 7.2 M MACs (3x3 and 1x1 convs,
// every conv op) and took 0.6x the time at 12.8 M; STATS and APPLY broke even about 1 M
// elements, UPDATE (heavier per element) about 256 K.
const int64_t PAR_MACS = (int64_t)1 << 23;      // CONV_FWD, CONV_BWD_DATA, CONV_WGRAD: multiply-accumulates
const int64_t PAR_ELEMENTS = (int64_t)1 << 20;  // STATS, APPLY: elements
const int64_t PAR_UPDATES = (int64_t)1 << 18;   // UPDATE: weights

inline bool conv_parallel(const Shape &sh) {
    return (int64_t)sh.n * sh.o * sh.c * sh.k * sh.k * sh.ho * sh.wo >= PAR_MACS;
}

inline int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// Grow-only, 64-byte aligned buffers, one set per calling thread (fresh pages cost more than the
// work on small layers). Slots: 0 operand copy / STATS' per-plane sums, 1 weights (fwd) / packed gradient (wgrad),
// 2 offsets (fwd) / G (wgrad), 3-4 weights and offsets of a bwd phase / G_full (wgrad), 5 aligned
// weights, 6 per-thread wgrad sums, 7 the x_msb copy (PSG) / packed gradient rows (bwd).
struct Buf {
    void *p = nullptr;
    size_t cap = 0;
    ~Buf() { free(p); }
    template <class T>
    T *get(size_t count) {
        const size_t bytes = count * sizeof(T) + 64 * sizeof(int64_t);
        if (bytes > cap) {
            free(p);
            cap = (bytes + 4095) & ~(size_t)4095;
            p = aligned_alloc(64, cap);
            if (!p) abort();
        }
        return (T *)p;
    }
};
thread_local Buf tl_buf[8];

inline int32_t pack16(int lo, int hi) { return (int32_t)((uint32_t)(uint16_t)lo | ((uint32_t)(uint16_t)hi << 16)); }

// Micro-tile sizes: paths with 32 vector registers (AVX-512) hold more accumulators.
#if defined(E2T_PATH_VNNI512) || defined(E2T_PATH_VNNI256)
const int FWD_MR = 8, FWD_NR = 3;    // output channels (broadcast weight pairs) x L-pixel groups
const int BWD1_MR = 8, BWD1_NR = 3;  // one pass (W_al / 2^z): input channels x L-pixel groups
const int BWD2_MR = 4, BWD2_NR = 3;  // two passes (H, L) on the same gradient loads
const int WG_MR = 12, WG_NR = 2;     // (c, kh, kw) rows (broadcast activation pairs) x L-channel vectors
#else
const int FWD_MR = 4, FWD_NR = 2;
const int BWD1_MR = 4, BWD1_NR = 2;
const int BWD2_MR = 3, BWD2_NR = 2;
const int WG_MR = 6, WG_NR = 2;
#endif

// ------------------------------------------------------------------------------------------
// Rows of the re-laid-out operand copies.

#ifdef __AVX2__
// Pairs (a[i], b[i]) of 16 int16 lanes, in order, into d[0..16).
inline void store_pairs16(int32_t *d, __m256i a, __m256i b) {
    const __m256i lo = _mm256_unpacklo_epi16(a, b), hi = _mm256_unpackhi_epi16(a, b);
    _mm256_storeu_si256((__m256i *)d, _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256((__m256i *)(d + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
}
#endif

// d[col] for col in [0, len), len >= p + W: the pair (r0[col - p], r1[col - p]) (0 for a null
// r1), 0 outside [0, W).
template <class T>
void pair_row(const T *r0, const T *r1, int W, int p, int32_t *d, int len) {
    for (int col = 0; col < p; col++) d[col] = 0;
    int ix = 0;
#ifdef __AVX2__
    for (; ix + 16 <= W; ix += 16) {
        __m256i a, b = _mm256_setzero_si256();
        if (sizeof(T) == 1) {
            a = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r0 + ix)));
            if (r1) b = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(r1 + ix)));
        } else {
            a = _mm256_loadu_si256((const __m256i *)(r0 + ix));
            if (r1) b = _mm256_loadu_si256((const __m256i *)(r1 + ix));
        }
        store_pairs16(d + p + ix, a, b);
    }
#endif
    for (; ix < W; ix++) d[p + ix] = pack16(r0[ix], r1 ? r1[ix] : 0);
    for (int col = p + W; col < len; col++) d[col] = 0;
}

// Stride-2 copies hold half rows of Wh elements. Without AVX-512's masked stores the last chunk
// of a half row would be finished element by element from a buffer just written by vectors, a
// store-forwarding stall: there Wh is rounded up to whole chunks of 8.
#if defined(__AVX512BW__) && defined(__AVX512VL__)
const int WH_CHUNK = 1;
#else
const int WH_CHUNK = 8;
#endif

// d[j] = t[2 j] and, when `odd`, d[Wh + j] = t[2 j + 1], for j < Wh (t holds 2 Wh elements, and
// with AVX-512 16 readable ones past them).
template <class T>
void deinterleave(const T *t, T *d, int Wh, bool odd) {
    int j = 0;
#ifdef __AVX2__
    if (sizeof(T) == 4) {
        const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        for (; j < Wh; j += 8) {
            if (WH_CHUNK == 8 && j + 8 > Wh) break;
            const __m256i p0 = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(t + 2 * j)), idx);
            const __m256i p1 = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(t + 2 * j + 8)), idx);
            const __m256i ev = _mm256_permute2x128_si256(p0, p1, 0x20), od = _mm256_permute2x128_si256(p0, p1, 0x31);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
            if (j + 8 > Wh) {
                const __mmask8 m = (__mmask8)((1u << (Wh - j)) - 1);
                _mm256_mask_storeu_epi32(d + j, m, ev);
                if (odd) _mm256_mask_storeu_epi32(d + Wh + j, m, od);
                j = Wh;
                break;
            }
#endif
            _mm256_storeu_si256((__m256i *)(d + j), ev);
            if (odd) _mm256_storeu_si256((__m256i *)(d + Wh + j), od);
        }
    } else {
        const __m256i shuf = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                              0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
        for (; j < Wh; j += 8) {
            if (WH_CHUNK == 8 && j + 8 > Wh) break;
            // 16 elements -> [evens of lane 0, evens of lane 1, odds of lane 0, odds of lane 1]
            const __m256i v = _mm256_permute4x64_epi64(
                _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)(t + 2 * j)), shuf), 0xD8);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
            if (j + 8 > Wh) {
                const __mmask8 m = (__mmask8)((1u << (Wh - j)) - 1);
                _mm_mask_storeu_epi16(d + j, m, _mm256_castsi256_si128(v));
                if (odd) _mm_mask_storeu_epi16(d + Wh + j, m, _mm256_extracti128_si256(v, 1));
                j = Wh;
                break;
            }
#endif
            _mm_storeu_si128((__m128i *)(d + j), _mm256_castsi256_si128(v));
            if (odd) _mm_storeu_si128((__m128i *)(d + Wh + j), _mm256_extracti128_si256(v, 1));
        }
    }
#endif
    for (; j < Wh; j++) {
        d[j] = t[2 * j];
        if (odd) d[Wh + j] = t[2 * j + 1];
    }
}

#ifdef __AVX2__
// e2t::msb on 16 int16 lanes holding int8 values; used only when equal to e2t::msb on all 256
// inputs (msb_vector_ok), else the table.
inline __m256i msb16(__m256i v) {
    v = _mm256_srai_epi16(_mm256_add_epi16(v, _mm256_set1_epi16(1 << (e2t::MSB_SHIFT - 1))), e2t::MSB_SHIFT);
    return _mm256_max_epi16(_mm256_min_epi16(v, _mm256_set1_epi16((int16_t)e2t::MSB_HI)), _mm256_set1_epi16((int16_t)e2t::MSB_LO));
}
// The same on 8 lanes.
inline __m128i msb8(__m128i v) {
    v = _mm_srai_epi16(_mm_add_epi16(v, _mm_set1_epi16(1 << (e2t::MSB_SHIFT - 1))), e2t::MSB_SHIFT);
    return _mm_max_epi16(_mm_min_epi16(v, _mm_set1_epi16((int16_t)e2t::MSB_HI)), _mm_set1_epi16((int16_t)e2t::MSB_LO));
}
bool msb_vector_check() {
    alignas(32) int16_t in[256], got[256], got8[256];
    for (int i = 0; i < 256; i++) in[i] = (int16_t)(i - 128);
    for (int i = 0; i < 256; i += 16)
        _mm256_store_si256((__m256i *)(got + i), msb16(_mm256_load_si256((const __m256i *)(in + i))));
    for (int i = 0; i < 256; i += 8)
        _mm_store_si128((__m128i *)(got8 + i), msb8(_mm_load_si128((const __m128i *)(in + i))));
    for (int i = 0; i < 256; i++)
        if (got[i] != e2t::msb((int8_t)in[i]) || got8[i] != got[i]) return false;
    return true;
}
#endif


// src[0..W) as int16 (x_msb when use_msb) into d[0..W).
inline void act_run16(const int8_t *src, int W, bool use_msb, const int16_t *lut, int16_t *d) {
    int ix = 0;
#ifdef __AVX2__
    static const bool vec_msb = msb_vector_check();
    if (!use_msb || vec_msb) {
        for (; ix + 16 <= W; ix += 16) {
            __m256i v = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(src + ix)));
            _mm256_storeu_si256((__m256i *)(d + ix), use_msb ? msb16(v) : v);
        }
        for (; ix + 8 <= W; ix += 8) {
            __m128i v = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(src + ix)));
            _mm_storeu_si128((__m128i *)(d + ix), use_msb ? msb8(v) : v);
        }
    }
#endif
    for (; ix < W; ix++) d[ix] = lut[(uint8_t)src[ix]];
}

// d[col] for col in [0, len), len >= p + W: src[col - p] as int16 (x_msb when use_msb), 0 outside.
void act_row16(const int8_t *src, int W, int p, bool use_msb, const int16_t *lut, int16_t *d, int len) {
    for (int col = 0; col < p; col++) d[col] = 0;
    act_run16(src, W, use_msb, lut, d + p);
    for (int col = p + W; col < len; col++) d[col] = 0;
}

#ifdef __AVX2__
// Copies straight from the int8 rows, in registers: building a row in a bounce buffer and
// reading it back right after its narrow stores stalls on store forwarding. With AVX-512 the
// loads are masked to the row's own bytes; with AVX2 they read 16 whole bytes, which must lie
// inside the input buffer [lo, hi) (else the caller falls back), and zero the ones off the row.
#if defined(__AVX512BW__) && defined(__AVX512VL__)
const bool MASKED = true;
#else
const bool MASKED = false;
#endif

// The 16 bytes at row[ix0 ...], those outside [0, W) as 0; false if AVX2 cannot read them.
inline bool row_window(const int8_t *row, int W, int ix0, const int8_t *lo, const int8_t *hi, __m128i &v) {
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    (void)lo, (void)hi;
    const int a = ix0 < 0 ? -ix0 : 0, b = W - ix0 < 16 ? W - ix0 : 16;  // bytes [a, b) are in the row
    v = _mm_maskz_loadu_epi8((__mmask16)(b > a ? ((1u << b) - 1) & ~((1u << a) - 1) : 0), row + ix0);
    return true;
#else
    if (row + ix0 < lo || row + ix0 + 16 > hi || W > 96 || ix0 < -16 || ix0 > 96) return false;
    const __m128i idx = _mm_add_epi8(_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                     _mm_set1_epi8((char)ix0));
    const __m128i in = _mm_and_si128(_mm_cmpgt_epi8(idx, _mm_set1_epi8(-1)), _mm_cmpgt_epi8(_mm_set1_epi8((char)W), idx));
    v = _mm_and_si128(_mm_loadu_si128((const __m128i *)(row + ix0)), in);
    return true;
#endif
}

// 16 int16 lanes -> [the 8 even lanes | the 8 odd lanes].
inline __m256i split_even_odd(__m256i v) {
    const __m256i shuf = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                          0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    return _mm256_permute4x64_epi64(_mm256_shuffle_epi8(v, shuf), 0xD8);
}

// d[j] = the pair (r0[ix], r1[ix]) at ix = ix0 + s j, 0 outside [0, W) (and for a null r1), for
// j < n <= 8; false (nothing written) if AVX2 cannot read the rows there.
inline bool pair_run8(const int8_t *r0, const int8_t *r1, int W, int ix0, int s, int n, int32_t *d, const int8_t *lo,
                      const int8_t *hi) {
    __m128i a8, b8 = _mm_setzero_si128();
    if (!row_window(r0, W, ix0, lo, hi, a8) || (r1 && !row_window(r1, W, ix0, lo, hi, b8))) return false;
    __m256i a = _mm256_cvtepi8_epi16(a8), b = _mm256_cvtepi8_epi16(b8);
    if (s == 2) {
        a = split_even_odd(a);
        b = split_even_odd(b);
    }
    const __m128i al = _mm256_castsi256_si128(a), bl = _mm256_castsi256_si128(b);
    const __m256i pairs = _mm256_set_m128i(_mm_unpackhi_epi16(al, bl), _mm_unpacklo_epi16(al, bl));
#if defined(__AVX512BW__) && defined(__AVX512VL__)
    _mm256_mask_storeu_epi32(d, (__mmask8)((1u << n) - 1), pairs);
#else
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_epi32(d, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes), pairs);
#endif
    return true;
}

#ifdef E2T_VNNI_PATHS
// d[j] = the quad (x[0][ix] + 128, ..., x[3][ix] + 128) as unsigned bytes at ix = ix0 + s j (x = 0
// outside [0, W), and for a null row), for j < n <= 8: the int8 forward's operand (vpdpbusd).
inline void quad_run8(const int8_t *const *rows, int W, int ix0, int s, int n, int32_t *d) {
    const __m128i evens = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    __m128i b[4];
    for (int q = 0; q < 4; q++) {
        b[q] = _mm_setzero_si128();
        if (rows[q]) row_window(rows[q], W, ix0, nullptr, nullptr, b[q]);
        if (s == 2) b[q] = _mm_shuffle_epi8(b[q], evens);
        b[q] = _mm_xor_si128(b[q], _mm_set1_epi8((char)0x80));  // x + 128 as an unsigned byte
    }
    const __m128i t01 = _mm_unpacklo_epi8(b[0], b[1]), t23 = _mm_unpacklo_epi8(b[2], b[3]);
    const __m256i quads = _mm256_set_m128i(_mm_unpackhi_epi16(t01, t23), _mm_unpacklo_epi16(t01, t23));
    _mm256_mask_storeu_epi32(d, (__mmask8)((1u << n) - 1), quads);
}
#endif

// Stride 2: d[j] = padded column 2 j and, when `odd`, d[Wh + j] = padded column 2 j + 1, for
// j < Wh (x_msb when use_msb); false (the caller falls back) if this path cannot.
inline bool act_row16_s2(const int8_t *src, int W, int p, bool use_msb, int16_t *d, int Wh, bool odd, const int8_t *lo,
                         const int8_t *hi) {
    static const bool vec_msb = msb_vector_check();
    if ((use_msb && !vec_msb) || (!MASKED && Wh % 8)) return false;
    for (int j0 = 0; j0 < Wh; j0 += 8)  // AVX2: checked first, so a refusal writes nothing
        if (!MASKED) {
            __m128i v;
            if (!row_window(src, W, 2 * j0 - p, lo, hi, v)) return false;
        }
    for (int j0 = 0; j0 < Wh; j0 += 8) {
        __m128i b;
        row_window(src, W, 2 * j0 - p, lo, hi, b);  // padded column 2 j0 is source index 2 j0 - p
        __m256i v = _mm256_cvtepi8_epi16(b);
        if (use_msb) v = msb16(v);
        v = split_even_odd(v);
#if defined(__AVX512BW__) && defined(__AVX512VL__)
        const __mmask8 m = (__mmask8)(Wh - j0 >= 8 ? 0xFF : (1u << (Wh - j0)) - 1);
        _mm_mask_storeu_epi16(d + j0, m, _mm256_castsi256_si128(v));
        if (odd) _mm_mask_storeu_epi16(d + Wh + j0, m, _mm256_extracti128_si256(v, 1));
#else
        _mm_storeu_si128((__m128i *)(d + j0), _mm256_castsi256_si128(v));
        if (odd) _mm_storeu_si128((__m128i *)(d + Wh + j0), _mm256_extracti128_si256(v, 1));
#endif
    }
    return true;
}
#endif

// Rows of the padded input that a conv reads (yo * s + kh); others are never touched.
void rows_read(const Shape &sh, Arr<char> &used) {
    for (int yo = 0; yo < sh.ho; yo++)
        for (int kh = 0; kh < sh.k; kh++) used[yo * sh.s + kh] = 1;
}

// ------------------------------------------------------------------------------------------
// CONV_FWD

// res[m][v] = sum over steps j of A[j][m] . B_v[j]: weight pairs . L pixel lanes of int16 channel
// pairs, or with Q weight quads . L pixel lanes of (x + 128) channel quads (vpdpbusd).
template <int MR, int NR, bool Q>
inline void fwd_kernel(const int32_t *A, int KP, const int32_t *const *bp, const int32_t *offs, V *res) {
    V acc[MR][NR];
    Unroll<0, MR>::run([&](auto m) { Unroll<0, NR>::run([&](auto v) { acc[m.value][v.value] = vzero(); }); });
    const int32_t *bb[NR];
    for (int v = 0; v < NR; v++) bb[v] = bp[v];
    for (int j = 0; j < KP; j++) {
        const int32_t off = offs[j];
        V b[NR];
        Unroll<0, NR>::run([&](auto v) { b[v.value] = vload(bb[v.value] + off); });
        const i32a *a = A + (size_t)j * MR;
        if constexpr (Q) {
#ifdef E2T_VNNI_PATHS
            Unroll<0, MR>::run([&](auto m) { row_dot4<NR>(acc[m.value], a + m.value, b); });
#endif
        } else {
            Unroll<0, MR>::run([&](auto m) { row_dot<NR>(acc[m.value], a + m.value, b); });
        }
    }
    Unroll<0, MR>::run([&](auto m) {
        Unroll<0, NR>::run([&](auto v) { res[m.value * NR + v.value] = acc[m.value][v.value]; });
    });
}

void fwd_impl(const int8_t *act, const int8_t *wgt, int32_t *out, const Shape &sh, int r) {
    const int N = sh.n, C = sh.c, H = sh.h, W = sh.w, O = sh.o, k = sh.k, s = sh.s, p = sh.p, Ho = sh.ho, Wo = sh.wo;
    // AVX-512 VNNI: int8 x int8 as vpdpbusd, four channels per lane and step, when the raw sums
    // (activations offset by 128) stay below 2^31; else int16 pairs.
#ifdef E2T_VNNI_PATHS
    const bool quads = (int64_t)ceil_div(C, 4) * k * k * 4 * 255 * 128 < ((int64_t)1 << 31);
#else
    const bool quads = false;
#endif
    const int CH = quads ? 4 : 2;  // channels per int32 lane element
    const int taps = k * k, Cp = ceil_div(C, CH), KP = Cp * taps, Hp = sh.hp(), Wp = sh.wp();
    const int gx = ceil_div(Wo, L), WoL = gx * L;
    // Copy layout, int32 channel pairs (quads): X[n][cp][row][col]; stride 2: col = par * Wh + j
    // holds padded column 2 j + par. A lane group is L output pixels of one row.
    const int Wh = s == 1 ? 0 : round_up(tmax(ceil_div(Wp, 2), WoL + (k - 1) / 2) + 1, WH_CHUNK);
    const int rowlen = s == 1 ? tmax(Wp, WoL + k - 1) + 1 : (k > 1 ? 2 : 1) * Wh;  // 1x1: even columns only
    // Maps narrower than the lanes (Wo divides L): a lane group is R = L / Wo whole output rows,
    // from a copy per kernel column kw whose rows are exactly Wo long, X[n][cp][kw][prow][j] =
    // padded (row, column j s + kw); stride 2 keeps even and odd rows apart (prow = par * Hh + i
    // holds padded row 2 i + par), so the R rows a tap needs are always adjacent.
    const bool packed = Wo < L && L % Wo == 0;
    const int R = packed ? L / Wo : 1, Hh = ceil_div(Hp, 2) + R + 1;
    const int prows = s == 1 ? Hp + 2 * R : 2 * Hh;
    const int64_t kwplane = (int64_t)prows * Wo;
    const int64_t plane = packed ? k * kwplane : (int64_t)Hp * rowlen, img = Cp * plane;
    int32_t *X = tl_buf[0].get<int32_t>((size_t)N * img);
    const int8_t *act_end = act + (int64_t)N * C * H * W;
    (void)act_end;
    const int Opad = round_up(O, FWD_MR);
    int32_t *A = tl_buf[1].get<int32_t>((size_t)Opad * KP);  // [o tile][j][m]
    int32_t *offs = tl_buf[2].get<int32_t>((size_t)KP);

    for (int ot = 0; ot < Opad; ot += FWD_MR)
        for (int cp = 0; cp < Cp; cp++)
            for (int t = 0; t < taps; t++) {
                const int j = cp * taps + t;
                for (int m = 0; m < FWD_MR; m++) {
                    const int o = ot + m;
                    int w[4] = {0, 0, 0, 0};
                    for (int q = 0; q < CH; q++)
                        if (o < O && CH * cp + q < C) w[q] = wgt[((int64_t)o * C + CH * cp + q) * taps + t];
                    A[(size_t)ot * KP + (size_t)j * FWD_MR + m] =
                        quads ? (int32_t)((uint32_t)(uint8_t)w[0] | (uint32_t)(uint8_t)w[1] << 8 |
                                          (uint32_t)(uint8_t)w[2] << 16 | (uint32_t)(uint8_t)w[3] << 24)
                              : pack16(w[0], w[1]);
                }
            }
    // quads: sum_{c, t} 128 W[o][c][t], the offset's share of every raw sum
    Arr<int32_t> bias(Opad);
    if (quads)
        for (int o = 0; o < O; o++) {
            int64_t sum = 0;
            for (int64_t i = 0; i < (int64_t)C * taps; i++) sum += wgt[(int64_t)o * C * taps + i];
            bias[o] = (int32_t)(128 * sum);
        }
    for (int cp = 0; cp < Cp; cp++)
        for (int kh = 0; kh < k; kh++)
            for (int kw = 0; kw < k; kw++)
                offs[cp * taps + kh * k + kw] =
                    packed ? (int32_t)(cp * plane + kw * kwplane + (s == 1 ? kh : (kh & 1) * Hh + (kh >> 1)) * Wo)
                           : (int32_t)(cp * plane + kh * rowlen + (s == 1 ? kw : (kw & 1) * Wh + (kw >> 1)));

    Arr<char> used(Hp);
    rows_read(sh, used);
    const int gy = ceil_div(Ho, R);  // packed: row groups per image
    const int64_t ngroups = packed ? (int64_t)N * gy : (int64_t)N * Ho * gx;
    const int64_t ntiles = (ngroups + FWD_NR - 1) / FWD_NR;
#pragma omp parallel if (conv_parallel(sh))
    {
        Arr<int32_t> tmp(s == 1 ? 0 : 2 * Wh + 16), row(packed ? rowlen : 0);
        // One row of the copy per iteration: a padded row (unpacked), or a prow and its k runs of
        // Wo columns (packed). Off-map positions hold x = 0: byte 0, or 128 in quads (x + 128).
        const int64_t nrows = packed ? prows : Hp;
        const int fill = quads ? 0x80 : 0;
#pragma omp for schedule(static)
        for (int64_t q = 0; q < (int64_t)N * Cp * nrows; q++) {
            const int prow = (int)(q % nrows), cp = (int)(q / nrows % Cp), n = (int)(q / nrows / Cp);
            if (!packed && !used[prow]) continue;
            const int iy = (packed && s == 2 ? 2 * (prow % Hh) + prow / Hh : prow) - p;
            int32_t *d = X + n * img + cp * plane + (int64_t)prow * (packed ? Wo : rowlen);
            if (iy < 0 || iy >= H) {
                if (packed)
                    for (int kw = 0; kw < k; kw++) memset(d + kw * kwplane, fill, sizeof(int32_t) * Wo);
                else
                    memset(d, fill, sizeof(int32_t) * rowlen);
                continue;
            }
            const int8_t *rows[4] = {nullptr, nullptr, nullptr, nullptr};  // the CH channels of this lane element
            for (int u = 0; u < CH; u++)
                if (CH * cp + u < C) rows[u] = act + (((int64_t)n * C + CH * cp + u) * H + iy) * W;
#ifdef E2T_VNNI_PATHS
            if (quads) {  // runs of 8 columns straight from the rows
                if (packed) {
                    for (int kw = 0; kw < k; kw++) quad_run8(rows, W, kw - p, s, Wo, d + kw * kwplane);
                } else if (s == 1) {
                    for (int c0 = 0; c0 < rowlen; c0 += 8) quad_run8(rows, W, c0 - p, 1, tmin(8, rowlen - c0), d + c0);
                } else {
                    for (int j0 = 0; j0 < Wh; j0 += 8) {
                        quad_run8(rows, W, 2 * j0 - p, 2, tmin(8, Wh - j0), d + j0);
                        if (k > 1) quad_run8(rows, W, 2 * j0 + 1 - p, 2, tmin(8, Wh - j0), d + Wh + j0);
                    }
                }
                continue;
            }
#endif
            const int8_t *r0 = rows[0], *r1 = rows[1];
            if (packed) {  // each run straight from the rows when all can be read, else via the padded row
#ifdef __AVX2__
                bool done = Wo <= 8;
                for (int kw = 0; kw < k && done; kw++)
                    done = pair_run8(r0, r1, W, kw - p, s, Wo, d + kw * kwplane, act, act_end);
                if (done) continue;
#endif
                if (s == 1) {
                    pair_row(r0, r1, W, p, row.data(), rowlen);
                } else {
                    pair_row(r0, r1, W, p, tmp.data(), 2 * Wh);
                    deinterleave(tmp.data(), row.data(), Wh, k > 1);
                }
                for (int kw = 0; kw < k; kw++)
                    memcpy(d + kw * kwplane, row.data() + (s == 1 ? kw : (kw & 1) * Wh + (kw >> 1)), sizeof(int32_t) * Wo);
            } else if (s == 1) {
                pair_row(r0, r1, W, p, d, rowlen);
            } else {
#ifdef __AVX2__
                bool done = MASKED || Wh % 8 == 0;  // AVX2 writes whole chunks of 8
                for (int j0 = 0; j0 < Wh && done; j0 += 8) {  // padded columns 2 j + 0 / 1, from the rows
                    done = pair_run8(r0, r1, W, 2 * j0 - p, 2, tmin(8, Wh - j0), d + j0, act, act_end);
                    if (done && k > 1)
                        done = pair_run8(r0, r1, W, 2 * j0 + 1 - p, 2, tmin(8, Wh - j0), d + Wh + j0, act, act_end);
                }
                if (done) continue;
#endif
                pair_row(r0, r1, W, p, tmp.data(), 2 * Wh);
                deinterleave(tmp.data(), d, Wh, k > 1);
            }
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t tq = 0; tq < ntiles; tq++) {
            const int32_t *bp[FWD_NR];
            int32_t *op[FWD_NR];
            int lanes[FWD_NR];
            for (int v = 0; v < FWD_NR; v++) {
                int64_t g = tq * FWD_NR + v;
                lanes[v] = 0;
                if (g >= ngroups) g = ngroups - 1;
                else lanes[v] = 1;
                if (packed) {  // rows y0 .. y0 + R - 1: contiguous in the copy and in NCHW
                    const int n = (int)(g / gy), y0 = (int)(g % gy) * R;
                    bp[v] = X + n * img + (int64_t)y0 * Wo;
                    op[v] = out + (((int64_t)n * O) * Ho + y0) * Wo;
                    if (lanes[v]) lanes[v] = tmin(R, Ho - y0) * Wo;
                    continue;
                }
                const int xg = (int)(g % gx), yo = (int)(g / gx % Ho), n = (int)(g / gx / Ho);
                bp[v] = X + n * img + (int64_t)yo * s * rowlen + xg * L;
                op[v] = out + (((int64_t)n * O) * Ho + yo) * Wo + xg * L;
                if (lanes[v]) lanes[v] = tmin(L, Wo - xg * L);
            }
            const int64_t ostride = (int64_t)Ho * Wo;
            for (int ot = 0; ot < Opad; ot += FWD_MR) {
                V acc[FWD_MR * FWD_NR];
                if (quads)
                    fwd_kernel<FWD_MR, FWD_NR, true>(A + (size_t)ot * KP, KP, bp, offs, acc);
                else
                    fwd_kernel<FWD_MR, FWD_NR, false>(A + (size_t)ot * KP, KP, bp, offs, acc);
                for (int m = 0; m < FWD_MR && ot + m < O; m++)
                    for (int v = 0; v < FWD_NR; v++) {
                        if (!lanes[v]) continue;
#ifdef E2T_VNNI_PATHS
                        if (quads) acc[m * FWD_NR + v] = vsub(acc[m * FWD_NR + v], vset1(bias[ot + m]));
#endif
                        const V y = vround(acc[m * FWD_NR + v], r);
                        int32_t *dst = op[v] + (ot + m) * ostride;
                        if (lanes[v] == L) {
                            vstore(dst, y);
                        } else {
                            int32_t t[L];
                            vstore(t, y);
                            for (int l = 0; l < lanes[v]; l++) dst[l] = t[l];
                        }
                    }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// CONV_BWD_DATA

// acc64[part][m][v][lane] += sum over steps j in [j0, j1) of A[j][part][m] . B_v[j], summed in
// int32 lanes (the caller bounds j1 - j0) and then widened.
template <int MR, int NR, int PARTS>
__attribute__((noinline)) void bwd_chunk(const int32_t *A, int j0, int j1, const int32_t *const *bp,
                                         const int32_t *offs, int64_t *acc64) {
    V acc[PARTS][MR][NR];
    Unroll<0, PARTS>::run([&](auto q) {
        Unroll<0, MR>::run([&](auto m) { Unroll<0, NR>::run([&](auto v) { acc[q.value][m.value][v.value] = vzero(); }); });
    });
    const int32_t *bb[NR];
    for (int v = 0; v < NR; v++) bb[v] = bp[v];
    for (int j = j0; j < j1; j++) {
        const int32_t off = offs[j];
        V b[NR];
        Unroll<0, NR>::run([&](auto v) { b[v.value] = vload(bb[v.value] + off); });
        const i32a *a = A + (size_t)j * PARTS * MR;
        Unroll<0, PARTS>::run([&](auto q) {
            Unroll<0, MR>::run([&](auto m) { row_dot<NR>(acc[q.value][m.value], a + q.value * MR + m.value, b); });
        });
    }
    Unroll<0, PARTS>::run([&](auto q) {
        Unroll<0, MR>::run([&](auto m) {
            Unroll<0, NR>::run([&](auto v) {
                vflush(acc64 + ((q.value * MR + m.value) * NR + v.value) * L, acc[q.value][m.value][v.value]);
            });
        });
    });
}

template <int MR, int NR, int PARTS>
inline void bwd_kernel(const int32_t *A, int KP, int F, const int32_t *const *bp, const int32_t *offs,
                       int64_t *acc64) {
    for (int i = 0; i < PARTS * MR * NR * L; i++) acc64[i] = 0;
    const int len = ceil_div(KP, ceil_div(KP, F));  // equal chunks of at most F steps
    for (int j0 = 0; j0 < KP; j0 += len) bwd_chunk<MR, NR, PARTS>(A, j0, tmin(KP, j0 + len), bp, offs, acc64);
}

// dst[step * l] = saturate32(rshift_round(a0[l] * 2^sh0 + a1[l], r)) for l < lanes <= 8 (a1 null:
// 0); saturations counted.
__attribute__((always_inline)) inline void bwd_store8(const int64_t *a0, const int64_t *a1, int sh0, int r, int32_t *dst, int step, int lanes,
                      uint32_t &sat) {
#ifdef __AVX2__
    const __m128i c0 = _mm_cvtsi32_si128(sh0), cr = _mm_cvtsi32_si128(r);
    const __m256i hi = _mm256_set1_epi64x(e2t::OUT_HI), lo = _mm256_set1_epi64x(e2t::OUT_LO);
    const __m256i half = _mm256_set1_epi64x(r > 0 ? (int64_t)1 << (r - 1) : 0), zero = _mm256_setzero_si256();
    const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m128i res[2];
    int mask = 0;
    for (int h = 0; h < 2; h++) {
        __m256i x = _mm256_sll_epi64(_mm256_loadu_si256((const __m256i *)(a0 + 4 * h)), c0);
        if (a1) x = _mm256_add_epi64(x, _mm256_loadu_si256((const __m256i *)(a1 + 4 * h)));
        if (r > 0) {  // arithmetic shift from the logical one: sign ^ ((x ^ sign) >> r)
            x = _mm256_add_epi64(x, half);
            const __m256i sign = _mm256_cmpgt_epi64(zero, x);
            x = _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(x, sign), cr), sign);
        }
        const __m256i over = _mm256_cmpgt_epi64(x, hi), under = _mm256_cmpgt_epi64(lo, x);
        x = _mm256_blendv_epi8(_mm256_blendv_epi8(x, hi, over), lo, under);
        mask |= _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_or_si256(over, under))) << (4 * h);
        res[h] = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(x, idx));
    }
    sat += (uint32_t)__builtin_popcount(mask & ((1 << lanes) - 1));
    const __m256i y = _mm256_set_m128i(res[1], res[0]);
    if (step == 1 && lanes == 8) {
        _mm256_storeu_si256((__m256i *)dst, y);
    } else {
        alignas(32) int32_t t[8];
        _mm256_store_si256((__m256i *)t, y);
        for (int l = 0; l < lanes; l++) dst[step * l] = t[l];
    }
#else
    for (int l = 0; l < lanes; l++) {
        const int64_t val = a0[l] * ((int64_t)1 << sh0) + (a1 ? a1[l] : 0);
        dst[step * l] = (int32_t)e2t::saturate(e2t::rshift_round(val, r), e2t::OUT_LO, e2t::OUT_HI, sat);
    }
#endif
}

// bwd_store8 on the `lanes` <= L lanes of one vector, 8 at a time.
__attribute__((always_inline)) inline void bwd_store(const int64_t *a0, const int64_t *a1, int sh0, int r, int32_t *dst, int step, int lanes,
                      uint32_t &sat) {
    if (L <= 8) {
        bwd_store8(a0, a1, sh0, r, dst, step, lanes, sat);
        return;
    }
    for (int l0 = 0; l0 < lanes; l0 += 8)
        bwd_store8(a0 + l0, a1 ? a1 + l0 : nullptr, sh0, r, dst + step * l0, step, tmin(8, lanes - l0), sat);
}

struct BwdPlan {
    int parts;       // 1: W_al = W1 * 2^z; 2: W_al = H * 2^10 + L
    int z;           // parts == 1
    int F;           // steps per int32 chunk
};

template <int MR, int NR, int PARTS>
void bwd_phases(const int32_t *Gc, const int32_t *Wal, int32_t *out, const Shape &sh, int r, const BwdPlan &plan,
                int T, int Lc, int Rg, int Cg, int64_t gplane, int64_t gimg, uint32_t &sat_total) {
    const int N = sh.n, C = sh.c, H = sh.h, W = sh.w, O = sh.o, k = sh.k, s = sh.s, p = sh.p;
    const int taps = k * k, Op = (O + 1) / 2, Cpad = round_up(C, MR);
    const int sh0 = plan.parts == 1 ? plan.z : 10;  // a0 * 2^sh0 (+ a1)
    const bool par = conv_parallel(sh);
    for (int py = 0; py < s; py++)
        for (int px = 0; px < s; px++) {
            const int nyi = (H - py + s - 1) / s, nxi = (W - px + s - 1) / s;
            if (nyi <= 0 || nxi <= 0) continue;
            int khs[E2T_MAX_K], kws[E2T_MAX_K], nkh = 0, nkw = 0;
            for (int kh = 0; kh < k; kh++)
                if (((py + p - kh) % s + s) % s == 0) khs[nkh++] = kh;
            for (int kw = 0; kw < k; kw++)
                if (((px + p - kw) % s + s) % s == 0) kws[nkw++] = kw;
            const int ntaps = nkh * nkw, KP = Op * ntaps;
            if (ntaps == 0) {  // no tap reaches these pixels: rshift_round(0, r) = 0
#pragma omp parallel for schedule(static) if (par)
                for (int q = 0; q < N * C * nyi; q++) {
                    const int yi = q % nyi, c = q / nyi % C, n = q / nyi / C;
                    int32_t *d = out + (((int64_t)n * C + c) * H + s * yi + py) * W;
                    for (int xi = 0; xi < nxi; xi++) d[s * xi + px] = 0;
                }
                continue;
            }
            int32_t *A = tl_buf[3].get<int32_t>((size_t)Cpad * KP * PARTS);  // [c tile][j][part][m]
            int32_t *offs = tl_buf[4].get<int32_t>((size_t)KP);
            // Phase rows narrower than the lanes (nxi divides L): a lane group is R = L / nxi whole
            // rows, from a copy of the gradient per column tap b whose rows are exactly nxi long:
            // Gp[n][op][b][row][j] = Gc[n][op][row][Lc + j + dx_b] (RgP rows, zero past Rg).
            const bool packed = nxi < L && L % nxi == 0;
            const int R = packed ? L / nxi : 1, RgP = Rg + R, gy = ceil_div(nyi, R);
            const int64_t bplane = (int64_t)RgP * nxi, gplaneP = nkw * bplane, gimgP = Op * gplaneP;
            const int32_t *Gp = Gc;
            if (packed) {
                int32_t *P = tl_buf[7].get<int32_t>((size_t)N * gimgP);
#pragma omp parallel for schedule(static) if (par)
                for (int64_t q = 0; q < (int64_t)N * Op * nkw; q++) {
                    const int b = (int)(q % nkw), op = (int)(q / nkw % Op), n = (int)(q / nkw / Op);
                    const int dx = (px + p - kws[b]) / s;
                    int32_t *d = P + n * gimgP + op * gplaneP + b * bplane;
                    const int32_t *src = Gc + n * gimg + op * gplane + Lc + dx;
                    for (int row = 0; row < Rg; row++) {  // rows of at most L elements: no library call
                        int32_t *dr = d + (int64_t)row * nxi;
                        const int32_t *sr = src + (int64_t)row * Cg;
                        if (nxi == 8)
                            memcpy(dr, sr, 8 * sizeof(int32_t));  // a constant size: one vector move
                        else
                            for (int j = 0; j < nxi; j++) dr[j] = sr[j];
                    }
                    memset(d + (int64_t)Rg * nxi, 0, sizeof(int32_t) * R * nxi);
                }
                Gp = P;
            }
            for (int op = 0; op < Op; op++)
                for (int a = 0; a < nkh; a++)
                    for (int b = 0; b < nkw; b++) {
                        const int j = (op * nkh + a) * nkw + b, kh = khs[a], kw = kws[b];
                        const int dy = (py + p - kh) / s, dx = (px + p - kw) / s;
                        offs[j] = packed ? (int32_t)(op * gplaneP + b * bplane + (int64_t)dy * nxi)
                                         : (int32_t)(op * gplane + (int64_t)dy * Cg + dx);
                        for (int ct = 0; ct < Cpad; ct += MR)
                            for (int m = 0; m < MR; m++) {
                                const int c = ct + m, o0 = 2 * op, o1 = 2 * op + 1;
                                int32_t w0 = 0, w1 = 0;
                                if (c < C) {
                                    w0 = Wal[((int64_t)o0 * C + c) * taps + kh * k + kw];
                                    if (o1 < O) w1 = Wal[((int64_t)o1 * C + c) * taps + kh * k + kw];
                                }
                                int32_t *dst = A + (size_t)ct * KP * PARTS + ((size_t)j * PARTS) * MR + m;
                                if (PARTS == 1) {
                                    dst[0] = pack16(w0 >> plan.z, w1 >> plan.z);
                                } else {
                                    const int32_t h0 = (w0 + 512) >> 10, h1 = (w1 + 512) >> 10;
                                    dst[0] = pack16(h0, h1);
                                    dst[MR] = pack16(w0 - h0 * 1024, w1 - h1 * 1024);
                                }
                            }
                    }
            const int gxi = ceil_div(nxi, L);
            const int64_t ngroups = packed ? (int64_t)N * gy : (int64_t)N * nyi * gxi, ntiles = (ngroups + NR - 1) / NR;
            uint32_t sat = 0;
#pragma omp parallel for schedule(dynamic, 4) reduction(+ : sat) if (par)
            for (int64_t tq = 0; tq < ntiles; tq++) {
                const int32_t *bp[NR];
                int64_t obase[NR];
                int lanes[NR];
                for (int v = 0; v < NR; v++) {
                    int64_t g = tq * NR + v;
                    lanes[v] = g < ngroups;
                    if (g >= ngroups) g = ngroups - 1;
                    if (packed) {  // rows yi0 .. yi0 + R - 1 of the phase
                        const int n = (int)(g / gy), yi0 = (int)(g % gy) * R;
                        bp[v] = Gp + n * gimgP + (int64_t)(yi0 + T) * nxi;
                        obase[v] = (((int64_t)n * C) * H + s * yi0 + py) * W + px;
                        if (lanes[v]) lanes[v] = tmin(R, nyi - yi0);  // rows
                        continue;
                    }
                    const int xg = (int)(g % gxi), yi = (int)(g / gxi % nyi), n = (int)(g / gxi / nyi);
                    bp[v] = Gc + n * gimg + (int64_t)(yi + T) * Cg + Lc + xg * L;
                    obase[v] = (((int64_t)n * C) * H + s * yi + py) * W + s * xg * L + px;
                    if (lanes[v]) lanes[v] = tmin(L, nxi - xg * L);
                }
                alignas(64) int64_t acc64[PARTS * MR * NR * L];
                for (int ct = 0; ct < Cpad; ct += MR) {
                    bwd_kernel<MR, NR, PARTS>(A + (size_t)ct * KP * PARTS, KP, plan.F, bp, offs, acc64);
                    if (!packed) {  // two loops, so that each inlined store hoists its constants
                        for (int m = 0; m < MR && ct + m < C; m++)
                            for (int v = 0; v < NR; v++) {
                                if (!lanes[v]) continue;
                                const int64_t *a0 = acc64 + (m * NR + v) * L;
                                const int64_t *a1 = PARTS == 2 ? acc64 + ((MR + m) * NR + v) * L : nullptr;
                                bwd_store(a0, a1, sh0, r, out + obase[v] + (int64_t)(ct + m) * H * W, s, lanes[v], sat);
                            }
                        continue;
                    }
                    for (int m = 0; m < MR && ct + m < C; m++)
                        for (int v = 0; v < NR; v++)
                            for (int rr = 0; rr < lanes[v]; rr++) {  // lanes[v] rows of nxi
                                const int64_t *a0 = acc64 + (m * NR + v) * L + rr * nxi;
                                const int64_t *a1 = PARTS == 2 ? acc64 + ((MR + m) * NR + v) * L + rr * nxi : nullptr;
                                bwd_store(a0, a1, sh0, r, out + obase[v] + (int64_t)(ct + m) * H * W + (int64_t)rr * s * W, s,
                                          nxi, sat);
                            }
                }
            }
            sat_total += sat;
        }
}

void bwd_impl(const int16_t *grad, const int8_t *wgt, const int8_t *wshift, int32_t *out, const Shape &sh, int r,
                   uint32_t &sat) {
    const int N = sh.n, C = sh.c, H = sh.h, W = sh.w, O = sh.o, k = sh.k, s = sh.s, p = sh.p, Ho = sh.ho, Wo = sh.wo;
    const int taps = k * k, Op = (O + 1) / 2;
    // Aligned weights, computed as the kernel does.
    int smax = wshift[0];
    for (int o = 1; o < O; o++)
        if (wshift[o] > smax) smax = wshift[o];
    const int64_t nw = (int64_t)O * C * taps;
    int32_t *Wal = tl_buf[5].get<int32_t>((size_t)nw);
    uint32_t bits = 0;
    int64_t amax = 0, hlmax = 0;
    for (int o = 0; o < O; o++)
        for (int64_t i = 0; i < (int64_t)C * taps; i++) {
            const int32_t v = (int32_t)e2t::rshift_round(wgt[(int64_t)o * C * taps + i], smax - e2t::ALIGN_BITS - wshift[o]);
            Wal[(int64_t)o * C * taps + i] = v;
            bits |= (uint32_t)v;
            amax = tmax(amax, abs64(v));
            const int64_t hi = ((int64_t)v + 512) >> 10, lo = (int64_t)v - hi * 1024;
            hlmax = tmax(hlmax, tmax(abs64(hi), abs64(lo)));
        }
    // One pass on W_al / 2^z (2^z: the largest power of two dividing every weight) when that
    // leaves at least 4 steps per int32 chunk, else H and L. The chunk length F bounds a lane:
    // F steps of two products |g| |w| <= 2^15 |w| stay below 2^31 (|H|, |L| <= 2^9 + 1 here, as
    // |W_al| <= 2^19).
    BwdPlan plan;
    int z = 0;
    while (z < 20 && bits && !((bits >> z) & 1)) z++;
    const int64_t m1 = amax >> z, lim = ((int64_t)1 << 31) - 1, per = 2 * 32768;
    if (m1 == 0 || lim / (per * m1) >= 4)
        plan = {1, z, m1 == 0 ? (1 << 30) : (int)tmin<int64_t>(lim / (per * m1), 1 << 30)};
    else
        plan = {2, 0, (int)tmax<int64_t>(1, lim / (per * hlmax))};
    // Gradient copy, int32 output-channel pairs: Gc[n][op][T + yo][Lc + xo], zero around.
    // Extent of the gradient positions the phases read: rows yi + dy, columns 8-lane groups + dx.
    int ymin = 0, ymax = 0, xmin = 0, xmax = 0;
    for (int ph = 0; ph < s; ph++)
        for (int t = 0; t < k; t++) {
            if (((ph + p - t) % s + s) % s) continue;
            const int d = (ph + p - t) / s, ny = (H - ph + s - 1) / s, nx = round_up((W - ph + s - 1) / s, L);
            ymin = tmin(ymin, d);
            xmin = tmin(xmin, d);
            if (ny > 0) ymax = tmax(ymax, ny - 1 + d);
            if (nx > 0) xmax = tmax(xmax, nx - 1 + d);
        }
    const int T = -ymin, Lc = -xmin;
    const int Rg = T + ymax + 1, Cg = tmax(Lc + xmax + 1, Lc + Wo);
    const int64_t gplane = (int64_t)Rg * Cg, gimg = Op * gplane;
    int32_t *Gc = tl_buf[0].get<int32_t>((size_t)N * gimg);
#pragma omp parallel for schedule(static) if (conv_parallel(sh))
    for (int64_t q = 0; q < (int64_t)N * Op * Rg; q++) {
        const int row = (int)(q % Rg), op = (int)(q / Rg % Op), n = (int)(q / Rg / Op);
        int32_t *d = Gc + n * gimg + op * gplane + (int64_t)row * Cg;
        const int yo = row - T, o0 = 2 * op, o1 = 2 * op + 1;
        if (yo < 0 || yo >= Ho) {
            memset(d, 0, sizeof(int32_t) * Cg);
            continue;
        }
        const int16_t *r0 = grad + (((int64_t)n * O + o0) * Ho + yo) * Wo;
        const int16_t *r1 = o1 < O ? grad + (((int64_t)n * O + o1) * Ho + yo) * Wo : nullptr;
        pair_row(r0, r1, Wo, Lc, d, Cg);
    }
    if (plan.parts == 1)
        bwd_phases<BWD1_MR, BWD1_NR, 1>(Gc, Wal, out, sh, r, plan, T, Lc, Rg, Cg, gplane, gimg, sat);
    else
        bwd_phases<BWD2_MR, BWD2_NR, 2>(Gc, Wal, out, sh, r, plan, T, Lc, Rg, Cg, gplane, gimg, sat);
}

// ------------------------------------------------------------------------------------------
// CONV_WGRAD

struct WgJob {
    int ov;              // first L-channel vector of the output channels
    int nv;              // vectors (<= WG_NR)
    int nm;              // rows (<= WG_MR)
    int m[WG_MR];        // rows (c * taps + t)
};

struct WgLayout {
    int K, OL, Wo2, rowlen, Wh;  // OL: output channels rounded up to the lanes
    int64_t plane, img;
};

// G[m][o] += sum over `steps` pixel pairs of x pair . g pair, in one int32 chunk: pair j has its
// activations at xm[m] + xs[j] (int16 units) and its 8-channel gradient vectors at g + j * OL.
template <int MR, int NR>
__attribute__((noinline)) void wg_kernel(const int16_t *const *xm, const int32_t *xs, const int32_t *g, int steps, int OL, int64_t *G,
                      const int *mrows, int nm) {
    V acc[MR][NR];
    Unroll<0, MR>::run([&](auto m) { Unroll<0, NR>::run([&](auto v) { acc[m.value][v.value] = vzero(); }); });
    const int16_t *x[MR];
    for (int m = 0; m < MR; m++) x[m] = xm[m];
    for (int j = 0; j < steps; j++) {
        const int32_t off = xs[j];
        V b[NR];
        Unroll<0, NR>::run([&](auto v) { b[v.value] = vload(g + (size_t)j * OL + v.value * L); });
        Unroll<0, MR>::run([&](auto m) { row_dot<NR>(acc[m.value], (const i32a *)(x[m.value] + off), b); });
    }
    Unroll<0, MR>::run([&](auto m) {
        if (m.value < nm)
            Unroll<0, NR>::run([&](auto v) { vflush(G + (size_t)mrows[m.value] * OL + v.value * L, acc[m.value][v.value]); });
    });
}

// Int16 copy of the activations (or their MSB part), zero-padded: X[n][c][row][col]; stride 2:
// col = par * Wh + j holds padded column 2 j + par.
// Int16 copies of the activations (into X, when not null) and of their MSB part (into Xm, when not
// null), zero-padded, in one pass: [n][c][row][col]; stride 2: col = par * Wh + j holds padded
// column 2 j + par.
void wg_copy_act(const int8_t *act, const Shape &sh, const WgLayout &Y, int16_t *X, int16_t *Xm) {
    const int C = sh.c, H = sh.h, W = sh.w, s = sh.s, p = sh.p, Hp = sh.hp();
    int16_t lut[2][256];
    for (int v = -128; v < 128; v++) {
        lut[0][(uint8_t)v] = (int16_t)v;
        lut[1][(uint8_t)v] = e2t::msb((int8_t)v);
    }
    Arr<char> used(Hp);
    rows_read(sh, used);
    int16_t *const dst[2] = {X, Xm};
    const int8_t *act_end = act + (int64_t)sh.n * C * H * W;
    (void)act_end;
#pragma omp parallel if (conv_parallel(sh))
    {
        Arr<int16_t> tmp(s == 1 ? 0 : 2 * Y.Wh + 16);
#pragma omp for schedule(static)
        for (int64_t nc = 0; nc < (int64_t)sh.n * C; nc++) {
            const int64_t base = (nc / C) * Y.img + (nc % C) * Y.plane;
            if (s == 1) {  // the whole padded plane zeroed at once, then the rows of the map
                for (int u = 0; u < 2; u++) {
                    if (!dst[u]) continue;
                    int16_t *d = dst[u] + base;
                    memset(d, 0, sizeof(int16_t) * Y.plane);
                    for (int iy = 0; iy < H; iy++)
                        if (used[iy + p]) act_run16(act + (nc * H + iy) * W, W, u == 1, lut[u], d + (int64_t)(iy + p) * Y.rowlen + p);
                }
                continue;
            }
            for (int row = 0; row < Hp; row++) {
                if (!used[row]) continue;
                const int iy = row - p;
                const int8_t *src = act + (nc * H + iy) * W;
                for (int u = 0; u < 2; u++) {
                    if (!dst[u]) continue;
                    int16_t *d = dst[u] + base + (int64_t)row * Y.rowlen;
                    if (iy < 0 || iy >= H) {
                        memset(d, 0, sizeof(int16_t) * Y.rowlen);
                    } else {
#ifdef __AVX2__
                        if (act_row16_s2(src, W, p, u == 1, d, Y.Wh, sh.k > 1, act, act_end)) continue;
#endif
                        act_row16(src, W, p, u == 1, lut[u], tmp.data(), 2 * Y.Wh);
                        deinterleave(tmp.data(), d, Y.Wh, sh.k > 1);
                    }
                }
            }
        }
    }
}

// G[m][o] for the jobs, m = c * taps + t over all images and pixels; G is K x OL, summed over
// per-thread partial sums.
void wg_compute(const int16_t *X, const int32_t *GP, const Shape &sh, const WgLayout &Y, int F,
                const Arr<WgJob> &jobs, int64_t *G) {
    const int K = Y.K, OL = Y.OL, Wo2 = Y.Wo2, k = sh.k, s = sh.s, taps = k * k;
    // koff[m]: offset of row m's (c, kh, kw) in X.
    Arr<int32_t> koff(K);
    for (int c = 0; c < sh.c; c++)
        for (int kh = 0; kh < k; kh++)
            for (int kw = 0; kw < k; kw++)
                koff[c * taps + kh * k + kw] =
                    (int32_t)(c * Y.plane + kh * Y.rowlen + (s == 1 ? kw : (kw & 1) * Y.Wh + (kw >> 1)));
    // Pixel pairs in (image, output row, pair) order, which is GP's; blocks of B <= F of them
    // are one int32 chunk each.
    const int B = tmin(F, 256);
    const int64_t total = (int64_t)sh.n * sh.ho * Wo2, nblk = (total + B - 1) / B;
    const bool par = conv_parallel(sh);
    const int nth = par ? max_threads() : 1;
    int64_t *Gt = tl_buf[6].get<int64_t>((size_t)nth * K * OL);
    memset(Gt, 0, sizeof(int64_t) * nth * K * OL);
#pragma omp parallel if (par)
    {
        int64_t *Gm = Gt + (size_t)thread_id() * K * OL;
        Arr<int32_t> xs(B);
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < nblk; b++) {
            const int64_t s0 = b * B;
            const int steps = (int)tmin<int64_t>(B, total - s0);
            for (int j = 0; j < steps; j++) {
                const int64_t st = s0 + j, row = st / Wo2;
                const int i = (int)(st % Wo2), n = (int)(row / sh.ho), yo = (int)(row % sh.ho);
                xs[j] = (int32_t)(n * Y.img + (int64_t)yo * s * Y.rowlen + 2 * i);
            }
            const int32_t *g = GP + (size_t)s0 * OL;
            for (const WgJob &jb : jobs) {
                const int16_t *xm[WG_MR];
                for (int m = 0; m < WG_MR; m++) xm[m] = X + koff[jb.m[m < jb.nm ? m : 0]];
                int64_t *Gj = Gm + jb.ov * L;
                if (jb.nv == WG_NR)
                    wg_kernel<WG_MR, WG_NR>(xm, xs.data(), g + jb.ov * L, steps, OL, Gj, jb.m, jb.nm);
                else
                    wg_kernel<WG_MR, 1>(xm, xs.data(), g + jb.ov * L, steps, OL, Gj, jb.m, jb.nm);
            }
        }
#pragma omp for schedule(static)
        for (int64_t i = 0; i < (int64_t)K * OL; i++) {
            int64_t sum = 0;
            for (int t = 0; t < nth; t++) sum += Gt[(size_t)t * K * OL + i];
            G[i] = sum;
        }
    }
}

void wg_add_jobs(Arr<WgJob> &jobs, int ov, int nv, const Arr<int> &rows) {
    for (size_t m0 = 0; m0 < rows.size(); m0 += WG_MR) {
        WgJob j;
        j.ov = ov;
        j.nv = nv;
        j.nm = (int)tmin<size_t>(WG_MR, rows.size() - m0);
        for (int m = 0; m < WG_MR; m++) j.m[m] = m < j.nm ? rows[m0 + m] : rows[m0];
        jobs.push_back(j);
    }
}

void wgrad_impl(const int8_t *act, const int16_t *grad, int8_t *sgn, int64_t *scratch, const Shape &sh, uint32_t mode,
                uint64_t threshold, uint32_t &sure, uint32_t &tiles, uint32_t &recomputed) {
    const int N = sh.n, C = sh.c, W = sh.w, O = sh.o, k = sh.k, s = sh.s, p = sh.p, Ho = sh.ho, Wo = sh.wo;
    const int taps = k * k, Wp = sh.wp();
    WgLayout Y;
    Y.K = C * taps;
    Y.OL = round_up(O, L);
    Y.Wo2 = ceil_div(Wo, 2);
    if (s == 1) {
        Y.Wh = 0;
        Y.rowlen = round_up(tmax(Wp, 2 * Y.Wo2 + k - 1) + 1, 2);
    } else {
        Y.Wh = round_up(tmax(ceil_div(Wp, 2), 2 * Y.Wo2 + (k - 1) / 2) + 1, WH_CHUNK);
        Y.rowlen = (k > 1 ? 2 : 1) * Y.Wh;  // a 1x1 kernel reads even columns only
    }
    Y.plane = (int64_t)sh.hp() * Y.rowlen;
    Y.img = C * Y.plane;
    const int K = Y.K, OL = Y.OL, Wo2 = Y.Wo2, NV = OL / L;
    (void)W;
    (void)p;
    // Packed gradients: GP[n * Ho + yo][i][o] = (g[o][2i], g[o][2i + 1]) for o < OL (0 beyond O).
    int32_t *GP = tl_buf[1].get<int32_t>((size_t)N * Ho * Wo2 * OL);
#pragma omp parallel for schedule(static) if (conv_parallel(sh))
    for (int64_t rr = 0; rr < (int64_t)N * Ho; rr++) {
        const int n = (int)(rr / Ho), yo = (int)(rr % Ho);
        int32_t *d = GP + (size_t)rr * Wo2 * OL;
        const int16_t *g0 = grad + ((int64_t)n * O * Ho + yo) * Wo;  // channel o at g0 + o * Ho * Wo
        const int64_t gs = (int64_t)Ho * Wo;
        int o = 0;
#ifdef __AVX2__
        for (; o + 8 <= O; o += 8) {  // 8 x 8 transposes of int32 pixel pairs
            int i = 0;
            for (; i + 8 <= Wo / 2; i += 8) {
                __m256i t[8], u[8];
                for (int q = 0; q < 8; q++) t[q] = _mm256_loadu_si256((const __m256i *)(g0 + (o + q) * gs + 2 * i));
                for (int q = 0; q < 8; q += 2) {
                    u[q] = _mm256_unpacklo_epi32(t[q], t[q + 1]);
                    u[q + 1] = _mm256_unpackhi_epi32(t[q], t[q + 1]);
                }
                for (int q = 0; q < 8; q += 4) {
                    t[q] = _mm256_unpacklo_epi64(u[q], u[q + 2]);
                    t[q + 1] = _mm256_unpackhi_epi64(u[q], u[q + 2]);
                    t[q + 2] = _mm256_unpacklo_epi64(u[q + 1], u[q + 3]);
                    t[q + 3] = _mm256_unpackhi_epi64(u[q + 1], u[q + 3]);
                }
                for (int q = 0; q < 4; q++) {
                    _mm256_storeu_si256((__m256i *)(d + (size_t)(i + q) * OL + o), _mm256_permute2x128_si256(t[q], t[q + 4], 0x20));
                    _mm256_storeu_si256((__m256i *)(d + (size_t)(i + q + 4) * OL + o), _mm256_permute2x128_si256(t[q], t[q + 4], 0x31));
                }
            }
            for (int q = 0; q < 8; q++) {
                const int16_t *src = g0 + (o + q) * gs;
                for (int ii = i; ii < Wo2; ii++)
                    d[(size_t)ii * OL + o + q] = pack16(src[2 * ii], 2 * ii + 1 < Wo ? src[2 * ii + 1] : 0);
            }
        }
#endif
        for (; o < OL; o++) {
            if (o >= O) {
                for (int i = 0; i < Wo2; i++) d[(size_t)i * OL + o] = 0;
                continue;
            }
            const int16_t *src = g0 + o * gs;
            for (int i = 0; i < Wo2; i++)
                d[(size_t)i * OL + o] = pack16(src[2 * i], 2 * i + 1 < Wo ? src[2 * i + 1] : 0);
        }
    }
    int16_t *X = tl_buf[0].get<int16_t>((size_t)N * Y.img);
    int64_t *G = tl_buf[2].get<int64_t>((size_t)K * OL);
    const bool psg = mode != E2T_WGRAD_FULL;
    Arr<int> all_rows(K);
    for (int m = 0; m < K; m++) all_rows[m] = m;
    Arr<WgJob> jobs;
    for (int ov = 0; ov < NV; ov += WG_NR) wg_add_jobs(jobs, ov, tmin(WG_NR, NV - ov), all_rows);

    // Pass 1: G_full (FULL) or G_msb (PSG) into scratch.
    // PSG: X_msb (slot 7) and, unless a zero threshold makes every entry sure, the full copy for
    // the recompute, in one pass.
    int16_t *Xm = psg ? tl_buf[7].get<int16_t>((size_t)N * Y.img) : nullptr;
    wg_copy_act(act, sh, Y, psg && threshold == 0 ? nullptr : X, Xm);
    wg_compute(psg ? Xm : X, GP, sh, Y, psg ? 4095 : 255, jobs, G);
    int64_t gmax = 0;
    for (int o = 0; o < O; o++)
        for (int m = 0; m < K; m++) {
            const int64_t g = G[(size_t)m * OL + o];
            scratch[(int64_t)o * K + m] = g;
            if (abs64(g) > gmax) gmax = abs64(g);
        }
    sure = tiles = recomputed = 0;
    if (!psg) return;

    // Pass 2: decide every tile as the kernel does, recompute the channels of unsure tiles.
    const int nto = ceil_div(O, E2T_TILE_O), nti = ceil_div(C, E2T_TILE_I);
    Arr<char> unsure(nto * nti);
    for (int a = 0; a < nto; a++)
        for (int b = 0; b < nti; b++) {
            tiles++;
            bool u = false;
            for (int o = a * E2T_TILE_O; o < tmin(O, (a + 1) * E2T_TILE_O); o++)
                for (int c = b * E2T_TILE_I; c < tmin(C, (b + 1) * E2T_TILE_I); c++)
                    for (int t = 0; t < taps; t++) {
                        const int64_t av = abs64(scratch[((int64_t)o * C + c) * taps + t]);
                        const bool ok = mode == E2T_WGRAD_PSG_ABS ? av >= (int64_t)threshold
                                                                  : (av << e2t::RATIO_FRAC) >= (int64_t)threshold * gmax;
                        sure += ok;
                        u |= !ok;
                    }
            unsure[a * nti + b] = u;
            recomputed += u;
        }
    int64_t *F = nullptr;
    if (recomputed) {
        jobs.clear();
        for (int ov = 0; ov < NV; ov += WG_NR) {
            const int nv = tmin(WG_NR, NV - ov);
            Arr<int> rows;
            for (int c = 0; c < C; c++) {
                bool need = false;
                for (int o = ov * L; o < tmin(O, (ov + nv) * L) && !need; o++)
                    need = unsure[(o / E2T_TILE_O) * nti + c / E2T_TILE_I];
                if (need)
                    for (int t = 0; t < taps; t++) rows.push_back(c * taps + t);
            }
            if (!rows.empty()) wg_add_jobs(jobs, ov, nv, rows);
        }
        F = tl_buf[3].get<int64_t>((size_t)K * OL);
        wg_compute(X, GP, sh, Y, 255, jobs, F);
    }
    // the signs on the calling thread: O C k^2 <= 36,864 entries on every board, far below PAR_ELEMENTS
    for (int o = 0; o < O; o++)
        for (int c = 0; c < C; c++) {
            const bool u = unsure[(o / E2T_TILE_O) * nti + c / E2T_TILE_I];
            for (int t = 0; t < taps; t++) {
                const int m = c * taps + t;
                const int64_t at = (int64_t)o * K + m, gm = scratch[at];
                const int64_t gf = u ? F[(size_t)m * OL + o] : 0;
                sgn[at] = mode == E2T_WGRAD_PSG_ABS ? e2t::psg_sign_abs(gm, gf, (int64_t)threshold)
                                                    : e2t::psg_sign_ratio(gm, gf, (int64_t)threshold, gmax);
            }
        }
}

// ------------------------------------------------------------------------------------------
// STATS and APPLY (docs/numerics.md, section 9): one streaming pass over the N C planes of
// P = H W elements, a plane per step of a thread. Plain loops with loop-invariant shifts and
// coefficients, which g++ vectorizes with the path's flags, and an AVX2 kernel for APPLY's int64
// sums; all sums are exact integers, so threads and lanes change no bit.

const int32_t STAT_LO = -(1 << (e2t::STAT_BITS - 1)), STAT_HI = (1 << (e2t::STAT_BITS - 1)) - 1;
static_assert(((int64_t)E2T_MAX_H * E2T_MAX_W << (e2t::STAT_BITS - 1)) < ((int64_t)1 << 31),
              "STATS sums a plane's a_t in int32");
static_assert(e2t::COEF_M_BITS + 8 <= 32, "APPLY forms M2 b of an int8 b in int32");

// rshift_round(v, t) of an int32 for any t in 0..62, in int32: (v >> t) plus bit t - 1 of v, and 0
// from t = 32 on ((v + 2^31) >> 32 = 0). No branch on t in the loops.
struct Round32 {
    int s, s1;
    int32_t bit, keep;
    explicit Round32(int t) : s(tmin(t, 31)), s1(tmin(tmax(t - 1, 0), 31)), bit(t > 0), keep(t < 32 ? -1 : 0) {}
    int32_t operator()(int32_t v) const { return ((v >> s) + ((v >> s1) & bit)) & keep; }
};

// One plane's STATS: st = (sum a_t, sum a_t b_t, min a, max a); returns the clips of a_t (and b_t).
template <bool PRODUCT>
uint32_t stats_plane(const int32_t *a, const int32_t *b, int P, const Round32 ra, const Round32 rb, int64_t *st) {
    int32_t sa = 0, mn = a[0], mx = a[0];
    int64_t sab = 0;
    uint32_t clips = 0;
    for (int i = 0; i < P; i++) {
        const int32_t v = a[i], r = ra(v), at = tmin(tmax(r, STAT_LO), STAT_HI);
        int32_t bt = at;
        clips += r != at;
        if (PRODUCT) {
            const int32_t q = rb(b[i]);
            bt = tmin(tmax(q, STAT_LO), STAT_HI);
            clips += q != bt;
        }
        sa += at;
        sab += (int64_t)at * bt;
        mn = tmin(mn, v);
        mx = tmax(mx, v);
    }
    st[0] = sa;
    st[1] = sab;
    st[2] = mn;
    st[3] = mx;
    return clips;
}

// STATS: per-plane terms in parallel, then each channel's sums over the images in order.
void stats_impl(const int32_t *a, const int32_t *b, int64_t *stats, const Shape &sh, int t, int u, uint32_t &sat_out) {
    const int N = sh.n, C = sh.c, P = sh.h * sh.w;
    const Round32 ra(t), rb(u);
    int64_t *part = tl_buf[0].get<int64_t>((size_t)N * C * 4);
    uint32_t sat = 0;
#pragma omp parallel for schedule(static) reduction(+ : sat) if ((int64_t)N * C * P >= PAR_ELEMENTS)
    for (int q = 0; q < N * C; q++) {
        const int64_t at = (int64_t)q * P;
        sat += b ? stats_plane<true>(a + at, b + at, P, ra, rb, part + 4 * q)
                 : stats_plane<false>(a + at, nullptr, P, ra, rb, part + 4 * q);
    }
    for (int c = 0; c < C; c++) {
        int64_t *s = stats + 4 * c;
        memcpy(s, part + 4 * c, 4 * sizeof(int64_t));
        for (int n = 1; n < N; n++) {
            const int64_t *p = part + 4 * ((int64_t)n * C + c);
            s[0] += p[0];
            s[1] += p[1];
            s[2] = tmin(s[2], p[2]);
            s[3] = tmax(s[3], p[3]);
        }
    }
    sat_out = sat;
}

// APPLY's operands: the second source is b32 (int32), b8 (int8) or neither, mk the mask or null.
struct ApplyArgs {
    const int32_t *a, *b32;
    const int8_t *b8, *mk;
    const int64_t *coef;
    int S;
    bool relu;
    int64_t *stats;
};

// One plane's running (sum z, min z, max z) and clips.
struct PlaneSums {
    int64_t sum = 0;
    int32_t mn = INT32_MAX, mx = INT32_MIN;
    uint32_t clips = 0;
};

#ifdef __AVX2__
inline void store8(int8_t *z, __m256i y) {
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1));
    _mm_storel_epi64((__m128i *)z, _mm_packs_epi16(w, w));
}
inline void store8(int16_t *z, __m256i y) {
    _mm_storeu_si128((__m128i *)z, _mm_packs_epi32(_mm256_castsi256_si128(y), _mm256_extracti128_si256(y, 1)));
}
inline void store8(int32_t *z, __m256i y) { _mm256_storeu_si256((__m256i *)z, y); }
inline __m256i load8(const int32_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
inline __m256i load8(const int8_t *p) { return _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)); }
inline int64_t hsum64(__m256i v) {
    int64_t l[4];
    _mm256_storeu_si256((__m256i *)l, v);
    return l[0] + l[1] + l[2] + l[3];
}

// APPLY on the first P / 8 * 8 elements of a plane, 8 per step (AVX2; the AVX-512 paths run it
// too). The int64 sums go in two vectors, even and odd elements (vpmuldq multiplies the low int32
// of each int64 lane); x = ((v + off) >> S) - bias is exact. x is saturated to int32 by its high
// half, then RELU, the clamp to Z and MASK run on 8 int32 lanes; an element clips when the clamp
// changes it, or (Z int32) when x does not fit in int32 (unless RELU zeroes it). Returns the
// elements done.
static_assert(((int64_t)E2T_MAX_H * E2T_MAX_W << 15) < ((int64_t)1 << 31), "apply_avx2 sums int16 outputs in int32");
template <int SRC, bool MASK, class Z>
int apply_avx2(const int32_t *a, const int32_t *b32, const int8_t *b8, const int8_t *mk, int32_t m1, int32_t m2,
               int64_t off, int64_t bias, int S, bool relu, Z *z, int P, PlaneSums &ps) {
    const __m256i M1 = _mm256_set1_epi64x(m1), M2 = _mm256_set1_epi64x(m2), OFF = _mm256_set1_epi64x(off);
    const __m256i BIAS = _mm256_set1_epi64x(bias), ONES = _mm256_set1_epi32(-1), IMAX = _mm256_set1_epi32(INT32_MAX);
    const __m256i ZHI = _mm256_set1_epi32((int32_t)((1ull << (8 * sizeof(Z) - 1)) - 1));
    const __m256i ZLO = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_add_epi32(ZHI, _mm256_set1_epi32(1)));
    const __m256i FLOOR = _mm256_set1_epi32(relu ? 0 : INT32_MIN), RELU = _mm256_set1_epi32(relu ? -1 : 0);
    const __m128i SH = _mm_cvtsi32_si128(S);
    __m256i sum = _mm256_setzero_si256(), mn = _mm256_set1_epi32(INT32_MAX), mx = _mm256_set1_epi32(INT32_MIN);
    __m256i cnt = _mm256_setzero_si256();
    int i = 0;
    for (; i + 8 <= P; i += 8) {
        const __m256i A = load8(a + i);
        __m256i e = _mm256_mul_epi32(A, M1), o = _mm256_mul_epi32(_mm256_srli_epi64(A, 32), M1);
        if (SRC != E2T_APPLY_SRC2_NONE) {
            const __m256i B = SRC == E2T_APPLY_SRC2_INT32 ? load8(b32 + i) : load8(b8 + i);
            e = _mm256_add_epi64(e, _mm256_mul_epi32(B, M2));
            o = _mm256_add_epi64(o, _mm256_mul_epi32(_mm256_srli_epi64(B, 32), M2));
        }
        e = _mm256_sub_epi64(_mm256_srl_epi64(_mm256_add_epi64(e, OFF), SH), BIAS);
        o = _mm256_sub_epi64(_mm256_srl_epi64(_mm256_add_epi64(o, OFF), SH), BIAS);
        const __m256i lo = _mm256_blend_epi32(e, _mm256_slli_epi64(o, 32), 0xAA);  // low and high halves, in order
        const __m256i hi = _mm256_blend_epi32(_mm256_srli_epi64(e, 32), o, 0xAA);
        const __m256i fits = _mm256_cmpeq_epi32(hi, _mm256_srai_epi32(lo, 31));
        const __m256i neg = _mm256_srai_epi32(hi, 31);
        const __m256i x = _mm256_max_epi32(_mm256_blendv_epi8(_mm256_xor_si256(neg, IMAX), lo, fits), FLOOR);
        __m256i y = _mm256_min_epi32(_mm256_max_epi32(x, ZLO), ZHI), clip;
        if (sizeof(Z) == 4)
            clip = _mm256_andnot_si256(_mm256_or_si256(fits, _mm256_and_si256(neg, RELU)), ONES);
        else
            clip = _mm256_xor_si256(_mm256_cmpeq_epi32(x, y), ONES);
        if (MASK) {
            const __m256i keep = _mm256_cmpgt_epi32(load8(mk + i), _mm256_setzero_si256());
            y = _mm256_and_si256(y, keep);
            clip = _mm256_and_si256(clip, keep);
        }
        cnt = _mm256_sub_epi32(cnt, clip);
        store8(z + i, y);
        if (sizeof(Z) == 4)
            sum = _mm256_add_epi64(sum, _mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(y)),
                                                         _mm256_cvtepi32_epi64(_mm256_extracti128_si256(y, 1))));
        else
            sum = _mm256_add_epi32(sum, y);
        mn = _mm256_min_epi32(mn, y);
        mx = _mm256_max_epi32(mx, y);
    }
    int32_t l[3][8];
    _mm256_storeu_si256((__m256i *)l[0], mn);
    _mm256_storeu_si256((__m256i *)l[1], mx);
    _mm256_storeu_si256((__m256i *)l[2], cnt);
    for (int j = 0; j < 8; j++) {
        ps.mn = tmin(ps.mn, l[0][j]);
        ps.mx = tmax(ps.mx, l[1][j]);
        ps.clips += l[2][j];
    }
    ps.sum += sizeof(Z) == 4 ? hsum64(sum)
                             : hsum64(_mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(sum)),
                                                       _mm256_cvtepi32_epi64(_mm256_extracti128_si256(sum, 1))));
    return i;
}
#endif

// One plane's APPLY for one mode (second source SRC, MASK and the output type Z fixed at compile
// time): z = sat(mask(relu(rshift_round(M1 a + M2 b + B, S)))), st = (sum z, min z, max z); returns
// the clips. With off = B + 2^(S-1) + 2^62, v = M1 a + M2 b + off lies in (0, 2^63) (|M1 a + M2 b +
// B| < 2^57), so the shift is a logical one (vector lanes have it): (v >> S) - 2^(62-S) is
// rshift_round(M1 a + M2 b + B, S) exactly.
template <int SRC, bool MASK, class Z>
uint32_t apply_plane(const ApplyArgs &g, int64_t at, int c, int P, Z *z, int64_t *st) {
    const int S = g.S;
    const int32_t m1 = (int32_t)g.coef[3 * c], m2 = (int32_t)g.coef[3 * c + 1];
    const int64_t bias = (int64_t)1 << (62 - S);
    const int64_t off = g.coef[3 * c + 2] + (S ? (int64_t)1 << (S - 1) : 0) + ((int64_t)1 << 62);
    const int64_t hi = (int64_t)((1ull << (8 * sizeof(Z) - 1)) - 1), lo = -hi - 1;
    const int64_t floor = g.relu ? 0 : lo, count_lo = g.relu ? INT64_MIN : lo;  // RELU's zeros are not clips
    const int32_t *a = g.a + at, *b32 = SRC == E2T_APPLY_SRC2_INT32 ? g.b32 + at : nullptr;
    const int8_t *b8 = SRC == E2T_APPLY_SRC2_INT8 ? g.b8 + at : nullptr, *mk = MASK ? g.mk + at : nullptr;
    PlaneSums ps;
    int i = 0;
#ifdef __AVX2__
    i = apply_avx2<SRC, MASK>(a, b32, b8, mk, m1, m2, off, bias, S, g.relu, z, P, ps);
#endif
    for (; i < P; i++) {
        int64_t v = (int64_t)m1 * a[i];
        if (SRC == E2T_APPLY_SRC2_INT32) v += (int64_t)m2 * b32[i];
        if (SRC == E2T_APPLY_SRC2_INT8) v += m2 * b8[i];
        int64_t x = (int64_t)((uint64_t)(v + off) >> S) - bias;
        if (MASK) x = mk[i] > 0 ? x : 0;
        const int64_t y = tmin(tmax(x, floor), hi);
        ps.clips += (x > hi) + (x < count_lo);
        z[i] = (Z)y;
        ps.sum += y;
        ps.mn = tmin(ps.mn, (int32_t)y);
        ps.mx = tmax(ps.mx, (int32_t)y);
    }
    st[0] = ps.sum;
    st[1] = ps.mn;
    st[2] = ps.mx;
    return ps.clips;
}

// APPLY over all planes for one mode, into the output z.
template <int SRC, bool MASK, class Z>
void apply_planes(const ApplyArgs &g, Z *z, const Shape &sh, uint32_t &sat_out) {
    const int C = sh.c, P = sh.h * sh.w, NC = sh.n * sh.c;
    uint32_t sat = 0;
#pragma omp parallel for schedule(static) reduction(+ : sat) if ((int64_t)NC * P >= PAR_ELEMENTS)
    for (int q = 0; q < NC; q++)
        sat += apply_plane<SRC, MASK, Z>(g, (int64_t)q * P, q % C, P, z + (int64_t)q * P, g.stats + 3 * q);
    sat_out = sat;
}

template <int SRC, bool MASK>
void apply_out(const ApplyArgs &g, const struct e2t_ports *p, uint32_t out, const Shape &sh, uint32_t &sat) {
    if (out == E2T_APPLY_OUT_INT8)
        apply_planes<SRC, MASK>(g, p->dst8, sh, sat);
    else if (out == E2T_APPLY_OUT_INT16)
        apply_planes<SRC, MASK>(g, p->dst16, sh, sat);
    else
        apply_planes<SRC, MASK>(g, p->out, sh, sat);
}

template <int SRC>
void apply_src(const ApplyArgs &g, const struct e2t_ports *p, uint32_t out, const Shape &sh, uint32_t &sat) {
    if (g.mk)
        apply_out<SRC, true>(g, p, out, sh, sat);
    else
        apply_out<SRC, false>(g, p, out, sh, sat);
}

// APPLY: the (checked) mode's fields pick one instantiation of the plane loop.
void apply_impl(const struct e2t_ports *p, uint32_t mode, const Shape &sh, int S, uint32_t &sat) {
    const uint32_t src = (mode >> E2T_APPLY_SRC2_SHIFT) & E2T_APPLY_SRC2_MASK;
    const uint32_t out = (mode >> E2T_APPLY_OUT_SHIFT) & E2T_APPLY_OUT_MASK;
    const bool mask = (mode >> E2T_APPLY_MASK_SHIFT) & E2T_APPLY_MASK_MASK;
    const bool relu = (mode >> E2T_APPLY_RELU_SHIFT) & E2T_APPLY_RELU_MASK;
    const int32_t *b32 = src == E2T_APPLY_SRC2_INT32 ? p->src2 : nullptr;
    const int8_t *b8 = src == E2T_APPLY_SRC2_INT8 ? p->act : nullptr;
    const ApplyArgs g = {p->src1, b32, b8, mask ? p->mask : nullptr, p->coef, S, relu, p->stats};
    if (src == E2T_APPLY_SRC2_NONE)
        apply_src<E2T_APPLY_SRC2_NONE>(g, p, out, sh, sat);
    else if (src == E2T_APPLY_SRC2_INT32)
        apply_src<E2T_APPLY_SRC2_INT32>(g, p, out, sh, sat);
    else
        apply_src<E2T_APPLY_SRC2_INT8>(g, p, out, sh, sat);
}

// ------------------------------------------------------------------------------------------
// UPDATE

void update_impl(int32_t *master, int32_t *mom, const int8_t *sgn, uint32_t count, int e_w, uint64_t lr, uint64_t wd,
                 uint32_t mu, uint32_t &sat_out) {
    uint32_t sat = 0;
    const int64_t n = count;
#pragma omp parallel for schedule(static) reduction(+ : sat) if (n >= PAR_UPDATES)
    for (int64_t i = 0; i < n; i++) {
        int32_t w = master[i], b = mom[i];
        e2t::sign_update(w, b, sgn[i], e_w, (int64_t)lr, (int64_t)wd, (int64_t)mu, sat);
        master[i] = w;
        mom[i] = b;
    }
    sat_out = sat;
}

}  // namespace

#define E2T_PASTE2(a, b) a##b
#define E2T_PASTE(a, b) E2T_PASTE2(a, b)

// This path's e2t_call (hls/fast/e2t_fast.cpp dispatches to it): the kernel's checks, then the op.
extern "C" void E2T_PASTE(E2T_FAST_NS, _call)(const struct e2t_regs *regs, const struct e2t_ports *ports,
                                               struct e2t_status *status) {
    const uint32_t op = regs->op, mode = regs->mode, shift = regs->shift, count = regs->count, mu = regs->mu;
    const uint64_t threshold = regs->threshold, lr = regs->lr, wd = regs->wd;
    const int32_t e_w = regs->e_w;
    uint32_t sat = 0, sure = 0, tiles = 0, recomputed = 0;
    Shape sh;
    const uint32_t st = e2t::check_call(op, mode, regs->batch, regs->c_in, regs->h_in, regs->w_in, regs->c_out,
                                        regs->kernel, regs->stride, regs->pad, shift, threshold, count, e_w, lr, wd,
                                        mu, ports->wshift, ports->sgn, regs->shift2, ports->coef, sh);
    if (st != E2T_STATUS_OK) {
        // refused: no buffer is written, only the status
    } else if (op == E2T_OP_CONV_FWD) {
        fwd_impl(ports->act, ports->wgt, ports->out, sh, (int)shift);
    } else if (op == E2T_OP_CONV_BWD_DATA) {
        bwd_impl(ports->grad, ports->wgt, ports->wshift, ports->out, sh, (int)shift, sat);
    } else if (op == E2T_OP_CONV_WGRAD) {
        wgrad_impl(ports->act, ports->grad, ports->sgn, ports->scratch, sh, mode, threshold, sure, tiles, recomputed);
    } else if (op == E2T_OP_UPDATE) {
        update_impl(ports->master, ports->mom, ports->sgn, count, e_w, lr, wd, mu, sat);
    } else if (op == E2T_OP_STATS) {
        stats_impl(ports->src1, mode == E2T_STATS_PRODUCT ? ports->src2 : nullptr, ports->stats, sh, (int)shift,
                   (int)regs->shift2, sat);
    } else if (op == E2T_OP_APPLY) {
        apply_impl(ports, mode, sh, (int)shift, sat);
    }
    status->status = st;
    status->saturations = sat;
    status->psg_sure = sure;
    status->psg_tiles = tiles;
    status->psg_recomputed = recomputed;
}
