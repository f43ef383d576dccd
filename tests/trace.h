/* trace.h: what the strategy tests share: a record of the trials a strategy asked and the
 * answers it was told, in order, to check the determinism contract (src/search/strategy.h). */
#ifndef NASC_TEST_TRACE_H
#define NASC_TEST_TRACE_H

#include "../src/search/strategy.h"

typedef struct {
    Trial *tr;
    TrialStatus *st;
    double *score;
    int n, cap;
} Trace;

static inline void trace_push(Trace *x, const Trial *t, TrialStatus st, double score) {
    if (x->n == x->cap) {
        x->cap = x->cap ? 2 * x->cap : 64;
        x->tr = xrealloc(x->tr, (size_t)x->cap * sizeof *x->tr);
        x->st = xrealloc(x->st, (size_t)x->cap * sizeof *x->st);
        x->score = xrealloc(x->score, (size_t)x->cap * sizeof *x->score);
    }
    x->tr[x->n] = *t;
    x->st[x->n] = st;
    x->score[x->n++] = score;
}

static inline void trace_free(Trace *x) {
    free(x->tr);
    free(x->st);
    free(x->score);
}

static inline void on_trial(void *ctx, const Trial *t, TrialStatus st, double score) { trace_push(ctx, t, st, score); }

static inline int same_trial(const Space *sp, const Trial *a, const Trial *b) {
    return a->id == b->id && memcmp(a->m, b->m, (size_t)sp->ndims * sizeof a->m[0]) == 0 &&
           a->fid.epochs == b->fid.epochs && a->fid.fraction == b->fid.fraction;
}

#endif
