/* space.c: opening a search space by name, and the operations every space shares.
 *
 * space_open(name_or_file, channels, cells) understands:
 *   "nb201"               NAS-Bench-201 cells on the NB201 skeleton with `channels` (default 16
 *                         when <= 0) and `cells` per stage (default 1 when <= 0);
 *   "macro"               the MobileNet-style macro space with its defaults (macro.c);
 *   "macro:KEY=VAL,..."   the macro space with settings changed inline, e.g.
 *                         "macro:depth=1,2,kernel=3,5,res=28" (grammar in macro.c);
 *   FILE                  an existing file: a macro config file when its first word is `macro`
 *                         (then KEY = VAL lines, see macro.c), otherwise a user-defined space
 *                         (a spec with choice points, user.c).
 *
 * A member is a vector of choice indices, m[d] in 0..card[d]-1, so everything here is defined
 * through card[] and the space's ops:
 *   - sampling draws every decision independently and uniformly: uniform over raw vectors
 *     (for the macro space this is Once-for-All's sampling: uniform depth, then uniform
 *     settings of each block);
 *   - enumeration is mixed radix with the LAST decision varying fastest;
 *   - mutation changes exactly one active decision (among those with more than one value),
 *     picked uniformly, to one of its other values, picked uniformly;
 *   - crossover takes each decision from either parent with probability 1/2;
 *   - encoding maps value v of a decision with c values to v / (c - 1) (0 when c = 1) and
 *     decoding takes the nearest value, so decode(encode(m)) = m.
 */
#include "spaces.h"

#include <ctype.h>
#include <math.h>

/* The first word of a file's text, skipping blank space and '#' comments. */
static void first_word(const char *text, char *word, size_t n) {
    const char *p = text;
    for (;;) {
        while (*p && isspace((unsigned char)*p)) p++;
        if (*p == '#') {
            while (*p && *p != '\n') p++;
            continue;
        }
        break;
    }
    size_t k = 0;
    while (*p && (isalnum((unsigned char)*p) || *p == '_') && k + 1 < n) word[k++] = *p++;
    word[k] = 0;
}

Space *space_open(const char *name_or_file, int channels, int cells, Err *e) {
    if (!name_or_file || !*name_or_file) {
        err_set(e, "space: no space given (expected nb201, macro, macro:KEY=VAL,... or a space file)");
        return NULL;
    }
    if (strcmp(name_or_file, "nb201") == 0)
        return nb201_space_open(channels > 0 ? channels : 16, cells > 0 ? cells : 1, e);
    if (strcmp(name_or_file, "macro") == 0) return macro_space_open(NULL, "macro", 0, e);
    if (strncmp(name_or_file, "macro:", 6) == 0) return macro_space_open(name_or_file + 6, "macro:", 0, e);
    FILE *f = fopen(name_or_file, "rb");
    if (!f) {
        err_set(e,
                "space: '%s' is neither a space name (nb201, macro, macro:KEY=VAL,...) nor a readable file",
                name_or_file);
        return NULL;
    }
    fclose(f);
    size_t n;
    char *text = file_read_all(name_or_file, &n, e);
    if (!text) return NULL;
    char *z = xmalloc(n + 1); /* NUL-terminate whatever file_read_all gave */
    memcpy(z, text, n);
    z[n] = 0;
    free(text);
    char word[16];
    first_word(z, word, sizeof word);
    Space *s;
    if (strcmp(word, "macro") == 0) s = macro_space_open(z, name_or_file, 1, e);
    else s = user_space_open(name_or_file, e);
    free(z);
    return s;
}

void space_free(Space *s) {
    if (!s) return;
    if (s->ops && s->ops->destroy) s->ops->destroy(s);
    else {
        free(s->impl);
        free(s);
    }
}

void space_sample(const Space *s, Rng *r, int *out) {
    for (int d = 0; d < s->ndims; d++) out[d] = (int)rng_below(r, (uint32_t)s->card[d]);
}

double space_size(const Space *s) {
    double n = 1;
    for (int d = 0; d < s->ndims; d++) n *= s->card[d];
    return n;
}

int space_member_at(const Space *s, double index, int *out) {
    if (!(index >= 0) || index != floor(index) || index >= space_size(s) || index >= 9007199254740992.0)
        return NASC_ERR;
    for (int d = s->ndims - 1; d >= 0; d--) {
        double q = floor(index / s->card[d]);
        out[d] = (int)(index - q * s->card[d]);
        index = q;
    }
    return NASC_OK;
}

void space_mutate(const Space *s, const int *m, Rng *r, int *out) {
    int act[SPACE_MAX_DIMS], cand[SPACE_MAX_DIMS], n = 0;
    memcpy(out, m, (size_t)s->ndims * sizeof *out);
    if (s->ops->active) s->ops->active(s, m, act);
    else
        for (int d = 0; d < s->ndims; d++) act[d] = 1;
    for (int d = 0; d < s->ndims; d++)
        if (act[d] && s->card[d] > 1) cand[n++] = d;
    if (n == 0) return; /* nothing can change: a one-member space */
    int d = cand[rng_below(r, (uint32_t)n)];
    int v = (int)rng_below(r, (uint32_t)(s->card[d] - 1));
    out[d] = v >= m[d] ? v + 1 : v; /* uniform over the other values */
}

void space_crossover(const Space *s, const int *a, const int *b, Rng *r, int *out) {
    for (int d = 0; d < s->ndims; d++) out[d] = (rng_next(r) >> 63) ? b[d] : a[d];
}

void space_encode(const Space *s, const int *m, float *vec) {
    for (int d = 0; d < s->ndims; d++) vec[d] = s->card[d] > 1 ? (float)m[d] / (float)(s->card[d] - 1) : 0.0f;
}

void space_decode(const Space *s, const float *vec, int *out) {
    for (int d = 0; d < s->ndims; d++) {
        double v = vec[d];
        if (!(v >= 0)) v = 0; /* also NaN */
        if (v > 1) v = 1;
        int k = (int)lround(v * (s->card[d] - 1));
        out[d] = NASC_MIN(NASC_MAX(k, 0), s->card[d] - 1);
    }
}

char *space_canonical_arch(const Space *s, const int *m) {
    int c[SPACE_MAX_DIMS];
    s->ops->canonical(s, m, c);
    return s->ops->to_arch(s, c);
}
