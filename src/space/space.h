/* space.h: search spaces. A member of a space is a fixed-length vector of choice indices
 * (one per decision, decision d taking values 0..card[d]-1), so that sampling, mutation,
 * crossover, encoding for Bayesian optimization / learned policies, and enumeration work
 * the same way for every space. Each space turns a member into a spec (the network text the
 * engine builds) and into a compact arch string (what the user and the trial database see,
 * e.g. NB201's "nb201:|nor_conv_3x3~0|+|...|"), and parses arch strings back.
 *
 * Spaces: "nb201" (NAS-Bench-201 cells), "macro" (MobileNet-style, Once-for-All-like),
 * and user-defined spaces read from a text file (a spec with choice points).
 */
#ifndef NASC_SPACE_H
#define NASC_SPACE_H

#include "../core/common.h"

#define SPACE_MAX_DIMS 256

typedef struct Space Space;

typedef struct {
    const char *name;
    /* Canonical form: members that compute the same function map to the same member
     * (e.g. NB201 edges that cannot reach the output become none; inactive decisions,
     * such as the settings of blocks beyond a stage's depth, become 0). */
    void (*canonical)(const Space *s, const int *m, int *out);
    /* The spec text for the engine (caller frees), or NULL with a message. */
    char *(*to_spec)(const Space *s, const int *m, Err *e);
    /* The compact arch string (caller frees) and its inverse (NASC_ERR with a message). */
    char *(*to_arch)(const Space *s, const int *m);
    int (*from_arch)(const Space *s, const char *arch, int *m, Err *e);
    /* Which decisions matter for member m (1) given the others (e.g. a block beyond the
     * stage's depth does not); may be NULL when all always matter. */
    void (*active)(const Space *s, const int *m, int *active);
    void (*destroy)(Space *s);
} SpaceOps;

struct Space {
    const SpaceOps *ops;
    int ndims;
    int card[SPACE_MAX_DIMS];      /* number of values of each decision (>= 1) */
    char dim_name[SPACE_MAX_DIMS][32]; /* e.g. "edge 1->2", "stage 2 depth", "block 3 kernel" */
    int channels, cells;           /* NB201 skeleton (nb201 space only) */
    void *impl;                    /* space-specific data */
};

/* Open a space by name ("nb201", "macro") or from a space file; options are the CLI's
 * NB201 --channels/--cells and macro settings (NULL for defaults). NULL + message on error. */
Space *space_open(const char *name_or_file, int channels, int cells, Err *e);
void space_free(Space *s);

/* Generic operations (space.c), defined through card[] and ops. */
void space_sample(const Space *s, Rng *r, int *out);               /* uniform over members */
double space_size(const Space *s);                                 /* product of card[] (of raw vectors) */
int space_member_at(const Space *s, double index, int *out);       /* mixed-radix enumeration; NASC_ERR if out of range */
void space_mutate(const Space *s, const int *m, Rng *r, int *out);  /* change one active decision to another value */
void space_crossover(const Space *s, const int *a, const int *b, Rng *r, int *out); /* uniform crossover */
/* Encode as ndims floats in [0, 1] (value / (card - 1), 0 for card 1) and decode back
 * (nearest value). encode then decode is the identity. */
void space_encode(const Space *s, const int *m, float *vec);
void space_decode(const Space *s, const float *vec, int *out);
/* Canonical arch string (caller frees): to_arch(canonical(m)). Equal strings = same function. */
char *space_canonical_arch(const Space *s, const int *m);

#endif
