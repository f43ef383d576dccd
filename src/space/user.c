/* user.c: user-defined search spaces, read from a text file that is a spec with choice points.
 *
 * The language is the spec language (net.h, spec.c) plus choice points:
 *
 *     space tiny                          # optional first statement: the space's name
 *     w = {32, 48}                        # a named value choice: one decision, used as c=w
 *     conv(c=w, k={3,5}); bn; s = relu    # a value choice: KEY={v1,v2,...}
 *     repeat {1,2,3} {                    # a repeat count choice (or fixed: repeat 2 {...})
 *         x = _                           # an alias: names a value without adding a node
 *         conv(c=w,k=3); bn; relu; conv(c=w,k=3); bn; add(x); relu
 *     }
 *     choice { conv(c=w,k=3); bn; relu | conv(c=w,k=5,g=w); bn; relu6 | id }
 *     add(_, {s, _})                      # an input choice: one of several names
 *     gap; linear
 *
 * Grammar (tokens as in spec.c, plus '{', '}' and '|'; '#' comments; ';' or newline separate):
 *     file    := [ 'space' NAME SEP ] block
 *     block   := stmt { SEP stmt }                   empty statements are allowed
 *     stmt    := [ NAME '=' ] ( OP [ '(' [ arg { ',' arg } ] ')' ]
 *                             | 'repeat' count '{' block '}'
 *                             | 'choice' '{' block { '|' block } '}'
 *                             | ref )                alias: adds no node
 *              | NAME '=' values                     named value choice (or constant)
 *     arg     := ref | KEY '=' ( number | values )
 *     ref     := REF | '{' REF { ',' REF } '}'       REF := NAME | 'input' | '_'
 *     values  := NUMBER | '{' NUMBER { ',' NUMBER } '}'
 *     number  := NUMBER | NAME                       NAME of a named value choice
 *     count   := number | values                     whole numbers in 1..100
 * Line breaks may also appear inside parentheses and lists (not so in plain specs).
 * Inside a choice, an alternative that is just `id` is a skip (it adds no node). A list of one
 * value ({3}) is a constant. `space`, `repeat`, `choice`, op names, `input` and `_` are reserved.
 *
 * Meaning:
 *   - `_` is the value of the previous statement; a repeat's value is its last iteration's,
 *     a choice's is its chosen alternative's (a skip passes `_` through); an alias's value is
 *     the value it names. `NAME = repeat ...` / `NAME = choice ...` name a block's value.
 *   - Names are lexically scoped: a name defined inside a repeat body or a choice alternative
 *     is visible from its definition to the end of that body (in a repeat, within the same
 *     iteration) and not after it; a block's value leaves through `_` (or the block's name).
 *     A name may not be redefined while visible, but sibling bodies may reuse names. So every
 *     "name used before definition" is found when the file is read, whatever the choices.
 *     Named value choices follow the same rules (one inside a repeat body is one decision
 *     per iteration).
 *   - The network's output is `_` after the last statement (an `id` is appended if that is
 *     not the last node, e.g. after a trailing alias).
 *
 * Decisions. Every choice point with two or more options is one decision, numbered in the
 * order the file is read: a statement's value/input choices left to right; a named value
 * choice where it is defined; a repeat's count, then its body once per possible iteration (up
 * to the largest count); a choice's alternative, then every alternative's body in order. So
 * the vector has a fixed length and a decision exists whether or not it matters. A decision is
 * active when every enclosing repeat iteration is within its chosen count and every enclosing
 * alternative is chosen; a named value choice is active when some active statement uses it.
 * canonical() sets inactive decisions to 0. dim_name is "line L col C what [iterations]", e.g.
 * "line 6 col 34 k [1,2]" for a kernel choice in iteration 2 of a repeat inside iteration 1.
 *
 * Arch strings: "user:NAME:" and one token per decision joined by '-': a value choice is its
 * key and value ("c24", "k5", "p0.25"), a named value choice NAME=VALUE ("w=48"), a repeat
 * count "r" and the count ("r2"), a choice "a" and the 0-based alternative ("a1"), an input
 * choice "i" and the 0-based option ("i0"). E.g. "user:tiny:c24-k5-r2-a0". Every decision is
 * written, active or not, so from_arch(to_arch(m)) = m; from_arch checks the space name, the
 * count and each token against the decision's options. NAME is the `space` name, else the file
 * name without its extension (other characters than letters, digits and '_' become '_').
 *
 * Expansion (to_spec): the chosen statements, printed by spec_print (so the text is canonical
 * and parses back to itself). A statement's name becomes its node's name, with the iteration
 * numbers of the enclosing repeats appended (x_1, x_2, x_2_1); aliases and block names name
 * the node they refer to if it has no name yet.
 *
 * Validation. Each statement's op, attributes and input count are checked when the file is
 * read, for every value in every list, by the spec parser itself (so the rules cannot drift
 * from spec.c), and its message is reported at the right place in the space file. Errors read
 * "FILE: line L, column C: what". What depends on the input shape (channels vs groups, shapes
 * at an add) is reported by net_build for the members that have it.
 */
#include "space.h"
#include "../core/text.h"
#include "../net/net.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>

/* Constructor, called by space_open() for a path to an existing file (declared in spaces.h).
 * Returns a Space (free with space_free) or NULL with "FILE: line L, column C: ..." in *e. */
Space *user_space_open(const char *path, Err *e);

#define USER_MAX_COUNT 100    /* largest repeat count */
#define USER_MAX_NODES 20000  /* largest possible expansion, in nodes */
#define USER_MAX_NEST 16      /* nesting of repeat / choice blocks */

/* ------------------------------------------------------------------ syntax tree */
typedef struct {
    char text[64]; /* the source text of a number, or a name */
    double num;    /* value and count options */
    const struct UArg *var; /* non-NULL: text names this value choice (NAME = {...}), used as a number */
    Pos pos;
} UOpt;

typedef struct UArg {
    int is_ref;  /* 1: an input (a name, or a choice among names); 0: key=value(s) */
    char key[64];
    Pos pos;     /* the key, the name, or the '{' of a list */
    int nopt;    /* 1: fixed; >= 2: a decision */
    UOpt *opt;
} UArg;

typedef enum { UI_OP, UI_ALIAS, UI_VAR, UI_REPEAT, UI_CHOICE } UItemKind;

typedef struct UItem UItem;
typedef struct {
    UItem *items;
    int n, cap;
} UBlock;

struct UItem {
    UItemKind kind;
    Pos pos;                  /* the op, keyword or aliased ref */
    char name[NODE_NAME_MAX]; /* the name this statement defines, "" if none */
    int op;                   /* UI_OP */
    UArg *args;               /* UI_OP: in source order; UI_ALIAS: the one ref; UI_VAR: the values */
    int nargs;
    UArg counts;              /* UI_REPEAT */
    UBlock *body;             /* UI_REPEAT: one body; UI_CHOICE: the alternatives (n 0 = skip) */
    int nbody;
};

typedef enum { UD_VALUE, UD_NAMED, UD_REF, UD_REPEAT, UD_CHOICE } UDimKind;

typedef struct {
    UDimKind kind;
    char label[NODE_NAME_MAX + 1]; /* arch token prefix: the key, "NAME=", "i", "r" or "a" */
    const UArg *arg;  /* the options (NULL for a choice) */
} UDim;

typedef struct {
    char name[48];
    UBlock top;
    UDim dims[SPACE_MAX_DIMS];
} UserSpace;

static void block_free(UBlock *b);

static void arg_free(UArg *a) { free(a->opt); }

static void item_free(UItem *it) {
    for (int i = 0; i < it->nargs; i++) arg_free(&it->args[i]);
    free(it->args);
    arg_free(&it->counts);
    for (int i = 0; i < it->nbody; i++) block_free(&it->body[i]);
    free(it->body);
}

static void block_free(UBlock *b) {
    for (int i = 0; i < b->n; i++) item_free(&b->items[i]);
    free(b->items);
    memset(b, 0, sizeof *b);
}

static UItem *block_push(UBlock *b) {
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 8;
        b->items = xrealloc(b->items, (size_t)b->cap * sizeof *b->items);
    }
    UItem *it = &b->items[b->n++];
    memset(it, 0, sizeof *it);
    return it;
}

static UOpt *arg_push(UArg *a) {
    a->opt = xrealloc(a->opt, (size_t)(a->nopt + 1) * sizeof *a->opt);
    UOpt *o = &a->opt[a->nopt++];
    memset(o, 0, sizeof *o);
    return o;
}

/* A number as it appears in arch strings: no exponent, no trailing zeros (so never a '-'). */
static void fmt_num(char *buf, size_t n, double v) {
    if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, n, "%.0f", v);
        return;
    }
    snprintf(buf, n, "%.12f", v);
    char *p = buf + strlen(buf) - 1;
    while (p > buf && *p == '0') *p-- = 0;
    if (*p == '.') *p = 0;
}

/* ------------------------------------------------------------------ growable string */
/* ------------------------------------------------------------------ parser state */
typedef struct {
    Lexer L;
    const char *path;
    Err *e;
    int failed;
    /* Names visible at this point (a stack; bodies pop what they defined). */
    struct {
        char name[NODE_NAME_MAX];
        const UArg *var; /* a value choice's values; NULL for a node */
    } *names;
    int nnames, capnames;
    int nest;
} Parser;

/* Line breaks (not ';') are allowed inside parentheses and lists. */
static void skip_newlines(Parser *P) {
    while (P->L.tok.kind == T_SEP && P->L.tok.text[0] == '\n') lex_next(&P->L);
}

static TokKind peek_kind(const Parser *P) {
    Lexer L = P->L;
    lex_next(&L);
    return L.tok.kind;
}

static const char *tok_desc(const Tok *t, char *buf, size_t n) {
    switch (t->kind) {
    case T_END: return "the end of the file";
    case T_SEP: return t->text[0] == ';' ? "';'" : "a line break";
    default: snprintf(buf, n, "'%s'", t->text); return buf;
    }
}

/* Report an error at `at` (the first error wins); returns NASC_ERR. */
static int perr(Parser *P, Pos at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int perr(Parser *P, Pos at, const char *fmt, ...) {
    if (P->failed) return NASC_ERR;
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    err_set(P->e, "%s: line %d, column %d: %s", P->path, at.line, at.col, what);
    P->failed = 1;
    return NASC_ERR;
}

static int perr_found(Parser *P, const char *expected) {
    char b[80];
    return perr(P, P->L.tok.pos, "expected %s, found %s", expected, tok_desc(&P->L.tok, b, sizeof b));
}

/* ------------------------------------------------------------------ names and ops */
static int op_find(const char *name) {
    for (int i = 0; i < OP_COUNT; i++)
        if (strcmp(op_name((OpKind)i), name) == 0) return i;
    return -1;
}

static int is_keyword(const char *s) { return !strcmp(s, "space") || !strcmp(s, "repeat") || !strcmp(s, "choice"); }

/* Is `name` visible here? *var gets a value choice's values, NULL for a node. */
static int name_visible(const Parser *P, const char *name, const UArg **var) {
    if (var) *var = NULL;
    if (!strcmp(name, "_") || !strcmp(name, "input")) return 1;
    for (int i = P->nnames - 1; i >= 0; i--)
        if (!strcmp(P->names[i].name, name)) {
            if (var) *var = P->names[i].var;
            return 1;
        }
    return 0;
}

static void scope_add(Parser *P, const char *name, const UArg *var) {
    if (P->nnames == P->capnames) {
        P->capnames = P->capnames ? 2 * P->capnames : 16;
        P->names = xrealloc(P->names, (size_t)P->capnames * sizeof *P->names);
    }
    snprintf(P->names[P->nnames].name, NODE_NAME_MAX, "%s", name);
    P->names[P->nnames++].var = var;
}

static int check_defname(Parser *P, const Tok *t) {
    if (op_find(t->text) >= 0 || is_keyword(t->text) || !strcmp(t->text, "input") || !strcmp(t->text, "_"))
        return perr(P, t->pos, "'%s' is reserved and cannot name a node", t->text);
    if (strlen(t->text) >= NODE_NAME_MAX)
        return perr(P, t->pos, "name '%s' is too long (at most %d characters)", t->text, NODE_NAME_MAX - 1);
    if (name_visible(P, t->text, NULL)) return perr(P, t->pos, "name '%s' is already used", t->text);
    return NASC_OK;
}

/* Ops that take two or more inputs: given one input, they read `_` first (as in spec.c). */
static int op_min_inputs(int op) { return (op == OP_ADD || op == OP_CONCAT || op == OP_MUL) ? 2 : 1; }

/* ------------------------------------------------------------------ statement text
 * A statement is rendered as spec text with every input written as `input` and the chosen
 * option of every list, "op(input,k=v,...)": the spec parser checks it (when the file is
 * read) and turns it into an op and attributes (when a member is expanded). Segments map
 * columns of the text back to positions in the space file. */
typedef struct {
    size_t start, len;
    Pos pos;
    const char *ref; /* the name written in the file where the text has `input` */
} Seg;

static char *render_stmt(const UItem *it, const UOpt *const *vals, Seg *segs, int *nseg) {
    Str s = {0};
    int ns = 0;
    str_addf(&s, "%s", op_name((OpKind)it->op));
    if (segs) segs[ns++] = (Seg){0, s.len, it->pos, NULL};
    if (it->nargs) {
        str_addf(&s, "(");
        for (int i = 0; i < it->nargs; i++) {
            const UArg *a = &it->args[i];
            const UOpt *o = &a->opt[0];
            if (i) str_addf(&s, ",");
            size_t at = s.len;
            if (a->is_ref) {
                str_addf(&s, "input");
                if (segs) segs[ns++] = (Seg){at, s.len - at, o->pos, o->text};
            } else {
                str_addf(&s, "%s=", a->key);
                if (segs) segs[ns++] = (Seg){at, s.len - at, a->pos, NULL};
                at = s.len;
                str_addf(&s, "%s", vals[i]->text);
                /* where the value is written: in a list, or as a value choice's name */
                if (segs) segs[ns++] = (Seg){at, s.len - at, o->var ? o->pos : vals[i]->pos, NULL};
            }
        }
        str_addf(&s, ")");
    }
    if (nseg) *nseg = ns;
    return s.buf;
}

/* Check one rendering of a statement with the spec parser; map its error into the file. */
static int probe_stmt(Parser *P, const UItem *it, const UOpt *const *vals) {
    Seg *segs = xmalloc((size_t)(2 * it->nargs + 1) * sizeof *segs);
    int nseg;
    char *text = render_stmt(it, vals, segs, &nseg);
    Spec sp;
    Err e2 = {{0}};
    int rc = spec_parse(&sp, text, 16, 1, &e2);
    if (rc == NASC_OK) {
        spec_free(&sp);
    } else {
        int line = 0, col = 0, off = 0;
        const Seg *at = &segs[0];
        const char *what = e2.msg;
        if (sscanf(e2.msg, "spec: line %d, column %d: %n", &line, &col, &off) == 2 && off > 0) {
            what = e2.msg + off;
            for (int i = 0; i < nseg; i++)
                if ((size_t)(col - 1) >= segs[i].start) at = &segs[i]; /* the last segment starting before */
        }
        char msg[sizeof e2.msg + 64];
        const char *q = at->ref ? strstr(what, "'input'") : NULL;
        if (q) snprintf(msg, sizeof msg, "%.*s'%s'%s", (int)(q - what), what, at->ref, q + 7);
        else snprintf(msg, sizeof msg, "%s", what);
        perr(P, at->pos, "%s", msg);
    }
    free(text);
    free(segs);
    return rc;
}

/* The values an attribute can take: its own list, or the list of the value choice it names. */
static const UArg *attr_values(const Parser *P, const UArg *a) {
    return a->opt[0].var ? a->opt[0].var : a;
}

/* Every value of every list, the others at their first value. */
static int probe_all(Parser *P, const UItem *it) {
    const UOpt **vals = xcalloc((size_t)it->nargs + 1, sizeof *vals);
    for (int i = 0; i < it->nargs; i++)
        if (!it->args[i].is_ref) vals[i] = &attr_values(P, &it->args[i])->opt[0];
    int rc = probe_stmt(P, it, vals);
    for (int i = 0; i < it->nargs && rc == NASC_OK; i++) {
        if (it->args[i].is_ref) continue;
        const UArg *v = attr_values(P, &it->args[i]);
        for (int j = 1; j < v->nopt && rc == NASC_OK; j++) {
            vals[i] = &v->opt[j];
            rc = probe_stmt(P, it, vals);
        }
        vals[i] = &v->opt[0];
    }
    free(vals);
    return rc;
}

/* ------------------------------------------------------------------ parser */
static int parse_block(Parser *P, UBlock *b, int top);

/* One input name (must be visible) appended to a. */
static int parse_ref_name(Parser *P, UArg *a) {
    Tok t = P->L.tok;
    if (t.kind != T_NAME) return perr_found(P, "an input name");
    const UArg *var;
    if (!name_visible(P, t.text, &var))
        return perr(P, t.pos, "unknown input '%s' (names must be defined before use)", t.text);
    if (var) return perr(P, t.pos, "'%s' is a value choice, not an input", t.text);
    for (int i = 0; i < a->nopt; i++)
        if (!strcmp(a->opt[i].text, t.text)) return perr(P, t.pos, "input '%s' is listed twice", t.text);
    UOpt *o = arg_push(a);
    snprintf(o->text, sizeof o->text, "%s", t.text);
    o->pos = t.pos;
    lex_next(&P->L);
    return NASC_OK;
}

/* REF or '{' REF { ',' REF } '}' */
static int parse_ref(Parser *P, UArg *a) {
    a->is_ref = 1;
    a->pos = P->L.tok.pos;
    if (P->L.tok.kind != T_LB) return parse_ref_name(P, a);
    lex_next(&P->L);
    skip_newlines(P);
    if (P->L.tok.kind == T_RB) return perr(P, a->pos, "empty list");
    for (;;) {
        if (parse_ref_name(P, a) != NASC_OK) return NASC_ERR;
        skip_newlines(P);
        if (P->L.tok.kind == T_COMMA) {
            lex_next(&P->L);
            skip_newlines(P);
            continue;
        }
        if (P->L.tok.kind == T_RB) break;
        return perr_found(P, "',' or '}' in the input list");
    }
    lex_next(&P->L);
    return NASC_OK;
}

static int check_count(Parser *P, Pos at, double v, const char *text, const char *var) {
    char via[NODE_NAME_MAX + 48] = "";
    if (var) snprintf(via, sizeof via, " (a value of '%s')", var);
    if (v != floor(v) || v < 1)
        return perr(P, at, "a repeat count must be a positive whole number, got %s%s", text, via);
    if (v > USER_MAX_COUNT) return perr(P, at, "a repeat count must be at most %d, got %s%s", USER_MAX_COUNT, text, via);
    return NASC_OK;
}

/* One number appended to a; repeat counts must be whole numbers in 1..USER_MAX_COUNT. Outside
 * a list, the name of a value choice stands for its value. */
static int parse_number(Parser *P, UArg *a, int is_count, int in_list) {
    Tok t = P->L.tok;
    if (t.kind == T_NAME && !in_list) {
        const UArg *var;
        if (!name_visible(P, t.text, &var) || !strcmp(t.text, "_") || !strcmp(t.text, "input"))
            return perr(P, t.pos, "unknown value '%s' (a value choice NAME = {...} must be defined before use)",
                        t.text);
        if (!var) return perr(P, t.pos, "'%s' names a node, not a value", t.text);
        for (int i = 0; i < var->nopt && is_count; i++)
            if (check_count(P, t.pos, var->opt[i].num, var->opt[i].text, t.text) != NASC_OK) return NASC_ERR;
        UOpt *o = arg_push(a);
        snprintf(o->text, sizeof o->text, "%s", t.text);
        o->var = var;
        o->pos = t.pos;
        lex_next(&P->L);
        return NASC_OK;
    }
    if (t.kind != T_NUM) {
        if (is_count) return perr_found(P, in_list ? "a repeat count" : "a repeat count or a list of counts {1,2,3}");
        return perr_found(P, in_list ? "a number in the value list" : "a number or a value list {a,b,...}");
    }
    if (is_count && check_count(P, t.pos, t.num, t.text, NULL) != NASC_OK) return NASC_ERR;
    char canon[64], other[64];
    fmt_num(canon, sizeof canon, t.num);
    for (int i = 0; i < a->nopt; i++) {
        fmt_num(other, sizeof other, a->opt[i].num);
        if (!strcmp(canon, other)) return perr(P, t.pos, "value %s is listed twice", t.text);
    }
    UOpt *o = arg_push(a);
    snprintf(o->text, sizeof o->text, "%s", t.text);
    o->num = t.num;
    o->pos = t.pos;
    lex_next(&P->L);
    return NASC_OK;
}

/* NUMBER or '{' NUMBER { ',' NUMBER } '}' */
static int parse_values(Parser *P, UArg *a, int is_count) {
    if (is_count) a->pos = P->L.tok.pos;
    if (P->L.tok.kind != T_LB) return parse_number(P, a, is_count, 0);
    Pos lb = P->L.tok.pos;
    lex_next(&P->L);
    skip_newlines(P);
    if (P->L.tok.kind == T_RB) return perr(P, lb, "empty value list");
    for (;;) {
        if (parse_number(P, a, is_count, 1) != NASC_OK) return NASC_ERR;
        skip_newlines(P);
        if (P->L.tok.kind == T_COMMA) {
            lex_next(&P->L);
            skip_newlines(P);
            continue;
        }
        if (P->L.tok.kind == T_RB) break;
        return perr_found(P, "',' or '}' in the value list");
    }
    lex_next(&P->L);
    return NASC_OK;
}

/* OP [ '(' args ')' ], the op token current. */
static int parse_op(Parser *P, UItem *it) {
    it->kind = UI_OP;
    it->op = op_find(P->L.tok.text);
    it->pos = P->L.tok.pos;
    lex_next(&P->L);
    if (P->L.tok.kind == T_LP) {
        lex_next(&P->L);
        skip_newlines(P);
        if (P->L.tok.kind != T_RP) {
            for (;;) {
                it->args = xrealloc(it->args, (size_t)(it->nargs + 1) * sizeof *it->args);
                UArg *a = &it->args[it->nargs++];
                memset(a, 0, sizeof *a);
                Tok t = P->L.tok;
                if (t.kind == T_NAME && peek_kind(P) == T_EQ) {
                    snprintf(a->key, sizeof a->key, "%s", t.text);
                    lex_next(&P->L);
                    lex_next(&P->L);
                    a->pos = t.pos;
                    if (parse_values(P, a, 0) != NASC_OK) return NASC_ERR;
                } else if (t.kind == T_NAME || t.kind == T_LB) {
                    if (parse_ref(P, a) != NASC_OK) return NASC_ERR;
                } else {
                    return perr_found(P, "an input name or key=value");
                }
                skip_newlines(P);
                if (P->L.tok.kind == T_COMMA) {
                    lex_next(&P->L);
                    skip_newlines(P);
                    continue;
                }
                if (P->L.tok.kind == T_RP) break;
                return perr_found(P, "',' or ')'");
            }
        }
        lex_next(&P->L);
    }
    return probe_all(P, it);
}

/* '{' block '}' for a repeat body; the '{' current. */
static int parse_body(Parser *P, UBlock *b, const char *what, Pos kw) {
    if (P->L.tok.kind != T_LB) {
        char exp[64];
        snprintf(exp, sizeof exp, "'{' to open the %s", what);
        return perr_found(P, exp);
    }
    Pos lb = P->L.tok.pos;
    lex_next(&P->L);
    int mark = P->nnames;
    if (parse_block(P, b, 0) != NASC_OK) return NASC_ERR;
    P->nnames = mark;
    if (P->L.tok.kind == T_END) return perr(P, lb, "this '{' is never closed (missing '}')");
    if (P->L.tok.kind == T_BAR) return perr(P, P->L.tok.pos, "'|' outside a choice");
    if (b->n == 0) return perr(P, kw, "empty %s", what);
    lex_next(&P->L); /* past '}' */
    return NASC_OK;
}

static int parse_repeat(Parser *P, UItem *it) {
    it->kind = UI_REPEAT;
    it->pos = P->L.tok.pos;
    lex_next(&P->L);
    if (parse_values(P, &it->counts, 1) != NASC_OK) return NASC_ERR;
    it->body = xcalloc(1, sizeof *it->body);
    it->nbody = 1;
    return parse_body(P, it->body, "repeat body", it->pos);
}

static int parse_choice(Parser *P, UItem *it) {
    it->kind = UI_CHOICE;
    it->pos = P->L.tok.pos;
    lex_next(&P->L);
    if (P->L.tok.kind != T_LB) return perr_found(P, "'{' to open the choice");
    Pos lb = P->L.tok.pos;
    lex_next(&P->L);
    for (;;) {
        it->body = xrealloc(it->body, (size_t)(it->nbody + 1) * sizeof *it->body);
        UBlock *b = &it->body[it->nbody++];
        memset(b, 0, sizeof *b);
        int mark = P->nnames;
        if (parse_block(P, b, 0) != NASC_OK) return NASC_ERR;
        P->nnames = mark;
        if (P->L.tok.kind == T_END) return perr(P, lb, "this '{' is never closed (missing '}')");
        if (b->n == 0) {
            if (it->nbody == 1 && P->L.tok.kind == T_RB) return perr(P, it->pos, "empty choice");
            return perr(P, P->L.tok.pos, "empty alternative in a choice (write `id` for a skip)");
        }
        /* `id` alone is a skip. */
        const UItem *f = &b->items[0];
        if (b->n == 1 && f->kind == UI_OP && f->op == OP_ID && f->nargs == 0 && !f->name[0]) block_free(b);
        TokKind k = P->L.tok.kind;
        lex_next(&P->L);
        if (k == T_RB) break;
    }
    return NASC_OK;
}

/* One statement; the current token is its first. */
static int parse_item(Parser *P, UBlock *b) {
    if (P->L.tok.kind != T_NAME) return perr_found(P, "a statement");
    if (++P->nest > USER_MAX_NEST) return perr(P, P->L.tok.pos, "blocks nested too deeply (at most %d)", USER_MAX_NEST);
    Tok def = {0};
    int has_def = 0;
    if (peek_kind(P) == T_EQ) {
        def = P->L.tok;
        has_def = 1;
        if (check_defname(P, &def) != NASC_OK) return NASC_ERR;
        lex_next(&P->L);
        lex_next(&P->L);
    }
    UItem *it = block_push(b);
    if (has_def) snprintf(it->name, sizeof it->name, "%s", def.text);
    Tok h = P->L.tok;
    int rc;
    const UArg *var = NULL;
    if (has_def && (h.kind == T_NUM || (h.kind == T_LB && peek_kind(P) == T_NUM))) {
        it->kind = UI_VAR;
        it->pos = def.pos;
        it->args = xcalloc(1, sizeof *it->args);
        it->nargs = 1;
        snprintf(it->args->key, sizeof it->args->key, "%s", def.text);
        rc = parse_values(P, it->args, 0);
        it->args->pos = def.pos;
        var = it->args;
    } else if (h.kind == T_LB && has_def) {
        it->kind = UI_ALIAS;
        it->pos = h.pos;
        it->args = xcalloc(1, sizeof *it->args);
        it->nargs = 1;
        rc = parse_ref(P, it->args);
    } else if (h.kind != T_NAME) {
        rc = perr_found(P, has_def ? "an op, a block or a name" : "a statement");
    } else if (!strcmp(h.text, "repeat")) {
        rc = parse_repeat(P, it);
    } else if (!strcmp(h.text, "choice")) {
        rc = parse_choice(P, it);
    } else if (op_find(h.text) >= 0) {
        rc = parse_op(P, it);
    } else if (has_def && name_visible(P, h.text, &var) && var) {
        rc = perr(P, h.pos, "'%s' is a value choice; use it directly rather than through another name", h.text);
    } else if (has_def && name_visible(P, h.text, NULL)) {
        it->kind = UI_ALIAS;
        it->pos = h.pos;
        it->args = xcalloc(1, sizeof *it->args);
        it->nargs = 1;
        rc = parse_ref(P, it->args);
    } else if (has_def) {
        rc = perr(P, h.pos, "'%s' is neither an op nor a name defined before (names must be defined before use)",
                  h.text);
    } else if (!strcmp(h.text, "space")) {
        rc = perr(P, h.pos, "'space NAME' must be the first statement of the file");
    } else {
        rc = perr(P, h.pos, "unknown op '%s'", h.text);
    }
    P->nest--;
    if (rc != NASC_OK) return rc;
    if (has_def) scope_add(P, def.text, var);
    return NASC_OK;
}

/* Statements up to the end of the file (top) or to a '}' or '|' (inside a block), which is
 * left current. */
static int parse_block(Parser *P, UBlock *b, int top) {
    for (;;) {
        while (P->L.tok.kind == T_SEP) lex_next(&P->L);
        TokKind k = P->L.tok.kind;
        if (k == T_END) return NASC_OK;
        if (k == T_RB || k == T_BAR) {
            if (top) return perr(P, P->L.tok.pos, k == T_RB ? "unmatched '}'" : "'|' outside a choice");
            return NASC_OK;
        }
        if (parse_item(P, b) != NASC_OK) return NASC_ERR;
        k = P->L.tok.kind;
        if (k != T_SEP && k != T_END && k != T_RB && k != T_BAR)
            return perr_found(P, "';' or a new line after a statement");
    }
}

/* ------------------------------------------------------------------ the walker
 * One traversal serves every purpose, so that the numbering of decisions cannot differ
 * between them: laying out the decisions (layout), marking active ones (active), and
 * expanding a member into a spec (spec). A body is walked whether or not it is live (chosen),
 * to advance the decision counter; only live statements bind names and add nodes. A value
 * choice's decision is active when a live statement uses its value. */
typedef struct {
    const char *name;
    int node;         /* a node's index (-1: the network input) */
    const UArg *var;  /* or a value choice: its values, the chosen one, its decision (-1: none) */
    int pick, slot;
} Bind;

typedef struct {
    UserSpace *u;
    const int *m;      /* the member (NULL when laying out) */
    int *active;       /* NULL or ndims flags to set */
    Space *layout;     /* NULL or the space whose card/dim_name to fill */
    Spec *spec;        /* NULL or the spec to append to */
    Err *e;
    int failed;
    int slot;          /* the next decision's number */
    Pos over;          /* layout: where the decision beyond SPACE_MAX_DIMS is */
    Bind *env;
    int nenv, capenv;
    int prev;          /* `_`: a node index, -1 for the network input */
    int iter[USER_MAX_NEST + 1];
    int depth;         /* enclosing repeat iterations (1-based numbers in iter[]) */
} Walk;

static int walk_decide(Walk *W, UDimKind kind, const UArg *arg, int card, Pos pos, const char *what, int live) {
    int s = W->slot++;
    if (W->layout) {
        if (s == SPACE_MAX_DIMS) W->over = pos;
        if (s >= SPACE_MAX_DIMS) return 0;
        W->layout->card[s] = card;
        char sfx[64] = "";
        size_t n = 0;
        for (int i = 0; i < W->depth && n < sizeof sfx - 8; i++)
            n += (size_t)snprintf(sfx + n, sizeof sfx - n, "%s%d", i ? "," : " [", W->iter[i]);
        if (W->depth) snprintf(sfx + n, sizeof sfx - n, "]");
        snprintf(W->layout->dim_name[s], sizeof W->layout->dim_name[s], "line %d col %d %s%s", pos.line, pos.col, what,
                 sfx);
        UDim *d = &W->u->dims[s];
        d->kind = kind;
        d->arg = arg;
        snprintf(d->label, sizeof d->label, "%s", what);
        if (kind == UD_NAMED) snprintf(d->label, sizeof d->label, "%.*s=", NODE_NAME_MAX - 1, what);
        if (kind == UD_REF) snprintf(d->label, sizeof d->label, "i");
        if (kind == UD_REPEAT) snprintf(d->label, sizeof d->label, "r");
        if (kind == UD_CHOICE) snprintf(d->label, sizeof d->label, "a");
        return 0;
    }
    if (!W->m) return 0;
    if (live && W->active) W->active[s] = 1;
    return W->m[s];
}

static int walk_fail(Walk *W, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int walk_fail(Walk *W, const char *fmt, ...) {
    if (!W->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(W->e->msg, sizeof W->e->msg, fmt, ap);
        va_end(ap);
    }
    W->failed = 1;
    return NASC_ERR;
}

static void walk_bind(Walk *W, Bind b) {
    if (!b.name[0]) return;
    if (W->nenv == W->capenv) {
        W->capenv = W->capenv ? 2 * W->capenv : 32;
        W->env = xrealloc(W->env, (size_t)W->capenv * sizeof *W->env);
    }
    W->env[W->nenv++] = b;
}

static const Bind *walk_find(const Walk *W, const char *name) {
    for (int i = W->nenv - 1; i >= 0; i--)
        if (!strcmp(W->env[i].name, name)) return &W->env[i];
    return NULL;
}

/* The node a live reference names. */
static int walk_node(Walk *W, const char *name, int *node) {
    if (!strcmp(name, "_")) return *node = W->prev, NASC_OK;
    if (!strcmp(name, "input")) return *node = -1, NASC_OK;
    const Bind *b = walk_find(W, name);
    if (b && !b->var) return *node = b->node, NASC_OK;
    return walk_fail(W, "user space %s: name '%s' has no node here", W->u->name, name);
}

/* The option of a live number (its own, or the value choice's it names); marks that
 * value choice's decision active. */
static const UOpt *walk_value(Walk *W, const UArg *a, int pick) {
    if (!a->opt[0].var) return &a->opt[pick];
    const Bind *b = walk_find(W, a->opt[0].text);
    NASC_ASSERT(b && b->var == a->opt[0].var); /* the parser checked the scope */
    if (b->slot >= 0 && W->active) W->active[b->slot] = 1;
    return &b->var->opt[b->pick];
}

/* Give node i the name `name` with the iteration numbers of the enclosing repeats (x_2_1),
 * unless it has one, is the input, or the result is too long or already taken (spec_print
 * then generates a name where one is needed). */
static void walk_name_node(Walk *W, int node, const char *name) {
    if (node < 0 || !name[0] || W->spec->nodes[node].name[0]) return;
    char full[NODE_NAME_MAX + 64];
    size_t n = (size_t)snprintf(full, sizeof full, "%s", name);
    for (int i = 0; i < W->depth && n < sizeof full; i++) n += (size_t)snprintf(full + n, sizeof full - n, "_%d", W->iter[i]);
    if (strlen(full) >= NODE_NAME_MAX) return;
    for (int i = 0; i < W->spec->n; i++)
        if (!strcmp(W->spec->nodes[i].name, full)) return;
    snprintf(W->spec->nodes[node].name, NODE_NAME_MAX, "%s", full);
}

/* Append the node of a live op statement; vals[i] is attribute i's value. */
static int walk_emit(Walk *W, const UItem *it, const int *pick, const UOpt *const *vals) {
    char *text = render_stmt(it, vals, NULL, NULL);
    Spec one;
    Err e2;
    if (spec_parse(&one, text, 16, 1, &e2) != NASC_OK) {
        walk_fail(W, "user space %s: line %d, column %d: %s", W->u->name, it->pos.line, it->pos.col, e2.msg);
        free(text);
        return NASC_ERR;
    }
    free(text);
    int in[NODE_MAX_IN + 1], nin = 0;
    for (int i = 0; i < it->nargs && nin < NODE_MAX_IN; i++) {
        const UArg *a = &it->args[i];
        if (!a->is_ref) continue;
        if (walk_node(W, a->opt[pick[i]].text, &in[nin]) != NASC_OK) break;
        nin++;
    }
    if (W->failed) {
        spec_free(&one);
        return NASC_ERR;
    }
    int min_in = op_min_inputs(it->op);
    if (nin == 0 || (nin < min_in && nin + 1 >= min_in)) {
        memmove(in + 1, in, (size_t)nin * sizeof *in);
        in[0] = W->prev;
        nin++;
    }
    NASC_ASSERT(nin <= NODE_MAX_IN && one.n == 1);
    W->prev = spec_add(W->spec, one.nodes[0].op, one.nodes[0].a, in, nin, NULL);
    walk_name_node(W, W->prev, it->name);
    spec_free(&one);
    return NASC_OK;
}

static void walk_block(Walk *W, const UBlock *b, int live);

static void walk_op(Walk *W, const UItem *it, int live) {
    int *pick = xcalloc((size_t)it->nargs + 1, sizeof *pick);
    const UOpt **vals = xcalloc((size_t)it->nargs + 1, sizeof *vals);
    for (int i = 0; i < it->nargs; i++) {
        const UArg *a = &it->args[i];
        if (a->nopt > 1)
            pick[i] = walk_decide(W, a->is_ref ? UD_REF : UD_VALUE, a, a->nopt, a->pos, a->is_ref ? "input" : a->key,
                                  live);
        if (live && !a->is_ref) vals[i] = walk_value(W, a, pick[i]);
    }
    if (live && W->spec && walk_emit(W, it, pick, vals) == NASC_OK)
        walk_bind(W, (Bind){.name = it->name, .node = W->prev});
    free(pick);
    free(vals);
}

static void walk_item(Walk *W, const UItem *it, int live) {
    switch (it->kind) {
    case UI_OP: walk_op(W, it, live); break;
    case UI_ALIAS: {
        const UArg *a = &it->args[0];
        int pick = a->nopt > 1 ? walk_decide(W, UD_REF, a, a->nopt, a->pos, "input", live) : 0;
        if (live && W->spec && walk_node(W, a->opt[pick].text, &W->prev) == NASC_OK) {
            walk_name_node(W, W->prev, it->name);
            walk_bind(W, (Bind){.name = it->name, .node = W->prev});
        }
        break;
    }
    case UI_VAR: {
        /* The decision is made here but is active only where the value is used. */
        const UArg *a = &it->args[0];
        int slot = a->nopt > 1 ? W->slot : -1;
        int pick = a->nopt > 1 ? walk_decide(W, UD_NAMED, a, a->nopt, a->pos, a->key, 0) : 0;
        if (live) walk_bind(W, (Bind){.name = it->name, .node = -1, .var = a, .pick = pick, .slot = slot});
        break;
    }
    case UI_REPEAT: {
        const UArg *c = &it->counts;
        int ci = c->nopt > 1 ? walk_decide(W, UD_REPEAT, c, c->nopt, c->pos, "repeat", live) : 0;
        int count = live ? (int)walk_value(W, c, ci)->num : 0, most = 0;
        const UArg *opts = c->opt[0].var ? c->opt[0].var : c;
        for (int i = 0; i < opts->nopt; i++) most = NASC_MAX(most, (int)opts->opt[i].num);
        for (int r = 0; r < most && !W->failed; r++) {
            int mark = W->nenv;
            W->iter[W->depth++] = r + 1;
            walk_block(W, &it->body[0], live && r < count);
            W->depth--;
            W->nenv = mark;
        }
        if (live && W->spec) {
            walk_name_node(W, W->prev, it->name);
            walk_bind(W, (Bind){.name = it->name, .node = W->prev});
        }
        break;
    }
    case UI_CHOICE: {
        int a = it->nbody > 1 ? walk_decide(W, UD_CHOICE, NULL, it->nbody, it->pos, "choice", live) : 0;
        for (int k = 0; k < it->nbody && !W->failed; k++) {
            int mark = W->nenv;
            walk_block(W, &it->body[k], live && k == a);
            W->nenv = mark;
        }
        if (live && W->spec) {
            walk_name_node(W, W->prev, it->name);
            walk_bind(W, (Bind){.name = it->name, .node = W->prev});
        }
        break;
    }
    }
}

static void walk_block(Walk *W, const UBlock *b, int live) {
    for (int i = 0; i < b->n && !W->failed; i++) walk_item(W, &b->items[i], live);
}

/* An upper bound of the number of nodes any member expands to. */
static double block_bound(const UBlock *b) {
    double n = 0;
    for (int i = 0; i < b->n; i++) {
        const UItem *it = &b->items[i];
        if (it->kind == UI_OP) n += 1;
        else if (it->kind == UI_REPEAT) {
            const UArg *c = it->counts.opt[0].var ? it->counts.opt[0].var : &it->counts;
            double most = 0;
            for (int j = 0; j < c->nopt; j++) most = NASC_MAX(most, c->opt[j].num);
            n += most * block_bound(&it->body[0]);
        } else if (it->kind == UI_CHOICE) {
            double most = 0;
            for (int j = 0; j < it->nbody; j++) most = NASC_MAX(most, block_bound(&it->body[j]));
            n += most;
        }
    }
    return n;
}

/* ------------------------------------------------------------------ SpaceOps */
static UserSpace *uspace(const Space *s) { return (UserSpace *)s->impl; }

static void user_active(const Space *s, const int *m, int *active) {
    for (int d = 0; d < s->ndims; d++) {
        NASC_ASSERT(m[d] >= 0 && m[d] < s->card[d]);
        active[d] = 0;
    }
    Walk W = {.u = uspace(s), .m = m, .active = active, .prev = -1};
    walk_block(&W, &W.u->top, 1);
    free(W.env);
    NASC_ASSERT(W.slot == s->ndims && !W.failed);
}

static void user_canonical(const Space *s, const int *m, int *out) {
    int act[SPACE_MAX_DIMS];
    user_active(s, m, act);
    for (int d = 0; d < s->ndims; d++) out[d] = act[d] ? m[d] : 0;
}

static char *user_to_spec(const Space *s, const int *m, Err *e) {
    UserSpace *u = uspace(s);
    for (int d = 0; d < s->ndims; d++)
        if (m[d] < 0 || m[d] >= s->card[d]) {
            err_set(e, "user space %s: decision %d (%s) is %d, must be in 0..%d", u->name, d + 1, s->dim_name[d], m[d],
                    s->card[d] - 1);
            return NULL;
        }
    Spec spec = {0};
    Walk W = {.u = u, .m = m, .spec = &spec, .e = e, .prev = -1};
    walk_block(&W, &u->top, 1);
    free(W.env);
    if (!W.failed && spec.n == 0) walk_fail(&W, "user space %s: this member expands to no statements", u->name);
    if (W.failed) {
        spec_free(&spec);
        return NULL;
    }
    NASC_ASSERT(W.slot == s->ndims);
    if (W.prev != spec.n - 1) { /* the output is `_`, which is not the last node */
        int in = W.prev;
        spec_add(&spec, OP_ID, op_default_attr(OP_ID), &in, 1, NULL);
    }
    char *text = spec_print(&spec);
    spec_free(&spec);
    return text;
}

static void dim_token(const UDim *d, int v, char *buf, size_t n) {
    char num[64];
    if (d->kind == UD_VALUE || d->kind == UD_NAMED || d->kind == UD_REPEAT) fmt_num(num, sizeof num, d->arg->opt[v].num);
    else snprintf(num, sizeof num, "%d", v);
    snprintf(buf, n, "%s%s", d->label, num);
}

static char *user_to_arch(const Space *s, const int *m) {
    UserSpace *u = uspace(s);
    Str out = {0};
    str_addf(&out, "user:%s:", u->name);
    for (int d = 0; d < s->ndims; d++) {
        NASC_ASSERT(m[d] >= 0 && m[d] < s->card[d]);
        char tok[96];
        dim_token(&u->dims[d], m[d], tok, sizeof tok);
        str_addf(&out, "%s%s", d ? "-" : "", tok);
    }
    return out.buf;
}

static int user_from_arch(const Space *s, const char *arch, int *m, Err *e) {
    UserSpace *u = uspace(s);
    size_t nl = strlen(u->name);
    if (strncmp(arch, "user:", 5) != 0) {
        err_set(e, "arch '%.120s' is not from a user-defined space (expected 'user:%s:...')", arch, u->name);
        return NASC_ERR;
    }
    const char *p = arch + 5, *colon = strchr(p, ':');
    if (!colon) {
        err_set(e, "arch '%.120s': expected 'user:NAME:DECISIONS'", arch);
        return NASC_ERR;
    }
    if ((size_t)(colon - p) != nl || strncmp(p, u->name, nl) != 0) {
        err_set(e, "arch '%.120s' is for space '%.*s', but this space is '%s'", arch, (int)NASC_MIN(colon - p, 60), p,
                u->name);
        return NASC_ERR;
    }
    p = colon + 1;
    int ntok = *p ? 1 : 0;
    for (const char *q = p; *q; q++) ntok += (*q == '-');
    if (ntok != s->ndims) {
        err_set(e, "arch '%.120s' has %d decisions, but space '%s' has %d", arch, ntok, u->name, s->ndims);
        return NASC_ERR;
    }
    for (int d = 0; d < s->ndims; d++) {
        const char *end = strchr(p, '-');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char tok[96], want[96];
        snprintf(tok, sizeof tok, "%.*s", (int)NASC_MIN(len, 90), p);
        int found = -1;
        for (int v = 0; v < s->card[d] && found < 0; v++) {
            dim_token(&u->dims[d], v, want, sizeof want);
            if (!strcmp(tok, want)) found = v;
        }
        const UDim *dm = &u->dims[d];
        size_t ll = strlen(dm->label);
        if (found < 0 && (dm->kind == UD_VALUE || dm->kind == UD_NAMED) && !strncmp(tok, dm->label, ll) && tok[ll]) {
            /* The same value written differently ("c16.0"). */
            char *ep;
            double v = strtod(tok + ll, &ep);
            for (int k = 0; *ep == 0 && k < s->card[d] && found < 0; k++)
                if (v == dm->arg->opt[k].num) found = k;
        }
        if (found < 0) {
            Str opts = {0};
            for (int v = 0; v < s->card[d]; v++) {
                dim_token(dm, v, want, sizeof want);
                str_addf(&opts, "%s%s", v ? ", " : "", want);
            }
            err_set(e, "arch '%.100s': decision %d (%s) is '%s', expected one of %.150s", arch, d + 1, s->dim_name[d], tok,
                    opts.buf);
            free(opts.buf);
            return NASC_ERR;
        }
        m[d] = found;
        p += len + (end ? 1 : 0);
    }
    return NASC_OK;
}

/* Frees the space itself too (space_free calls only this). */
static void user_destroy(Space *s) {
    UserSpace *u = uspace(s);
    if (u) block_free(&u->top);
    free(u);
    free(s);
}

static const SpaceOps user_ops = {
    .name = "user",
    .canonical = user_canonical,
    .to_spec = user_to_spec,
    .to_arch = user_to_arch,
    .from_arch = user_from_arch,
    .active = user_active,
    .destroy = user_destroy,
};

/* ------------------------------------------------------------------ open */
static void default_name(char *out, size_t n, const char *path) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t len = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot != base) len = (size_t)(dot - base);
    size_t k = 0;
    for (size_t i = 0; i < len && k + 1 < n; i++) out[k++] = (isalnum((unsigned char)base[i]) || base[i] == '_') ? base[i] : '_';
    out[k] = 0;
    if (!k) snprintf(out, n, "user");
}

Space *user_space_open(const char *path, Err *e) {
    size_t size;
    char *raw = file_read_all(path, &size, e); /* not NUL-terminated */
    if (!raw) return NULL;
    if (memchr(raw, 0, size)) {
        err_set(e, "%s: not a text file (it contains a zero byte)", path);
        free(raw);
        return NULL;
    }
    char *text = xmalloc(size + 1);
    memcpy(text, raw, size);
    text[size] = 0;
    free(raw);
    UserSpace *u = xcalloc(1, sizeof *u);
    Parser P = {.path = path, .e = e};
    lex_init(&P.L, text, e);
    while (P.L.tok.kind == T_SEP) lex_next(&P.L);
    default_name(u->name, sizeof u->name, path);
    if (P.L.tok.kind == T_NAME && !strcmp(P.L.tok.text, "space") && peek_kind(&P) == T_NAME) {
        lex_next(&P.L);
        if (strlen(P.L.tok.text) >= sizeof u->name) {
            perr(&P, P.L.tok.pos, "space name '%s' is too long (at most %d characters)", P.L.tok.text,
                 (int)sizeof u->name - 1);
        } else {
            snprintf(u->name, sizeof u->name, "%s", P.L.tok.text);
            lex_next(&P.L);
            if (P.L.tok.kind != T_SEP && P.L.tok.kind != T_END) perr_found(&P, "a new line after 'space NAME'");
        }
    }
    if (!P.failed) parse_block(&P, &u->top, 1);
    if (!P.failed && u->top.n == 0) perr(&P, P.L.tok.pos, "the space has no statements");
    Space *s = NULL;
    if (!P.failed) {
        s = xcalloc(1, sizeof *s);
        s->ops = &user_ops;
        s->impl = u;
        Walk W = {.u = u, .layout = s, .prev = -1};
        walk_block(&W, &u->top, 0);
        s->ndims = NASC_MIN(W.slot, SPACE_MAX_DIMS);
        if (W.slot > SPACE_MAX_DIMS)
            perr(&P, W.over, "the space has %d decisions, more than %d (a repeat copies its body's decisions once per "
                             "possible iteration)",
                 W.slot, SPACE_MAX_DIMS);
        else if (block_bound(&u->top) > USER_MAX_NODES)
            perr(&P, u->top.items[0].pos, "a member can expand to more than %d statements", USER_MAX_NODES);
    }
    free(P.names);
    free(text);
    if (P.failed) {
        block_free(&u->top);
        free(u);
        free(s);
        return NULL;
    }
    return s;
}
