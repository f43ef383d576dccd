/* test_user_space.c: user-defined search spaces (src/space/user.c), through space_open and
 * the generic operations: parsing good files (decision count, cardinalities, names), exact
 * expansions of chosen members, arch strings (round trip and refusals), spec print/parse
 * round trips of expansions, canonical forms (members differing only in inactive decisions
 * merge, and nothing else does), random members of the example spaces building on 1x28x28
 * with 10 classes, member-dependent build errors, and every parse error with its line and
 * column. Space files are written to a temporary folder. */
#include <unistd.h>

#include "../src/net/net.h"
#include "../src/space/space.h"
#include "check.h"

static char tmpdir[] = "/tmp/nasc_test_user_space_XXXXXX";
static int nfiles;

/* Write `text` to a new file named `base` (or a numbered one) in the temp folder. */
static const char *write_space(const char *base, const char *text) {
    static char path[512];
    if (base) snprintf(path, sizeof path, "%s/%s", tmpdir, base);
    else snprintf(path, sizeof path, "%s/s%d.space", tmpdir, nfiles++);
    FILE *f = fopen(path, "w");
    NASC_ASSERT(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static Space *open_text(const char *base, const char *text) {
    Err e = {{0}};
    Space *s = space_open(write_space(base, text), 16, 1, &e);
    CHECK(s != NULL, "space should open: %s\n%s", e.msg, text);
    return s;
}

/* to_spec of member m equals `want` exactly, and parses/prints back to the same text. */
static void expect_spec(const Space *s, const int *m, const char *want) {
    Err e = {{0}};
    char *got = s->ops->to_spec(s, m, &e);
    CHECK(got != NULL, "to_spec failed: %s", e.msg);
    if (!got) return;
    CHECK(strcmp(got, want) == 0, "to_spec:\n got  %s\n want %s", got, want);
    Spec sp;
    CHECK(spec_parse(&sp, got, 16, 1, &e) == NASC_OK, "expansion parses: %s", e.msg);
    char *again = spec_print(&sp);
    CHECK(strcmp(again, got) == 0, "print(parse(expansion)) differs:\n%s\n%s", again, got);
    free(again);
    spec_free(&sp);
    free(got);
}

static void expect_arch(const Space *s, const int *m, const char *want) {
    char *a = s->ops->to_arch(s, m);
    CHECK(strcmp(a, want) == 0, "to_arch: got %s, want %s", a, want);
    int back[SPACE_MAX_DIMS];
    Err e = {{0}};
    CHECK(s->ops->from_arch(s, a, back, &e) == NASC_OK, "from_arch(%s): %s", a, e.msg);
    CHECK(memcmp(back, m, (size_t)s->ndims * sizeof *m) == 0, "from_arch(to_arch(m)) != m for %s", a);
    free(a);
}

static void expect_arch_error(const Space *s, const char *arch, const char *want) {
    int m[SPACE_MAX_DIMS];
    Err e = {{0}};
    CHECK(s->ops->from_arch(s, arch, m, &e) == NASC_ERR, "arch '%s' should be refused", arch);
    CHECK(strstr(e.msg, want) != NULL, "arch '%s': message '%s' should contain '%s'", arch, e.msg, want);
}

/* Sample members: arch round trip, expansion round trip, canonical is idempotent and keeps
 * the expansion; with `build`, every member builds on 1x28x28 with 10 classes. */
static void random_members(const Space *s, int n, int build, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    int m[SPACE_MAX_DIMS], c[SPACE_MAX_DIMS], c2[SPACE_MAX_DIMS], back[SPACE_MAX_DIMS];
    for (int i = 0; i < n; i++) {
        space_sample(s, &r, m);
        Err e = {{0}};
        char *a = s->ops->to_arch(s, m);
        CHECK(s->ops->from_arch(s, a, back, &e) == NASC_OK && !memcmp(back, m, (size_t)s->ndims * sizeof *m),
              "arch round trip: %s %s", a, e.msg);
        char *t = s->ops->to_spec(s, m, &e);
        CHECK(t != NULL, "member %s expands: %s", a, e.msg);
        s->ops->canonical(s, m, c);
        s->ops->canonical(s, c, c2);
        CHECK(!memcmp(c, c2, (size_t)s->ndims * sizeof *c), "canonical is idempotent (%s)", a);
        char *tc = s->ops->to_spec(s, c, &e);
        CHECK(t && tc && !strcmp(t, tc), "canonical member has the same expansion (%s)", a);
        Spec sp;
        if (t && spec_parse(&sp, t, 16, 1, &e) == NASC_OK) {
            char *p = spec_print(&sp);
            CHECK(!strcmp(p, t), "expansion round trip:\n%s\n%s", p, t);
            free(p);
            if (build) {
                Net net;
                int ok = net_build(&net, &sp, 1, 28, 28, 10, &e) == NASC_OK;
                CHECK(ok, "member %s builds: %s", a, e.msg);
                if (ok && i == 0) { /* one forward pass: finite logits */
                    float x[2 * 28 * 28];
                    for (int j = 0; j < 2 * 28 * 28; j++) x[j] = (float)rng_normal(&r);
                    net_init_params(&net, 1);
                    const float *y = net_forward(&net, x, 2, 0);
                    int finite = 1;
                    for (int j = 0; j < 20; j++) finite &= isfinite(y[j]) != 0;
                    CHECK(finite, "member %s gives finite logits", a);
                }
                if (ok) net_free(&net);
            }
            spec_free(&sp);
        } else if (t) {
            CHECK(0, "expansion of %s parses: %s", a, e.msg);
        }
        /* A mutation changes exactly one active decision. */
        int mu[SPACE_MAX_DIMS], act[SPACE_MAX_DIMS], ndiff = 0, dd = -1;
        space_mutate(s, m, &r, mu);
        s->ops->active(s, m, act);
        for (int d = 0; d < s->ndims; d++)
            if (mu[d] != m[d]) ndiff++, dd = d;
        CHECK(ndiff == 1 && act[dd], "mutation of %s changes one active decision (%d changed)", a, ndiff);
        free(a);
        free(t);
        free(tc);
    }
}

static const char tiny_text[] =
    "# tiny\n"
    "space tiny\n"
    "conv(c={16,24,32}, k={3,5}); bn; relu\n"
    "repeat {1,2,3} {\n"
    "    conv(c=32, k=3); bn; relu\n"
    "}\n"
    "choice { conv(c=32,k=3); bn; relu | conv(c=32,k=5,g=32); bn; relu6 | id }\n"
    "gap; linear\n";

static void test_tiny(void) {
    Space *s = open_text(NULL, tiny_text);
    if (!s) return;
    CHECK(!strcmp(s->ops->name, "user"), "ops name '%s'", s->ops->name);
    CHECK(s->ndims == 4, "tiny has 4 decisions, got %d", s->ndims);
    int want_card[4] = {3, 2, 3, 3};
    for (int d = 0; d < 4 && d < s->ndims; d++) CHECK(s->card[d] == want_card[d], "card[%d] = %d", d, s->card[d]);
    CHECK(!strcmp(s->dim_name[0], "line 3 col 6 c"), "dim 0 named '%s'", s->dim_name[0]);
    CHECK(!strcmp(s->dim_name[1], "line 3 col 20 k"), "dim 1 named '%s'", s->dim_name[1]);
    CHECK(!strcmp(s->dim_name[2], "line 4 col 8 repeat"), "dim 2 named '%s'", s->dim_name[2]);
    CHECK(!strcmp(s->dim_name[3], "line 7 col 1 choice"), "dim 3 named '%s'", s->dim_name[3]);
    CHECK(space_size(s) == 54, "size %g", space_size(s));

    int m0[4] = {0, 0, 0, 0}, m1[4] = {2, 1, 2, 1}, m2[4] = {1, 0, 1, 2};
    expect_spec(s, m0, "conv(c=16,k=3);bn;relu;conv(c=32,k=3);bn;relu;conv(c=32,k=3);bn;relu;gap;linear");
    expect_spec(s, m1,
                "conv(c=32,k=5);bn;relu;conv(c=32,k=3);bn;relu;conv(c=32,k=3);bn;relu;conv(c=32,k=3);bn;relu;"
                "conv(c=32,k=5,g=32);bn;relu6;gap;linear");
    expect_spec(s, m2, "conv(c=24,k=3);bn;relu;conv(c=32,k=3);bn;relu;conv(c=32,k=3);bn;relu;gap;linear");
    expect_arch(s, m0, "user:tiny:c16-k3-r1-a0");
    expect_arch(s, m1, "user:tiny:c32-k5-r3-a1");
    expect_arch(s, m2, "user:tiny:c24-k3-r2-a2");

    /* Every member: all decisions always matter here, so 54 distinct canonical archs. */
    char *seen[54];
    int distinct = 0;
    for (int i = 0; i < 54; i++) {
        int m[4], c[4];
        CHECK(space_member_at(s, i, m) == NASC_OK, "member_at %d", i);
        s->ops->canonical(s, m, c);
        CHECK(!memcmp(m, c, sizeof m), "member %d is canonical", i);
        char *a = space_canonical_arch(s, m);
        int dup = 0;
        for (int j = 0; j < distinct; j++) dup |= !strcmp(seen[j], a);
        if (dup) free(a);
        else seen[distinct++] = a;
    }
    CHECK(distinct == 54, "54 distinct archs, got %d", distinct);
    for (int j = 0; j < distinct; j++) free(seen[j]);

    /* Arch strings that are refused. */
    expect_arch_error(s, "user:small:c16-k3-r1-a0", "is for space 'small'");
    expect_arch_error(s, "nb201:|nor_conv_3x3~0|", "not from a user-defined space");
    expect_arch_error(s, "user:tiny:c16-k3-r1", "has 3 decisions, but space 'tiny' has 4");
    expect_arch_error(s, "user:tiny:c16-k3-r1-a0-a0", "has 5 decisions");
    expect_arch_error(s, "user:tiny:c20-k3-r1-a0", "decision 1 (line 3 col 6 c) is 'c20', expected one of c16, c24, c32");
    expect_arch_error(s, "user:tiny:c16-k3-r4-a0", "expected one of r1, r2, r3");
    expect_arch_error(s, "user:tiny:c16-k3-r1-a3", "is 'a3'");
    expect_arch_error(s, "user:tiny:c16-c3-r1-a0", "is 'c3'");
    expect_arch_error(s, "user:tiny", "expected 'user:NAME:DECISIONS'");
    int back[4];
    Err e;
    CHECK(s->ops->from_arch(s, "user:tiny:c16.0-k3-r1-a0", back, &e) == NASC_OK && back[0] == 0,
          "a value written differently is accepted: %s", e.msg);

    random_members(s, 30, 1, 1);
    int bad[4] = {0, 2, 0, 0};
    char *t = s->ops->to_spec(s, bad, &e);
    CHECK(t == NULL && strstr(e.msg, "decision 2"), "out-of-range member refused: %s", t ? t : e.msg);
    free(t);
    space_free(s);
}

/* Named value choices, aliases, nested repeats (names get iteration suffixes), an input
 * choice, and a choice whose first alternative is a skip. Decisions:
 *   0 w | 1 outer repeat | iteration 1: 2 inner repeat, 3-4 k, 5 input |
 *   iteration 2: 6 inner repeat, 7-8 k, 9 input | 10 choice */
static const char nest_text[] =
    "space t2\n"
    "w = {8, 16}\n"
    "s = conv(c=w, k=3); relu\n"
    "repeat {1,2} {\n"
    "    x = _\n"
    "    repeat {1,2} { y = conv(c=w, k={1,3}) }\n"
    "    add(x, {_, s})\n"
    "}\n"
    "choice { id | dropout }\n"
    "linear\n";

static void test_nested(void) {
    Space *s = open_text(NULL, nest_text);
    if (!s) return;
    CHECK(s->ndims == 11, "t2 has 11 decisions, got %d", s->ndims);
    for (int d = 0; d < s->ndims; d++) CHECK(s->card[d] == 2, "card[%d] = %d", d, s->card[d]);
    CHECK(!strcmp(s->dim_name[0], "line 2 col 1 w"), "dim 0 '%s'", s->dim_name[0]);
    CHECK(!strcmp(s->dim_name[4], "line 6 col 34 k [1,2]"), "dim 4 '%s'", s->dim_name[4]);
    CHECK(!strcmp(s->dim_name[9], "line 7 col 12 input [2]"), "dim 9 '%s'", s->dim_name[9]);

    int m0[11] = {0};
    expect_spec(s, m0, "s=conv(c=8,k=3);x_1=relu;y_1_1=conv(c=8,k=1);add(x_1,y_1_1);linear");
    expect_arch(s, m0, "user:t2:w=8-r1-r1-k1-k1-i0-r1-k1-k1-i0-a0");
    int act[11], want0[11] = {1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 1};
    s->ops->active(s, m0, act);
    CHECK(!memcmp(act, want0, sizeof act), "active decisions of the zero member");

    int m1[11] = {1, 1, 1, 1, 0, 1, 0, 1, 1, 0, 1};
    expect_spec(s, m1,
                "s=conv(c=16,k=3);x_1=relu;y_1_1=conv(c=16,k=3);y_1_2=conv(c=16,k=1);x_2=add(x_1,s);"
                "y_2_1=conv(c=16,k=3);add(x_2,y_2_1);dropout;linear");
    expect_arch(s, m1, "user:t2:w=16-r2-r2-k3-k1-i1-r1-k3-k3-i0-a1");
    int want1[11] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1};
    s->ops->active(s, m1, act);
    CHECK(!memcmp(act, want1, sizeof act), "active decisions of member 1");
    int c[11], m1b[11];
    memcpy(m1b, m1, sizeof m1);
    m1b[8] = 0; /* differs only in an inactive decision */
    char *a1 = space_canonical_arch(s, m1), *a2 = space_canonical_arch(s, m1b);
    CHECK(!strcmp(a1, a2), "members differing in an inactive decision merge: %s vs %s", a1, a2);
    CHECK(!strcmp(a1, "user:t2:w=16-r2-r2-k3-k1-i1-r1-k3-k1-i0-a1"), "canonical arch %s", a1);
    free(a1);
    free(a2);
    s->ops->canonical(s, m1, c);
    CHECK(c[8] == 0 && c[7] == 1, "canonical zeroes only the inactive decision");

    /* Over all 2048 vectors: canonical forms and expansions partition them the same way
     * (w 2 x choice 2 x (12 + 12*12) per outer depth = 624 classes). */
    int nvec = (int)space_size(s);
    char **canon = xcalloc((size_t)nvec, sizeof *canon), **spec = xcalloc((size_t)nvec, sizeof *spec);
    int ncanon = 0, nspec = 0, consistent = 1;
    Err e;
    for (int i = 0; i < nvec; i++) {
        int m[11];
        space_member_at(s, i, m);
        canon[i] = space_canonical_arch(s, m);
        spec[i] = s->ops->to_spec(s, m, &e);
        NASC_ASSERT(spec[i]);
        int newc = 1, news = 1;
        for (int j = 0; j < i; j++) {
            int sc = !strcmp(canon[i], canon[j]), ss = !strcmp(spec[i], spec[j]);
            if (sc != ss) consistent = 0;
            if (sc) newc = 0;
            if (ss) news = 0;
        }
        ncanon += newc;
        nspec += news;
    }
    CHECK(ncanon == 624 && nspec == 624, "624 canonical classes and expansions, got %d and %d", ncanon, nspec);
    CHECK(consistent, "same canonical arch <=> same expansion");
    for (int i = 0; i < nvec; i++) free(canon[i]), free(spec[i]);
    free(canon);
    free(spec);
    random_members(s, 30, 1, 2);
    space_free(s);
}

static void test_semantics(void) {
    Err e = {{0}};
    /* A value choice used only inside an unchosen alternative is inactive. */
    Space *s = open_text(NULL, "w = {8,16}\nconv(c=8,k=3)\nchoice { id | conv(c=w,k=3) }\ngap; linear\n");
    if (s) {
        int m[2] = {1, 0}, act[2], c[2];
        s->ops->active(s, m, act);
        CHECK(act[0] == 0 && act[1] == 1, "w inactive when its only use is skipped");
        s->ops->canonical(s, m, c);
        CHECK(c[0] == 0 && c[1] == 0, "canonical zeroes w");
        m[1] = 1;
        s->ops->active(s, m, act);
        CHECK(act[0] == 1, "w active when used");
        expect_spec(s, m, "conv(c=8,k=3);conv(c=16,k=3);gap;linear");
        space_free(s);
    }
    /* Space name from the file name; a trailing alias gives an output id; a lone value is
     * a constant; a named value choice can be a repeat count. */
    s = open_text("my-space.v2.space", "a = conv(c=4,k={3}); d = {1,2}; repeat d { conv(c=4,k=3) }; b = a\n");
    if (s) {
        CHECK(s->ndims == 1, "one decision (d), got %d", s->ndims);
        int m[1] = {1};
        expect_arch(s, m, "user:my_space_v2:d=2");
        expect_spec(s, m, "a=conv(c=4,k=3);conv(c=4,k=3);conv(c=4,k=3);id(a)");
        space_free(s);
    }
    /* Line breaks inside parentheses and lists. */
    s = open_text(NULL, "conv(c={16,\n       24},\n     k=3\n); relu\nadd(_,\n {input,\n _})\n");
    if (s) {
        CHECK(s->ndims == 2 && s->card[0] == 2 && s->card[1] == 2, "two decisions across lines");
        int m[2] = {1, 1};
        expect_spec(s, m, "conv(c=24,k=3);n1=relu;add(n1,n1)");
        space_free(s);
    }
    /* Names local to sibling alternatives; a block named as a whole. */
    s = open_text(NULL, "conv(c=8,k=3)\nz = choice { x = relu; add(x) | x = relu6; mul(x, _) }\nadd(z, input)\n");
    if (s) {
        int m[1] = {0};
        expect_spec(s, m, "conv(c=8,k=3);x=relu;z=add(x,x);add(z,input)");
        space_free(s);
    }
    /* A member that expands to nothing, and one that does not fit its input. */
    s = open_text(NULL, "choice { id | relu }\n");
    if (s) {
        int m[1] = {0};
        char *t = s->ops->to_spec(s, m, &e);
        CHECK(t == NULL && strstr(e.msg, "expands to no statements"), "empty expansion refused: %s", e.msg);
        free(t);
        space_free(s);
    }
    s = open_text(NULL, "conv(c={16,24},k=3); conv(c=16,k=3,g=16); gap; linear\n");
    if (s) {
        int m[1] = {1};
        char *t = s->ops->to_spec(s, m, &e);
        Spec sp;
        Net net;
        CHECK(t && spec_parse(&sp, t, 16, 1, &e) == NASC_OK, "expands and parses");
        if (t) {
            int rc = net_build(&net, &sp, 1, 28, 28, 10, &e);
            CHECK(rc == NASC_ERR && strstr(e.msg, "statement 2"), "groups mismatch is a build error: %s", e.msg);
            if (rc == NASC_OK) net_free(&net);
            spec_free(&sp);
        }
        free(t);
        space_free(s);
    }
}

static void test_examples(void) {
    static const char *names[] = {"tiny", "resnet", "mobile"};
    for (int i = 0; i < 3; i++) {
        char path[256];
        snprintf(path, sizeof path, "examples/spaces/%s.space", names[i]);
        if (access(path, R_OK) != 0) snprintf(path, sizeof path, "../examples/spaces/%s.space", names[i]);
        Err e = {{0}};
        Space *s = space_open(path, 16, 1, &e);
        CHECK(s != NULL, "example %s opens: %s", names[i], e.msg);
        if (!s) continue;
        CHECK(s->ndims > 0, "example %s has decisions", names[i]);
        int m[SPACE_MAX_DIMS];
        space_member_at(s, 0, m);
        char *a = s->ops->to_arch(s, m);
        char want[64];
        snprintf(want, sizeof want, "user:%s:", names[i]);
        CHECK(!strncmp(a, want, strlen(want)), "example arch %s", a);
        free(a);
        random_members(s, 40, 1, 10 + (uint64_t)i);
        space_free(s);
    }
}

typedef struct {
    const char *text;
    int line, col;
    const char *what;
} BadCase;

static const BadCase bad_cases[] = {
    {"conv(c=16,k=3); bn; frob; gap; linear", 1, 21, "unknown op 'frob'"},
    {"conv(c=16,k=3)\nrepeat {2} {\n  relu\n", 2, 12, "never closed"},
    {"conv(c=16,k=3)\nchoice { relu\n| relu6\n", 2, 8, "never closed"},
    {"conv(c=16,k=3)\n}\n", 2, 1, "unmatched '}'"},
    {"conv(c=16,k=3) | relu", 1, 16, "'|' outside a choice"},
    {"conv(c=16,k=3)\nrepeat 2 { relu | relu6 }", 2, 17, "'|' outside a choice"},
    {"conv(c=16,k=3); choice { }\n", 1, 17, "empty choice"},
    {"conv(c=16,k=3); choice { relu | }\n", 1, 33, "empty alternative"},
    {"conv(c=16,k=3); choice { | relu }\n", 1, 26, "empty alternative"},
    {"conv(c=16,k=3); repeat {2} { }", 1, 17, "empty repeat body"},
    {"repeat {1, 0} { relu }", 1, 12, "positive whole number, got 0"},
    {"repeat {1.5} { relu }", 1, 9, "positive whole number, got 1.5"},
    {"repeat 2.5 { relu }", 1, 8, "positive whole number, got 2.5"},
    {"repeat -1 { relu }", 1, 8, "positive whole number, got -1"},
    {"repeat {1,2,200} { relu }", 1, 13, "at most 100"},
    {"repeat two { relu }", 1, 8, "unknown value 'two'"},
    {"d = {1, 0.5}\nrepeat d { relu }", 2, 8, "got 0.5 (a value of 'd')"},
    {"conv(c={16, x}, k=3)", 1, 13, "expected a number in the value list, found 'x'"},
    {"conv(c={16, 16.0}, k=3)", 1, 13, "value 16.0 is listed twice"},
    {"conv(c={}, k=3)", 1, 8, "empty value list"},
    {"conv(c={16,24, k=3)", 1, 16, "expected a number in the value list, found 'k'"},
    {"conv(c={16;24}, k=3)", 1, 11, "expected ',' or '}' in the value list"},
    {"conv(c={16,\n 24}, k=3; relu", 2, 10, "expected ',' or ')', found ';'"},
    {"conv(c=16,k=3); add(_, zz)", 1, 24, "unknown input 'zz'"},
    {"conv(c=16,k=3); y = zz", 1, 21, "'zz' is neither an op nor a name defined before"},
    {"conv(c=16,k=3); repeat {2} { x = relu }; add(x)", 1, 46, "unknown input 'x'"},
    {"conv(c=16,k=3); choice { x = relu | relu6; add(x) }", 1, 48, "unknown input 'x'"},
    {"a = conv(c=16,k=3); repeat {2} { a = relu }", 1, 34, "name 'a' is already used"},
    {"relu = conv(c=16,k=3)", 1, 1, "'relu' is reserved"},
    {"choice = conv(c=16,k=3)", 1, 1, "'choice' is reserved"},
    {"conv(c=16,k=3); choice { relu | relu6 } relu", 1, 41, "expected ';' or a new line after a statement"},
    {"conv(c=16,k={3,4.5})", 1, 16, "attribute value must be a whole number, got 4.5"},
    {"conv(c=16,k=3,q={1,2})", 1, 15, "op 'conv' has no attribute 'q'"},
    {"conv(c=16)", 1, 1, "op 'conv' needs attribute 'k'"},
    {"conv(c=16, k=3); dropout(p={0.1, 1.5})", 1, 34, "dropout probability must be in [0, 1)"},
    {"a = relu; b = relu; conv(a, b, c=16, k=3)", 1, 29, "takes at most 1 inputs (at 'b')"},
    {"w = {16, 24}\nconv(c=w, k=3); add(w)", 2, 21, "'w' is a value choice, not an input"},
    {"conv(c=w, k=3)", 1, 8, "unknown value 'w'"},
    {"x = relu; conv(c=x, k=3)", 1, 18, "'x' names a node, not a value"},
    {"w = {16, 0}\nconv(c=w, k=3)", 2, 8, "attribute c must be at least 1, got 0"},
    {"conv(c=16,k=3)\nspace foo\n", 2, 1, "'space NAME' must be the first statement"},
    {"conv(c=16, k=3); add({})", 1, 22, "empty list"},
    {"a = relu; add(_, {a, a})", 1, 22, "input 'a' is listed twice"},
    {"conv(c=16, k=3) $", 1, 17, "found '$'"},
    {"", 1, 1, "the space has no statements"},
    {"# only comments\n\n", 3, 1, "the space has no statements"},
    {"repeat {100} { repeat {100} { conv(c=8,k=3); bn; relu } }", 1, 1, "more than 20000 statements"},
    {"repeat {100} { conv(c=8,k={1,3,5}); relu; conv(c=8,k={1,3,5}); relu6; conv(c={8,16},k=1) }", 1, 52,
     "the space has 300 decisions, more than 256"},
};

static void test_errors(void) {
    int n = (int)(sizeof bad_cases / sizeof bad_cases[0]);
    for (int i = 0; i < n; i++) {
        const BadCase *b = &bad_cases[i];
        const char *path = write_space(NULL, b->text);
        Err e = {{0}};
        Space *s = space_open(path, 16, 1, &e);
        CHECK(s == NULL, "case %d should not open: '%s'", i, b->text);
        if (s) {
            space_free(s);
            continue;
        }
        char want[600];
        snprintf(want, sizeof want, "%s: line %d, column %d: ", path, b->line, b->col);
        CHECK(!strncmp(e.msg, want, strlen(want)), "case %d ('%s'): message '%s' should start with '%s'", i, b->text,
              e.msg, want);
        CHECK(strstr(e.msg, b->what) != NULL, "case %d ('%s'): message '%s' should contain '%s'", i, b->text, e.msg,
              b->what);
    }
    /* 16 nested blocks: the statement inside is the 17th level. */
    char deep[512] = "", want[600];
    for (int i = 0; i < 16; i++) strcat(deep, "repeat 1 { ");
    strcat(deep, "relu");
    for (int i = 0; i < 16; i++) strcat(deep, " }");
    const char *path = write_space(NULL, deep);
    Err e = {{0}};
    Space *s = space_open(path, 16, 1, &e);
    snprintf(want, sizeof want, "%s: line 1, column 177: blocks nested too deeply", path);
    CHECK(s == NULL && !strncmp(e.msg, want, strlen(want)), "deep nesting refused: %s", e.msg);
    space_free(s);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_tiny();
    test_nested();
    test_semantics();
    test_examples();
    test_errors();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_summary("test_user_space");
}
