/* spec.c: the text form of a network, parsed into a Spec (a node list) and printed back.
 *
 * Grammar (whitespace between tokens is free; '#' comments run to the end of the line):
 *     spec  := stmt { (';' | newline) stmt }         empty statements are allowed
 *     stmt  := [ NAME '=' ] OP [ '(' [ arg { ',' arg } ] ')' ]
 *     arg   := REF | KEY '=' NUMBER
 *     REF   := NAME | 'input' | '_'                  '_' = the previous statement's output
 * A call without REF arguments reads the previous statement's output (the network input for
 * the first statement). A call to a two-input op given one REF reads `_` first, so
 * `add(a)` means `add(_, a)`. A text starting with "nb201:" is an NB201 cell (nb201.c).
 *
 * Printing is canonical: one statement per node; a node's inputs are written only when they
 * are not just the previous node; names are kept, and generated (n<index>) for unnamed
 * nodes that a later node refers to; attributes equal to the op's defaults are left out.
 */
#include "net.h"

#include "../core/text.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>

/* ------------------------------------------------------------------ op metadata */
typedef struct {
    const char *name;
    int min_in, max_in;
    const char *keys; /* attribute keys it accepts, space separated; "c!" = required */
} OpSyntax;

static const OpSyntax op_syntax[OP_COUNT] = {
    [OP_CONV] = {"conv", 1, 1, "c! k! s p d g bias"},
    [OP_BN] = {"bn", 1, 1, ""},
    [OP_RELU] = {"relu", 1, 1, ""},
    [OP_RELU6] = {"relu6", 1, 1, ""},
    [OP_HSWISH] = {"hswish", 1, 1, ""},
    [OP_SIGMOID] = {"sigmoid", 1, 1, ""},
    [OP_HSIGMOID] = {"hsigmoid", 1, 1, ""},
    [OP_MAXPOOL] = {"maxpool", 1, 1, "k! s p"},
    [OP_AVGPOOL] = {"avgpool", 1, 1, "k! s p cip"},
    [OP_GAP] = {"gap", 1, 1, ""},
    [OP_LINEAR] = {"linear", 1, 1, "c bias"},
    [OP_ADD] = {"add", 2, NODE_MAX_IN, ""},
    [OP_CONCAT] = {"concat", 2, NODE_MAX_IN, ""},
    [OP_MUL] = {"mul", 2, 2, ""},
    [OP_ZERO] = {"zero", 1, 1, ""},
    [OP_ID] = {"id", 1, 1, ""},
    [OP_DROPOUT] = {"dropout", 1, 1, "p"},
    [OP_RESIZE] = {"resize", 1, 1, "s!"},
};
_Static_assert(sizeof op_syntax / sizeof op_syntax[0] == OP_COUNT, "one syntax entry per op");

const char *op_name(OpKind op) { return (op >= 0 && op < OP_COUNT) ? op_syntax[op].name : "?"; }

static int op_lookup(const char *name) {
    for (int i = 0; i < OP_COUNT; i++)
        if (strcmp(op_syntax[i].name, name) == 0) return i;
    return -1;
}

OpAttr op_default_attr(OpKind op) {
    OpAttr a = {.c = 0, .k = 0, .s = 1, .p = -1, .d = 1, .g = 1, .bias = 0, .cip = 1, .drop = 0.5f};
    if (op == OP_LINEAR) a.bias = 1;
    if (op == OP_MAXPOOL || op == OP_AVGPOOL) a.s = 0, a.p = 0; /* s 0 = same as k */
    return a;
}

/* ------------------------------------------------------------------ spec building */
int spec_add(Spec *s, OpKind op, OpAttr a, const int *in, int nin, const char *name) {
    NASC_ASSERT(nin >= 0 && nin <= NODE_MAX_IN);
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 32;
        s->nodes = xrealloc(s->nodes, (size_t)s->cap * sizeof *s->nodes);
    }
    Node *nd = &s->nodes[s->n];
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    nd->a = a;
    nd->nin = nin;
    for (int i = 0; i < nin; i++) nd->in[i] = in[i];
    if (name) snprintf(nd->name, sizeof nd->name, "%s", name);
    return s->n++;
}

void spec_free(Spec *s) {
    free(s->nodes);
    free(s->arch);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------ errors */
static int lex_error(Lexer *L, const Tok *t, const char *fmt, const char *arg) {
    char what[256];
    snprintf(what, sizeof what, fmt, arg);
    err_set(L->e, "spec: line %d, column %d: %s", t->pos.line, t->pos.col, what);
    return NASC_ERR;
}

static const char *tok_desc(const Tok *t) {
    switch (t->kind) {
    case T_END: return "the end of the spec";
    case T_SEP: return t->text[0] == ';' ? "';'" : "a line break";
    default: return t->text;
    }
}

/* ------------------------------------------------------------------ parser */
static int find_name(const Spec *s, const char *name) {
    for (int i = s->n - 1; i >= 0; i--)
        if (strcmp(s->nodes[i].name, name) == 0) return i;
    return -2;
}

static int key_allowed(OpKind op, const char *key, int *required) {
    const char *p = op_syntax[op].keys;
    size_t kl = strlen(key);
    while (*p) {
        while (*p == ' ') p++;
        const char *q = p;
        while (*q && *q != ' ' && *q != '!') q++;
        if ((size_t)(q - p) == kl && strncmp(p, key, kl) == 0) {
            if (required) *required = (*q == '!');
            return 1;
        }
        while (*q && *q != ' ') q++;
        p = q;
    }
    return 0;
}

static int set_attr(Lexer *L, OpKind op, OpAttr *a, const Tok *key, const Tok *val) {
    double v = val->num;
    const char *k = key->text;
    if (op == OP_DROPOUT && strcmp(k, "p") == 0) {
        if (!(v >= 0 && v < 1)) return lex_error(L, val, "dropout probability must be in [0, 1), got %s", val->text);
        a->drop = (float)v;
        return NASC_OK;
    }
    if (v != floor(v) || fabs(v) > 1e6) return lex_error(L, val, "attribute value must be a whole number, got %s", val->text);
    int iv = (int)v;
    int *slot = NULL;
    int lo = 1;
    if (strcmp(k, "c") == 0) slot = &a->c, lo = (op == OP_LINEAR) ? 0 : 1;
    else if (strcmp(k, "k") == 0) slot = &a->k;
    else if (strcmp(k, "s") == 0) slot = &a->s;
    else if (strcmp(k, "p") == 0) slot = &a->p, lo = 0;
    else if (strcmp(k, "d") == 0) slot = &a->d;
    else if (strcmp(k, "g") == 0) slot = &a->g;
    else if (strcmp(k, "bias") == 0) slot = &a->bias, lo = 0;
    else if (strcmp(k, "cip") == 0) slot = &a->cip, lo = 0;
    NASC_ASSERT(slot);
    if (iv < lo) {
        char msg[160];
        snprintf(msg, sizeof msg, "attribute %s must be at least %d, got %%s", k, lo);
        return lex_error(L, val, msg, val->text);
    }
    if ((slot == &a->bias || slot == &a->cip) && iv > 1) return lex_error(L, val, "attribute must be 0 or 1, got %s", val->text);
    *slot = iv;
    return NASC_OK;
}

static int parse_stmt(Lexer *L, Spec *s) {
    Tok first = L->tok;
    char name[NODE_NAME_MAX] = "";
    Tok optok = first;
    lex_next(L);
    if (L->tok.kind == T_EQ) { /* NAME '=' OP */
        if (op_lookup(first.text) >= 0 || !strcmp(first.text, "input") || !strcmp(first.text, "_"))
            return lex_error(L, &first, "'%s' is reserved and cannot name a node", first.text);
        if (strlen(first.text) >= NODE_NAME_MAX) return lex_error(L, &first, "name '%s' is too long", first.text);
        if (find_name(s, first.text) >= -1) return lex_error(L, &first, "name '%s' is already used", first.text);
        memcpy(name, first.text, strlen(first.text) + 1);
        lex_next(L);
        if (L->tok.kind != T_NAME) return lex_error(L, &L->tok, "expected an op name, found %s", tok_desc(&L->tok));
        optok = L->tok;
        lex_next(L);
    }
    int op = op_lookup(optok.text);
    if (op < 0) return lex_error(L, &optok, "unknown op '%s'", optok.text);
    OpAttr a = op_default_attr((OpKind)op);
    int in[NODE_MAX_IN], nin = 0;
    char seen_keys[16][64];
    int nseen = 0;
    if (L->tok.kind == T_LP) {
        lex_next(L);
        if (L->tok.kind != T_RP) {
            for (;;) {
                Tok t = L->tok;
                if (t.kind != T_NAME) return lex_error(L, &t, "expected an input name or key=value, found %s", tok_desc(&t));
                lex_next(L);
                if (L->tok.kind == T_EQ) {
                    lex_next(L);
                    Tok v = L->tok;
                    int req = 0;
                    if (!key_allowed((OpKind)op, t.text, &req)) {
                        char msg[128];
                        snprintf(msg, sizeof msg, "op '%s' has no attribute '%%s'", op_syntax[op].name);
                        return lex_error(L, &t, msg, t.text);
                    }
                    for (int i = 0; i < nseen; i++)
                        if (!strcmp(seen_keys[i], t.text)) return lex_error(L, &t, "attribute '%s' given twice", t.text);
                    if (nseen < 16) snprintf(seen_keys[nseen++], sizeof seen_keys[0], "%s", t.text);
                    if (v.kind != T_NUM) return lex_error(L, &v, "expected a number, found %s", tok_desc(&v));
                    if (set_attr(L, (OpKind)op, &a, &t, &v) != NASC_OK) return NASC_ERR;
                    lex_next(L);
                } else {
                    int idx;
                    if (!strcmp(t.text, "input")) idx = -1;
                    else if (!strcmp(t.text, "_")) idx = s->n - 1;
                    else {
                        idx = find_name(s, t.text);
                        if (idx < -1) return lex_error(L, &t, "unknown input '%s' (names must be defined before use)", t.text);
                    }
                    if (nin == op_syntax[op].max_in) {
                        char msg[96];
                        snprintf(msg, sizeof msg, "op '%s' takes at most %d inputs (at '%%s')", op_syntax[op].name,
                                 op_syntax[op].max_in);
                        return lex_error(L, &t, msg, t.text);
                    }
                    in[nin++] = idx;
                }
                if (L->tok.kind == T_COMMA) {
                    lex_next(L);
                    continue;
                }
                if (L->tok.kind == T_RP) break;
                return lex_error(L, &L->tok, "expected ',' or ')', found %s", tok_desc(&L->tok));
            }
        }
        lex_next(L); /* past ')' */
    }
    /* Required attributes. */
    const char *p = op_syntax[op].keys;
    while (*p) {
        while (*p == ' ') p++;
        const char *q = p;
        while (*q && *q != ' ' && *q != '!') q++;
        if (*q == '!') {
            char key[8];
            snprintf(key, sizeof key, "%.*s", (int)(q - p), p);
            int given = 0;
            for (int i = 0; i < nseen; i++) given |= !strcmp(seen_keys[i], key);
            if (!given) {
                char msg[128];
                snprintf(msg, sizeof msg, "op '%s' needs attribute '%s' (%%s)", op_syntax[op].name, key);
                return lex_error(L, &optok, msg,
                                 key[0] == 'c' ? "output channels" : key[0] == 'k' ? "kernel size" : "output size");
            }
            q++;
        }
        while (*q && *q != ' ') q++;
        p = q;
    }
    /* Implicit inputs. */
    if (nin == 0 || (nin < op_syntax[op].min_in && nin + 1 >= op_syntax[op].min_in)) {
        for (int i = nin; i > 0; i--) in[i] = in[i - 1];
        in[0] = s->n - 1;
        nin++;
    }
    if (nin < op_syntax[op].min_in) {
        char msg[96];
        snprintf(msg, sizeof msg, "op '%s' needs at least %d inputs%%s", op_syntax[op].name, op_syntax[op].min_in);
        return lex_error(L, &optok, msg, "");
    }
    spec_add(s, (OpKind)op, a, in, nin, name[0] ? name : NULL);
    if (L->tok.kind != T_SEP && L->tok.kind != T_END)
        return lex_error(L, &L->tok, "expected ';' or a new line after a statement, found %s", tok_desc(&L->tok));
    return NASC_OK;
}

int spec_parse(Spec *out, const char *text, int channels, int cells, Err *e) {
    memset(out, 0, sizeof *out);
    const char *t = text;
    while (*t == ' ' || *t == '\t' || *t == '\n' || *t == '\r') t++;
    if (strncmp(t, "nb201:", 6) == 0) {
        if (nb201_expand(out, t, channels, cells, e) != NASC_OK) {
            spec_free(out);
            return NASC_ERR;
        }
        out->arch = xstrdup(t);
        return NASC_OK;
    }
    Lexer L;
    lex_init(&L, text, e);
    while (L.tok.kind != T_END) {
        if (L.tok.kind == T_SEP) {
            lex_next(&L);
            continue;
        }
        if (L.tok.kind != T_NAME) {
            lex_error(&L, &L.tok, "expected an op name, found %s", tok_desc(&L.tok));
            spec_free(out);
            return NASC_ERR;
        }
        if (parse_stmt(&L, out) != NASC_OK) {
            spec_free(out);
            return NASC_ERR;
        }
    }
    if (out->n == 0) {
        err_set(e, "spec: empty: no statements");
        spec_free(out);
        return NASC_ERR;
    }
    return NASC_OK;
}

/* ------------------------------------------------------------------ printer */
char *spec_print(const Spec *s) {
    /* Which nodes are referenced other than as the implicit previous input? */
    char *needs = xcalloc((size_t)s->n + 1, 1);
    for (int i = 0; i < s->n; i++) {
        const Node *nd = &s->nodes[i];
        int implicit = (nd->nin == 1 && nd->in[0] == i - 1);
        if (!implicit)
            for (int j = 0; j < nd->nin; j++)
                if (nd->in[j] >= 0) needs[nd->in[j]] = 1;
    }
    /* Names: the given ones, else n<i> (made unique against given names). */
    char (*names)[NODE_NAME_MAX + 8] = xcalloc((size_t)s->n + 1, sizeof *names);
    for (int i = 0; i < s->n; i++) {
        if (s->nodes[i].name[0]) {
            snprintf(names[i], sizeof names[i], "%s", s->nodes[i].name);
        } else if (needs[i]) {
            snprintf(names[i], sizeof names[i], "n%d", i);
            for (;;) {
                int clash = 0;
                for (int j = 0; j < s->n; j++)
                    if (j != i && !strcmp(names[j], names[i])) clash = 1;
                if (!clash) break;
                strcat(names[i], "_");
            }
        }
    }
    Str out = {0};
    for (int i = 0; i < s->n; i++) {
        const Node *nd = &s->nodes[i];
        OpAttr def = op_default_attr(nd->op);
        if (i) str_addf(&out, ";");
        if (names[i][0]) str_addf(&out, "%s=", names[i]);
        str_addf(&out, "%s", op_syntax[nd->op].name);
        int nargs = 0;
        char args[512];
        args[0] = 0;
        size_t al = 0;
#define ARG(...)                                                                              \
    do {                                                                                      \
        al += (size_t)snprintf(args + al, sizeof args - al, "%s", nargs++ ? "," : "");        \
        al += (size_t)snprintf(args + al, sizeof args - al, __VA_ARGS__);                     \
    } while (0)
        int implicit = (nd->nin == 1 && nd->in[0] == i - 1);
        if (!implicit)
            for (int j = 0; j < nd->nin; j++) ARG("%s", nd->in[j] < 0 ? "input" : names[nd->in[j]]);
        const OpAttr *a = &nd->a;
        switch (nd->op) {
        case OP_CONV: {
            ARG("c=%d", a->c);
            ARG("k=%d", a->k);
            if (a->s != def.s) ARG("s=%d", a->s);
            int autop = a->d * (a->k - 1) / 2;
            if (a->p >= 0 && a->p != autop) ARG("p=%d", a->p);
            if (a->d != def.d) ARG("d=%d", a->d);
            if (a->g != def.g) ARG("g=%d", a->g);
            if (a->bias != def.bias) ARG("bias=%d", a->bias);
            break;
        }
        case OP_MAXPOOL:
        case OP_AVGPOOL:
            ARG("k=%d", a->k);
            if (a->s != 0 && a->s != a->k) ARG("s=%d", a->s);
            if (a->p != def.p) ARG("p=%d", a->p);
            if (nd->op == OP_AVGPOOL && a->cip != def.cip) ARG("cip=%d", a->cip);
            break;
        case OP_LINEAR:
            if (a->c != 0) ARG("c=%d", a->c);
            if (a->bias != def.bias) ARG("bias=%d", a->bias);
            break;
        case OP_DROPOUT:
            if (a->drop != def.drop) {
                char num[32];
                for (int prec = 6; prec <= 9; prec++) { /* shortest text that reads back exactly */
                    snprintf(num, sizeof num, "%.*g", prec, (double)a->drop);
                    if (strtof(num, NULL) == a->drop) break;
                }
                ARG("p=%s", num);
            }
            break;
        case OP_RESIZE:
            ARG("s=%d", a->s);
            break;
        default: break;
        }
#undef ARG
        if (nargs) str_addf(&out, "(%s)", args);
    }
    free(needs);
    free(names);
    if (!out.buf) str_addf(&out, "%s", "");
    return out.buf;
}
