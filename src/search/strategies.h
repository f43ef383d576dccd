/* strategies.h: private to src/search. The constructors strategy_new() dispatches to (one per
 * strategy file) and the helpers they share: a set of strings (the canonical arch strings, or
 * "arch@fidelity" keys, already asked) and duplicate-avoiding sampling.
 *
 * Every strategy draws random numbers only from s->rng and keeps only data whose iteration order
 * is fixed (arrays, never pointer-keyed tables), so it meets strategy.h's determinism contract.
 */
#ifndef NASC_STRATEGIES_H
#define NASC_STRATEGIES_H

#include "strategy.h"

/* Each fills s->ops and s->impl (freed by ops->destroy), or returns NASC_ERR with a message. */
int random_init(Strategy *s, Err *e);
int evolution_init(Strategy *s, Err *e);
int reinforce_init(Strategy *s, Err *e);
int bohb_init(Strategy *s, Err *e);
int pnas_init(Strategy *s, Err *e);

/* A set of strings (open addressing, FNV-1a). Owns copies of its keys. */
typedef struct {
    char **slot;
    size_t cap, n;
} StrSet;
void strset_init(StrSet *h);
void strset_free(StrSet *h);
int strset_has(const StrSet *h, const char *key);
/* 1 if key was added, 0 if it was already there. */
int strset_add(StrSet *h, const char *key);

/* The dedup key of a member at a fidelity: "<canonical arch>@<epochs>x<fraction>"; with fid NULL
 * just the canonical arch. Caller frees. */
char *strat_key(const Space *sp, const int *m, const Fidelity *fid);
/* Is the member's canonical form in `seen` (keys made with fid NULL)? */
int strat_seen(const Space *sp, const StrSet *seen, const int *m);
/* Draw uniform members until one whose canonical form is not in `seen`, at most `tries` times;
 * then, in a space of at most 2^22 raw members, scan it from a random start. Returns 1 with a
 * fresh member in out, or 0 when none was found (for a small space: every function was seen). */
int strat_sample_unique(Strategy *s, const StrSet *seen, int *out, int tries);
/* Fill t (id, member, fidelity) and advance s->next_id. */
void strat_emit(Strategy *s, Trial *t, const int *m, Fidelity fid);
/* 1 when fid is at least the configuration's full fidelity. */
int strat_is_full(const Strategy *s, Fidelity fid);

#endif
