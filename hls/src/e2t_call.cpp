// The emulation ABI (e2t_regs.h) over the HLS top: what the IP does between ap_start and
// ap_done, as one C call on host buffers. Compiled into the CPU builds only, never synthesized.
#include "e2t_engine.h"

extern "C" void e2t_call(const struct e2t_regs *r, const struct e2t_ports *p, struct e2t_status *s) {
    e2t_engine(r->op, r->mode, r->batch, r->c_in, r->h_in, r->w_in, r->c_out, r->kernel, r->stride, r->pad, r->shift,
               r->threshold, r->count, r->e_w, r->lr, r->wd, r->mu, p->act, p->wgt, p->wshift, p->grad, p->out, p->sgn,
               p->scratch, p->master, p->mom, &s->status, &s->saturations, &s->psg_sure, &s->psg_tiles,
               &s->psg_recomputed, r->shift2, p->src1, p->src2, p->mask, p->coef, p->dst8, p->dst16, p->stats);
}
