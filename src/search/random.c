/* random.c: uniform random search at full fidelity. Members are drawn uniformly over raw
 * choice vectors (space_sample); a draw whose canonical form was already asked is redrawn, so
 * no function is evaluated twice. Sampling is therefore uniform over raw vectors conditioned on
 * being new (functions with many raw spellings, such as NB201 cells with dead edges, stay more
 * likely, as in NAS-Bench-201's own random baseline). ask returns -1 once every function of
 * the space was asked (known for spaces of at most 2^22 raw members, else after 10,000 draws
 * in a row were repeats). Results are ignored.
 */
#include "strategies.h"

typedef struct {
    StrSet seen; /* canonical arch strings asked */
} RandomImpl;

static int random_ask(Strategy *s, Trial *t) {
    RandomImpl *im = s->impl;
    int m[SPACE_MAX_DIMS];
    if (!strat_sample_unique(s, &im->seen, m, 10000)) return -1;
    char *k = strat_key(s->space, m, NULL);
    strset_add(&im->seen, k);
    free(k);
    strat_emit(s, t, m, s->cfg.max_fid);
    return 1;
}

static void random_tell(Strategy *s, const Trial *t, TrialStatus status, double score) {}

static void random_destroy(Strategy *s) {
    RandomImpl *im = s->impl;
    strset_free(&im->seen);
    free(im);
}

static const StrategyOps random_ops = {"random", random_ask, random_tell, random_destroy};

int random_init(Strategy *s, Err *e) {
    RandomImpl *im = xcalloc(1, sizeof *im);
    strset_init(&im->seen);
    s->impl = im;
    s->ops = &random_ops;
    return NASC_OK;
}
