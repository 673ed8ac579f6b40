// The vector type of one CPU path of the fast build (hls/fast/e2t_fast_ops.cpp): V holds
// E2T_LANES int32 lanes, and vdot adds to each lane the two int16 x int16 products of that lane's
// int16 pair (x86 `vpmaddwd` + `vpaddd`, or the fused `vpdpwssd` of AVX-512 VNNI). Every sum is
// taken modulo 2^32, as the instructions do, so all paths give the same integers; the callers
// bound their chunks so that no lane wraps.
//
// One path per translation unit, chosen by the macro the build defines:
//   E2T_PATH_VNNI512  AVX-512 VNNI on zmm, 16 lanes      (-mavx512f -mavx512bw -mavx512vl -mavx512vnni)
//   E2T_PATH_VNNI256  AVX-512 VNNI on ymm, 8 lanes       (same flags; for maps too narrow for 16 lanes)
//   E2T_PATH_AVX2     AVX2 on ymm, 8 lanes               (-mavx2)
//   E2T_PATH_NEON     aarch64 NEON (smull + addp), 4 lanes
//   E2T_PATH_SCALAR   plain C++, 8 lanes                 (any CPU)
// Everything here has internal linkage: paths compiled for different CPUs share no code.
#ifndef E2T_FAST_SIMD_H
#define E2T_FAST_SIMD_H

#include <stdint.h>
#include <string.h>

#if defined(E2T_PATH_VNNI512) || defined(E2T_PATH_VNNI256) || defined(E2T_PATH_AVX2)
#include <immintrin.h>
#endif
#if defined(E2T_PATH_NEON)
#include <arm_neon.h>
#endif

namespace {

#if defined(E2T_PATH_VNNI512)
#define E2T_LANES 16
typedef __m512i V;
inline V vzero() { return _mm512_setzero_si512(); }
inline V vload(const int32_t *p) { return _mm512_loadu_si512((const void *)p); }
inline V vset1(int32_t x) { return _mm512_set1_epi32(x); }
inline V vdot(V acc, V a, V b) { return _mm512_dpwssd_epi32(acc, a, b); }
inline void vstore(int32_t *p, V v) { _mm512_storeu_si512((void *)p, v); }
// d[0..16) += the 16 lanes, widened to int64.
inline void vflush(int64_t *d, V v) {
    const __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(v));
    const __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(v, 1));
    _mm512_storeu_si512((void *)d, _mm512_add_epi64(_mm512_loadu_si512((const void *)d), lo));
    _mm512_storeu_si512((void *)(d + 8), _mm512_add_epi64(_mm512_loadu_si512((const void *)(d + 8)), hi));
}
// rshift_round of every lane by r >= 0 in int32: (a >> r) + bit r-1 of a (cannot overflow).
inline V vround(V a, int r) {
    if (r == 0) return a;
    if (r >= 32) return vzero();
    const __m128i c = _mm_cvtsi32_si128(r), c1 = _mm_cvtsi32_si128(r - 1);
    return _mm512_add_epi32(_mm512_sra_epi32(a, c), _mm512_and_si512(_mm512_sra_epi32(a, c1), _mm512_set1_epi32(1)));
}
#elif defined(E2T_PATH_VNNI256) || defined(E2T_PATH_AVX2)
#define E2T_LANES 8
typedef __m256i V;
inline V vzero() { return _mm256_setzero_si256(); }
inline V vload(const int32_t *p) { return _mm256_loadu_si256((const __m256i *)p); }
inline V vset1(int32_t x) { return _mm256_set1_epi32(x); }
#if defined(E2T_PATH_VNNI256)
inline V vdot(V acc, V a, V b) { return _mm256_dpwssd_epi32(acc, a, b); }
#else
inline V vdot(V acc, V a, V b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
#endif
inline void vstore(int32_t *p, V v) { _mm256_storeu_si256((__m256i *)p, v); }
inline void vflush(int64_t *d, V v) {
    const __m256i lo = _mm256_cvtepi32_epi64(_mm256_castsi256_si128(v));
    const __m256i hi = _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1));
    _mm256_storeu_si256((__m256i *)d, _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)d), lo));
    _mm256_storeu_si256((__m256i *)(d + 4), _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(d + 4)), hi));
}
inline V vround(V a, int r) {
    if (r == 0) return a;
    if (r >= 32) return vzero();
    const __m128i c = _mm_cvtsi32_si128(r), c1 = _mm_cvtsi32_si128(r - 1);
    return _mm256_add_epi32(_mm256_sra_epi32(a, c), _mm256_and_si256(_mm256_sra_epi32(a, c1), _mm256_set1_epi32(1)));
}
#elif defined(E2T_PATH_NEON)
#define E2T_LANES 4
typedef int32x4_t V;
inline V vzero() { return vdupq_n_s32(0); }
inline V vload(const int32_t *p) { return vld1q_s32(p); }
inline V vset1(int32_t x) { return vdupq_n_s32(x); }
// The 8 int16 products (smull on each half), summed in pairs (addp): lane i gets a[2i] b[2i] +
// a[2i+1] b[2i+1]. Wrap-around int32 adds, as vpmaddwd.
inline V vdot(V acc, V a, V b) {
    const int16x8_t a16 = vreinterpretq_s16_s32(a), b16 = vreinterpretq_s16_s32(b);
    const int32x4_t lo = vmull_s16(vget_low_s16(a16), vget_low_s16(b16));
    const int32x4_t hi = vmull_high_s16(a16, b16);
    return vreinterpretq_s32_u32(vaddq_u32(vreinterpretq_u32_s32(acc), vreinterpretq_u32_s32(vpaddq_s32(lo, hi))));
}
inline void vstore(int32_t *p, V v) { vst1q_s32(p, v); }
inline void vflush(int64_t *d, V v) {
    vst1q_s64(d, vaddw_s32(vld1q_s64(d), vget_low_s32(v)));
    vst1q_s64(d + 2, vaddw_high_s32(vld1q_s64(d + 2), v));
}
inline V vround(V a, int r) {
    if (r == 0) return a;
    if (r >= 32) return vzero();
    const int32x4_t sh = vdupq_n_s32(-r), sh1 = vdupq_n_s32(1 - r);
    return vaddq_s32(vshlq_s32(a, sh), vandq_s32(vshlq_s32(a, sh1), vdupq_n_s32(1)));
}
#elif defined(E2T_PATH_SCALAR)
#define E2T_LANES 8
struct V {
    int32_t l[E2T_LANES];
};
inline V vzero() {
    V r;
    for (int i = 0; i < E2T_LANES; i++) r.l[i] = 0;
    return r;
}
inline V vload(const int32_t *p) {
    V r;
    memcpy(r.l, p, sizeof r.l);
    return r;
}
inline V vset1(int32_t x) {
    V r;
    for (int i = 0; i < E2T_LANES; i++) r.l[i] = x;
    return r;
}
inline int32_t lo16(int32_t v) { return (int16_t)(uint16_t)((uint32_t)v & 0xffff); }
inline int32_t hi16(int32_t v) { return (int16_t)(uint16_t)((uint32_t)v >> 16); }
inline V vdot(V acc, V a, V b) {
    for (int i = 0; i < E2T_LANES; i++) {
        const int64_t s = (int64_t)lo16(a.l[i]) * lo16(b.l[i]) + (int64_t)hi16(a.l[i]) * hi16(b.l[i]);
        acc.l[i] = (int32_t)((uint32_t)acc.l[i] + (uint32_t)s);
    }
    return acc;
}
inline void vstore(int32_t *p, V v) { memcpy(p, v.l, sizeof v.l); }
inline void vflush(int64_t *d, V v) {
    for (int i = 0; i < E2T_LANES; i++) d[i] += v.l[i];
}
inline V vround(V a, int r) {
    for (int i = 0; i < E2T_LANES; i++) {
        const int64_t v = a.l[i];
        a.l[i] = (int32_t)(r > 0 ? (v + ((int64_t)1 << (r - 1))) >> r : v);
    }
    return a;
}
#else
#error "define one E2T_PATH_* macro (see the top of this file)"
#endif

const int L = E2T_LANES;

// One micro-kernel row: acc[v] += vdot(broadcast(*a), b[v]) for v < NR.
typedef int32_t __attribute__((may_alias)) i32a;
template <int NR>
inline void row_dot(V *acc, const i32a *a, const V *b) {
    const V am = vset1(*a);
    for (int v = 0; v < NR; v++) acc[v] = vdot(acc[v], am, b[v]);
}
// The asm rows below keep every accumulator in a register (g++ otherwise copies and spills
// them). They take the accumulators by value (copy in, asm, copy out), and the micro-kernels index
// them only with compile-time constants (Unroll): together these let g++ turn the accumulator
// arrays into registers; an asm operand on the array element itself, or a loop index, keeps the
// whole array on the stack with a store per product. Register budget: MR * NR * PARTS + NR + 1
// (AVX-512: 32 registers) or + 2 (AVX2: 16).
#if defined(E2T_PATH_VNNI512) || defined(E2T_PATH_VNNI256)
#define E2T_ROW_BCAST "vpbroadcastd %[a], %[t]\n\t"
#define E2T_ROW_DOT(b, c) "vpdpwssd %[" b "], %[t], %[" c "]\n\t"
#define E2T_ROW_TMP
#define E2T_ROW_REG "v"
#elif defined(E2T_PATH_AVX2)
#define E2T_ROW_BCAST "vpbroadcastd %[a], %[t]\n\t"
#define E2T_ROW_DOT(b, c) "vpmaddwd %[" b "], %[t], %[u]\n\tvpaddd %[u], %[" c "], %[" c "]\n\t"
#define E2T_ROW_TMP , [u] "=&x"(u)
#define E2T_ROW_REG "x"
#endif
#if defined(E2T_PATH_VNNI512) || defined(E2T_PATH_VNNI256)
// One vector per row: the broadcast folds into the product (an embedded-broadcast memory operand).
template <>
inline void row_dot<1>(V *acc, const i32a *a, const V *b) {
    V c0 = acc[0];
#if defined(E2T_PATH_VNNI512)
    __asm__("vpdpwssd %[a]%{1to16%}, %[b0], %[c0]" : [c0] "+v"(c0) : [a] "m"(*a), [b0] "v"(b[0]));
#else
    __asm__("vpdpwssd %[a]%{1to8%}, %[b0], %[c0]" : [c0] "+v"(c0) : [a] "m"(*a), [b0] "v"(b[0]));
#endif
    acc[0] = c0;
}
#elif defined(E2T_ROW_BCAST)
template <>
inline void row_dot<1>(V *acc, const i32a *a, const V *b) {
    V t, u, c0 = acc[0];
    (void)u;
    __asm__(E2T_ROW_BCAST E2T_ROW_DOT("b0", "c0")
            : [c0] "+" E2T_ROW_REG(c0), [t] "=&" E2T_ROW_REG(t) E2T_ROW_TMP
            : [a] "m"(*a), [b0] E2T_ROW_REG(b[0]));
    acc[0] = c0;
}
#endif
#ifdef E2T_ROW_BCAST
template <>
inline void row_dot<2>(V *acc, const i32a *a, const V *b) {
    V t, u, c0 = acc[0], c1 = acc[1];
    (void)u;
    __asm__(E2T_ROW_BCAST E2T_ROW_DOT("b0", "c0") E2T_ROW_DOT("b1", "c1")
            : [c0] "+" E2T_ROW_REG(c0), [c1] "+" E2T_ROW_REG(c1), [t] "=&" E2T_ROW_REG(t) E2T_ROW_TMP
            : [a] "m"(*a), [b0] E2T_ROW_REG(b[0]), [b1] E2T_ROW_REG(b[1]));
    acc[0] = c0;
    acc[1] = c1;
}
template <>
inline void row_dot<3>(V *acc, const i32a *a, const V *b) {
    V t, u, c0 = acc[0], c1 = acc[1], c2 = acc[2];
    (void)u;
    __asm__(E2T_ROW_BCAST E2T_ROW_DOT("b0", "c0") E2T_ROW_DOT("b1", "c1") E2T_ROW_DOT("b2", "c2")
            : [c0] "+" E2T_ROW_REG(c0), [c1] "+" E2T_ROW_REG(c1), [c2] "+" E2T_ROW_REG(c2),
              [t] "=&" E2T_ROW_REG(t) E2T_ROW_TMP
            : [a] "m"(*a), [b0] E2T_ROW_REG(b[0]), [b1] E2T_ROW_REG(b[1]), [b2] E2T_ROW_REG(b[2]));
    acc[0] = c0;
    acc[1] = c1;
    acc[2] = c2;
}
#endif

#if defined(E2T_PATH_VNNI512) || defined(E2T_PATH_VNNI256)
// int8 rows for CONV_FWD: acc[v] += vpdpbusd(b[v] as 4 unsigned bytes per lane, broadcast(*a) as 4
// signed bytes), four products per lane and step (the activations carry an offset of 128).
#define E2T_VNNI_PATHS 1
#if defined(E2T_PATH_VNNI512)
#define E2T_BCAST4 "%{1to16%}"
#else
#define E2T_BCAST4 "%{1to8%}"
#endif
template <int NR>
inline void row_dot4(V *acc, const i32a *a, const V *b);
template <>
inline void row_dot4<1>(V *acc, const i32a *a, const V *b) {
    V c0 = acc[0];
    __asm__("vpdpbusd %[a]" E2T_BCAST4 ", %[b0], %[c0]" : [c0] "+v"(c0) : [a] "m"(*a), [b0] "v"(b[0]));
    acc[0] = c0;
}
template <>
inline void row_dot4<2>(V *acc, const i32a *a, const V *b) {
    V t, c0 = acc[0], c1 = acc[1];
    __asm__("vpbroadcastd %[a], %[t]\n\tvpdpbusd %[t], %[b0], %[c0]\n\tvpdpbusd %[t], %[b1], %[c1]"
            : [c0] "+v"(c0), [c1] "+v"(c1), [t] "=&v"(t)
            : [a] "m"(*a), [b0] "v"(b[0]), [b1] "v"(b[1]));
    acc[0] = c0;
    acc[1] = c1;
}
template <>
inline void row_dot4<3>(V *acc, const i32a *a, const V *b) {
    V t, c0 = acc[0], c1 = acc[1], c2 = acc[2];
    __asm__("vpbroadcastd %[a], %[t]\n\tvpdpbusd %[t], %[b0], %[c0]\n\tvpdpbusd %[t], %[b1], %[c1]\n\t"
            "vpdpbusd %[t], %[b2], %[c2]"
            : [c0] "+v"(c0), [c1] "+v"(c1), [c2] "+v"(c2), [t] "=&v"(t)
            : [a] "m"(*a), [b0] "v"(b[0]), [b1] "v"(b[1]), [b2] "v"(b[2]));
    acc[0] = c0;
    acc[1] = c1;
    acc[2] = c2;
}
inline V vsub(V a, V b) {
#if defined(E2T_PATH_VNNI512)
    return _mm512_sub_epi32(a, b);
#else
    return _mm256_sub_epi32(a, b);
#endif
}
#endif

// Unroll<0, N>::run(f) calls f(Int<0>()), ..., f(Int<N-1>()): loop indices as compile-time
// constants (i.value), so that arrays indexed by them can live in registers.
template <int I>
struct Int {
    static constexpr int value = I;
};
template <int I, int N>
struct Unroll {
    template <class F>
    __attribute__((always_inline)) static inline void run(const F &f) {
        f(Int<I>());
        Unroll<I + 1, N>::run(f);
    }
};
template <int N>
struct Unroll<N, N> {
    template <class F>
    __attribute__((always_inline)) static inline void run(const F &) {}
};

}  // namespace

#endif  // E2T_FAST_SIMD_H
