// Reads operations of e2t_numerics.h from stdin, one per line, and prints their results:
//   R v s | M x | P g_msb g_full T | Q g_msb g_full R gmax | U w buf sign e_w LR WD MU
#include <iostream>
#include "e2t_numerics.h"

int main() {
    char op;
    while (std::cin >> op) {
        if (op == 'R') {
            long long v; int s; std::cin >> v >> s;
            std::cout << e2t::rshift_round(v, s) << "\n";
        } else if (op == 'M') {
            int x; std::cin >> x;
            std::cout << (int)e2t::msb((int8_t)x) << "\n";
        } else if (op == 'P') {
            long long gm, gf, t; std::cin >> gm >> gf >> t;
            std::cout << (int)e2t::psg_sign_abs(gm, gf, t) << "\n";
        } else if (op == 'Q') {
            long long gm, gf, r, gmax; std::cin >> gm >> gf >> r >> gmax;
            std::cout << (int)e2t::psg_sign_ratio(gm, gf, r, gmax) << "\n";
        } else if (op == 'U') {
            long long w, b, lr, wd, mu; int sign, e_w; std::cin >> w >> b >> sign >> e_w >> lr >> wd >> mu;
            int32_t w32 = (int32_t)w, b32 = (int32_t)b; uint32_t sat = 0;
            e2t::sign_update(w32, b32, (int8_t)sign, e_w, lr, wd, mu, sat);
            std::cout << w32 << " " << b32 << " " << sat << "\n";
        } else {
            std::cerr << "unknown op " << op << "\n";
            return 1;
        }
    }
    return 0;
}
