/* sched.c: learning-rate schedules as closed-form functions of the 0-based optimizer step.
 *
 * A schedule is a pure function (no state), so a resumed run gets the same rates. Values are
 * computed in double and rounded to float once. Matching PyTorch 1.13 (checked in
 * tests/test_optim.c against numbers torch produced):
 *   const   lr
 *   step    lr * gamma^floor(t / step_size)                      = StepLR(step_size, gamma)
 *   cosine  lr_min + (lr - lr_min) * (1 + cos(pi * t / T)) / 2,  T = total_steps - warmup_steps
 *                                                                = CosineAnnealingLR(T, lr_min)
 * each stepped once per optimizer step. With warmup_steps = W > 0, steps t < W use lr*(t+1)/W
 * (torch: LinearLR(start_factor=1/W, total_iters=W-1)) and the main schedule then sees t - W
 * (torch: SequentialLR(milestones=[W])); this applies to every kind.
 * Deliberate difference: past T the cosine stays at lr_min, where torch's would rise again.
 */
#include "train.h"

#include <math.h>

const char *sched_name(SchedKind k) {
    static const char *names[] = {"const", "step", "cosine"};
    _Static_assert(sizeof names / sizeof names[0] == SCHED_COUNT, "one name per SchedKind");
    return (unsigned)k < SCHED_COUNT ? names[k] : "?";
}

float sched_lr(const Schedule *s, long step) {
    NASC_ASSERT(s && (unsigned)s->kind < SCHED_COUNT && step >= 0);
    double lr = s->lr;
    long w = s->warmup_steps > 0 ? s->warmup_steps : 0;
    if (step < w) return (float)(lr * (double)(step + 1) / (double)w);
    long t = step - w;
    switch (s->kind) {
    case SCHED_CONST:
        return (float)lr;
    case SCHED_STEP:
        if (s->step_size <= 0) return (float)lr; /* no decay configured */
        return (float)(lr * pow((double)s->gamma, (double)(t / s->step_size)));
    case SCHED_COSINE: {
        long T = s->total_steps - w;
        double lo = s->lr_min;
        if (T <= 0) return (float)lr; /* nothing to anneal over */
        if (t >= T) return (float)lo;
        return (float)(lo + (lr - lo) * (1.0 + cos(M_PI * (double)t / (double)T)) / 2.0);
    }
    default:
        break;
    }
    NASC_ASSERT(0 && "unreachable");
    return 0.0f;
}
