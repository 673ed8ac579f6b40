// e2t_fast_run: the fast engine as a program, for CPUs where Python cannot load the library (the
// aarch64 build run under qemu-user in the tests, or a board without the Python side).
//
// Reads calls from stdin until end of file, answers each on stdout, all in the host's byte order:
//   call:   int32 path (an index of e2t_fast_path_name), uint32 sizeof(struct e2t_regs), the
//           registers as struct e2t_regs, then per buffer of struct e2t_ports, in its order,
//           uint64 byte count and the bytes (count 0: no buffer);
//   answer: struct e2t_status, then every buffer as it is after the call (count and bytes).
// Exit status 0 at end of input, 2 on a malformed call (with one line on stderr).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2t_regs.h"

extern "C" void e2t_fast_call(int path, const struct e2t_regs *, const struct e2t_ports *, struct e2t_status *);
extern "C" int e2t_fast_path_count(void);

namespace {

const int NPORTS = (int)(sizeof(struct e2t_ports) / sizeof(void *));

bool read_all(void *p, size_t n) { return fread(p, 1, n, stdin) == n; }
void write_all(const void *p, size_t n) {
    if (fwrite(p, 1, n, stdout) != n) {
        fprintf(stderr, "e2t_fast_run: cannot write the answer\n");
        exit(2);
    }
}
[[noreturn]] void bad(const char *what) {
    fprintf(stderr, "e2t_fast_run: malformed call: %s\n", what);
    exit(2);
}

}  // namespace

int main() {
    int32_t path;
    while (read_all(&path, sizeof path)) {
        uint32_t size;
        struct e2t_regs regs;
        if (!read_all(&size, sizeof size) || size != sizeof regs) bad("register block of the wrong size");
        if (!read_all(&regs, sizeof regs)) bad("registers cut short");
        if (path < 0 || path >= e2t_fast_path_count()) bad("unknown path");
        void *bufs[NPORTS];
        uint64_t sizes[NPORTS];
        for (int i = 0; i < NPORTS; i++) {
            if (!read_all(&sizes[i], sizeof sizes[i])) bad("buffer size cut short");
            bufs[i] = nullptr;
            if (sizes[i]) {
                bufs[i] = aligned_alloc(64, (sizes[i] + 63) & ~(uint64_t)63);
                if (!bufs[i]) bad("buffer too large to allocate");
                if (!read_all(bufs[i], sizes[i])) bad("buffer cut short");
            }
        }
        struct e2t_ports ports;
        memcpy(&ports, bufs, sizeof ports);  // the struct is NPORTS pointers, in this order
        struct e2t_status st;
        e2t_fast_call(path, &regs, &ports, &st);
        write_all(&st, sizeof st);
        for (int i = 0; i < NPORTS; i++) {
            write_all(&sizes[i], sizeof sizes[i]);
            if (sizes[i]) write_all(bufs[i], sizes[i]);
            free(bufs[i]);
        }
        fflush(stdout);
    }
    return 0;
}
