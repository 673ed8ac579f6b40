// e2t_fast: the engine's fast CPU build, one library that runs on every CPU of its architecture.
// Same C ABI (e2t_regs.h), checks, status codes and integers as the HLS kernel.
//
// hls/fast/e2t_fast_ops.cpp is compiled once per CPU path (e2t_fast_simd.h); this file picks a
// path at run time from the CPU's features (cpuid through __builtin_cpu_supports on x86-64; NEON
// is part of every aarch64 CPU), so one binary runs correctly on a CPU without the newer ones.
//   x86-64:  vnni512 (AVX-512 VNNI, zmm), vnni256 (AVX-512 VNNI, ymm), avx2, scalar
//   aarch64: neon, scalar
// "auto" takes the best path the CPU has; on AVX-512 it chooses zmm or ymm per call, by the width
// of the dimension that the op lays across the lanes (output columns for CONV_FWD, input columns
// of one stride phase for CONV_BWD_DATA, output channels for CONV_WGRAD); UPDATE, STATS and APPLY
// (streaming passes; APPLY's kernel is AVX2 on both) take ymm.
#include <stdint.h>
#include <string.h>

#include "e2t_regs.h"

#define E2T_PATH_DECL(ns) \
    extern "C" void ns##_call(const struct e2t_regs *, const struct e2t_ports *, struct e2t_status *);

namespace {

typedef void (*call_fn)(const struct e2t_regs *, const struct e2t_ports *, struct e2t_status *);

struct Path {
    const char *name;
    call_fn call;  // null for "auto"
    bool (*supported)();
};

bool always() { return true; }

#if defined(__x86_64__)
E2T_PATH_DECL(e2t_fast_vnni512)
E2T_PATH_DECL(e2t_fast_vnni256)
E2T_PATH_DECL(e2t_fast_avx2)
E2T_PATH_DECL(e2t_fast_scalar)

// The paths are compiled for the x86-64 levels v3 (AVX2, FMA, BMI1/2, F16C, MOVBE) and v4 (plus
// AVX-512 F/BW/CD/DQ/VL), the VNNI ones with AVX-512 VNNI on top.
bool has_avx2() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v3");
}
bool has_vnni() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("x86-64-v4") && __builtin_cpu_supports("avx512vnni");
}

const Path PATHS[] = {{"auto", nullptr, always},
                      {"vnni512", e2t_fast_vnni512_call, has_vnni},
                      {"vnni256", e2t_fast_vnni256_call, has_vnni},
                      {"avx2", e2t_fast_avx2_call, has_avx2},
                      {"scalar", e2t_fast_scalar_call, always}};

// Lanes of 16 beat two vectors of 8 unless they are mostly empty: ceil(n/16) zmm vs ceil(n/8) ymm.
// CONV_FWD and CONV_BWD_DATA pack whole rows of a map narrower than the lanes when its width
// divides them.
bool wide(uint32_t n, bool rows_pack) { return (rows_pack && n < 16 && 16 % n == 0) || 2 * ((n + 15) / 16) <= (n + 7) / 8; }

call_fn auto_call(const struct e2t_regs *r) {
    if (has_vnni()) {
        uint32_t n = 0;
        const uint32_t s = r->stride ? r->stride : 1;
        if (r->op == E2T_OP_CONV_FWD && r->stride && r->w_in + 2 * r->pad >= r->kernel)
            n = (r->w_in + 2 * r->pad - r->kernel) / s + 1;
        else if (r->op == E2T_OP_CONV_BWD_DATA)
            n = (r->w_in + s - 1) / s;
        else if (r->op == E2T_OP_CONV_WGRAD)
            n = r->c_out;
        return n && wide(n, r->op != E2T_OP_CONV_WGRAD) ? e2t_fast_vnni512_call : e2t_fast_vnni256_call;
    }
    return has_avx2() ? e2t_fast_avx2_call : e2t_fast_scalar_call;
}
#elif defined(__aarch64__)
E2T_PATH_DECL(e2t_fast_neon)
E2T_PATH_DECL(e2t_fast_scalar)

const Path PATHS[] = {{"auto", nullptr, always}, {"neon", e2t_fast_neon_call, always}, {"scalar", e2t_fast_scalar_call, always}};

call_fn auto_call(const struct e2t_regs *) { return e2t_fast_neon_call; }
#else
E2T_PATH_DECL(e2t_fast_scalar)

const Path PATHS[] = {{"auto", nullptr, always}, {"scalar", e2t_fast_scalar_call, always}};

call_fn auto_call(const struct e2t_regs *) { return e2t_fast_scalar_call; }
#endif

const int NPATHS = (int)(sizeof PATHS / sizeof PATHS[0]);

}  // namespace

// Paths of this build, by index: their names and whether this CPU runs them.
extern "C" int e2t_fast_path_count(void) { return NPATHS; }
extern "C" const char *e2t_fast_path_name(int path) { return path >= 0 && path < NPATHS ? PATHS[path].name : ""; }
extern "C" int e2t_fast_path_supported(int path) { return path >= 0 && path < NPATHS && PATHS[path].supported(); }

// The path "auto" takes for these registers (its index), so callers can say what ran.
extern "C" int e2t_fast_path_chosen(const struct e2t_regs *regs) {
    const call_fn f = auto_call(regs);
    for (int i = 1; i < NPATHS; i++)
        if (PATHS[i].call == f) return i;
    return 0;
}

// One call on a given path; a path this CPU cannot run answers BAD_OP without touching a buffer.
extern "C" void e2t_fast_call(int path, const struct e2t_regs *regs, const struct e2t_ports *ports,
                              struct e2t_status *status) {
    if (path < 0 || path >= NPATHS || !PATHS[path].supported()) {
        memset(status, 0, sizeof *status);
        status->status = E2T_STATUS_BAD_OP;
        return;
    }
    (PATHS[path].call ? PATHS[path].call : auto_call(regs))(regs, ports, status);
}

// The emulation ABI: the best path for this CPU.
extern "C" void e2t_call(const struct e2t_regs *regs, const struct e2t_ports *ports, struct e2t_status *status) {
    auto_call(regs)(regs, ports, status);
}
