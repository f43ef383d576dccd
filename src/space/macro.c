/* macro.c: a MobileNetV2/V3-style macro space like Once-for-All's, on 1xHxW or 3xHxW inputs.
 *
 * Network of a member (channels after the width multiplier w: make_divisible(c * w, 8), the
 * MobileNet rounding: nearest multiple of 8, at least 8, never below 90% of c * w):
 *   resize(s=R)                        when the resolution R is not 0 (0 = the input's own size)
 *   stem: conv3x3 (stride stem_stride) + BN + stem_act
 *   S stages; stage s has `depth` blocks, the first with the stage's stride, all with its act:
 *     block (in -> out, kernel k, expansion e, se):
 *       mid = e == 1 ? in : make_divisible(in * e, 8)
 *       [conv1x1(mid) + BN + act]                       only when e != 1
 *       depthwise conv k x k (stride, groups mid) + BN + act
 *       [SE: gap; conv1x1(make_divisible(mid/4, 8), bias); relu; conv1x1(mid, bias); hsigmoid; mul]
 *       conv1x1(out) + BN                               (linear bottleneck)
 *       [+ block input]                                 when stride 1 and in == out
 *   head: [conv1x1(make_divisible(head * w, 8)) + BN + head_act] (none when head = 0); gap; linear.
 *
 * Decisions (the fixed-length vector): resolution, width, then per stage its depth followed by
 * kernel, expansion and SE of each of its max(depth) possible blocks. Blocks beyond the chosen
 * depth are inactive; the canonical form sets their decisions to 0.
 *
 * Configuration: "macro" (defaults), "macro:KEY=VAL,..." inline, or a file whose first word is
 * `macro` followed by KEY = VAL lines ('#' comments). Items are separated by ',', ';' or line
 * breaks; an item without '=' adds a value to the previous key, and values may also be separated
 * by blanks, so "kernel=3,5,7", "kernel = 3 5 7" and "macro:kernel=3,5,depth=1,2" all work.
 *   channels=16,24,40,80       base output channels per stage (their count is the stage count S)
 *   strides=1,2,2,2            stride of each stage's first block (1 or 2)
 *   acts=relu6,relu6,hswish,hswish   activation per stage: relu, relu6 or hswish
 *   depth=2,3,4  kernel=3,5,7  expand=1,3,4,6  se=0,1     choices for every stage
 *   depth.N= kernel.N= expand.N= se.N=                    choices for stage N only (1-based)
 *   width=0.5,0.75,1.0         width multipliers
 *   res=20,24,28               input resolutions (0 = no resize)
 *   stem=16 stem_stride=1 stem_act=relu6 head=256 head_act=hswish
 * A per-stage list of one value (strides, acts) applies to every stage.
 *
 * Arch strings (values, not indices, so they read without the config):
 *   macro:r28:w0.75:k3e6,k5e4se|k3e1,k7e6,k3e3se|...        one '|'-separated group per stage
 * A block is k<kernel>e<expansion>, with "se" appended when it has squeeze-excitation; a stage
 * lists its active blocks (their count is its depth). When some inactive block's decisions are
 * not 0, the stage also lists all its inactive blocks after a '/', so that from_arch(to_arch(m))
 * gives m back exactly; canonical members never carry that part. The width prints with at least
 * one decimal (w1.0).
 */
#include "spaces.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>

#define MS_MAX_STAGES 16
#define MS_MAX_CHOICES 16
#define MS_MAX_DEPTH 16

enum { ACT_RELU, ACT_RELU6, ACT_HSWISH, ACT_COUNT };
static const char *act_names[ACT_COUNT] = {"relu", "relu6", "hswish"};

typedef struct {
    int n;
    int v[MS_MAX_CHOICES];
} Choices;

typedef struct {
    int nstages;
    int ch[MS_MAX_STAGES], stride[MS_MAX_STAGES], act[MS_MAX_STAGES];
    Choices depth[MS_MAX_STAGES], kernel[MS_MAX_STAGES], expand[MS_MAX_STAGES], se[MS_MAX_STAGES];
    Choices res;
    int nwidth;
    double width[MS_MAX_CHOICES];
    int stem, stem_stride, stem_act, head, head_act;
    /* Layout of the vector: */
    int maxdepth[MS_MAX_STAGES];
    int off[MS_MAX_STAGES]; /* index of stage s's depth decision; block b's kernel is off + 1 + 3b */
} Macro;

#define D_RES 0
#define D_WIDTH 1

/* ------------------------------------------------------------------ config lexer */
typedef enum { MT_END, MT_WORD, MT_NUM, MT_EQ, MT_SEP, MT_BAD } MTokKind;

typedef struct {
    MTokKind kind;
    char text[48];
    double num;
    int line, col;
} MTok;

typedef struct {
    const char *where;
    int is_file;
    Err *e;
} Ctx;

static int cfg_error(const Ctx *c, const MTok *t, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int cfg_error(const Ctx *c, const MTok *t, const char *fmt, ...) {
    char msg[384];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (c->is_file) err_set(c->e, "%s: line %d, column %d: %s", c->where, t->line, t->col, msg);
    else err_set(c->e, "macro config, column %d: %s", t->col + 6, msg); /* counted in "macro:..." */
    return NASC_ERR;
}

/* Split text into tokens (caller frees *out). Never fails: bad characters become MT_BAD. */
static int cfg_lex(const char *text, MTok **out) {
    int n = 0, cap = 64, line = 1, col = 1;
    MTok *t = xmalloc((size_t)cap * sizeof *t);
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r') p++, col++;
        if (*p == '#') {
            while (*p && *p != '\n') p++, col++;
            continue;
        }
        if (n + 1 >= cap) t = xrealloc(t, (size_t)(cap *= 2) * sizeof *t);
        MTok *k = &t[n++];
        memset(k, 0, sizeof *k);
        k->line = line;
        k->col = col;
        if (!*p) {
            k->kind = MT_END;
            break;
        }
        if (isalpha((unsigned char)*p) || *p == '_') {
            size_t len = 0;
            while (isalnum((unsigned char)p[len]) || p[len] == '_' || p[len] == '.') len++;
            snprintf(k->text, sizeof k->text, "%.*s", (int)NASC_MIN(len, sizeof k->text - 1), p);
            k->kind = MT_WORD;
            p += len, col += (int)len;
        } else if (isdigit((unsigned char)*p) || *p == '.' || *p == '-' || *p == '+') {
            char *end;
            k->num = strtod(p, &end);
            size_t len = (size_t)(end - p);
            if (len == 0 || !isfinite(k->num)) {
                k->kind = MT_BAD;
                snprintf(k->text, sizeof k->text, "%c", *p);
                p++, col++;
            } else {
                snprintf(k->text, sizeof k->text, "%.*s", (int)NASC_MIN(len, sizeof k->text - 1), p);
                k->kind = MT_NUM;
                p += len, col += (int)len;
            }
        } else if (*p == '=') {
            k->kind = MT_EQ, snprintf(k->text, sizeof k->text, "=");
            p++, col++;
        } else if (*p == ',' || *p == ';' || *p == '\n') {
            k->kind = MT_SEP, snprintf(k->text, sizeof k->text, "%c", *p);
            if (*p == '\n') line++, col = 1;
            else col++;
            p++;
        } else {
            k->kind = MT_BAD, snprintf(k->text, sizeof k->text, "%c", *p);
            p++, col++;
        }
    }
    *out = t;
    return n;
}

/* ------------------------------------------------------------------ config parser */
typedef enum { K_CHANNELS, K_STRIDES, K_ACTS, K_DEPTH, K_KERNEL, K_EXPAND, K_SE, K_WIDTH, K_RES,
               K_STEM, K_STEM_STRIDE, K_STEM_ACT, K_HEAD, K_HEAD_ACT, K_COUNT } KeyId;
static const char *key_names[K_COUNT] = {"channels", "strides", "acts", "depth", "kernel", "expand", "se",
                                         "width", "res", "stem", "stem_stride", "stem_act", "head", "head_act"};

/* The values given for one key (or one key.N override). */
typedef struct {
    int given;
    MTok key;        /* where it was given */
    int n;
    MTok val[MS_MAX_CHOICES];
} Setting;

typedef struct {
    Setting k[K_COUNT];
    Setting stage[4][MS_MAX_STAGES]; /* depth.N, kernel.N, expand.N, se.N */
} Settings;

static int act_lookup(const char *w) {
    for (int a = 0; a < ACT_COUNT; a++)
        if (strcmp(w, act_names[a]) == 0) return a;
    return -1;
}

static int cfg_parse(const char *text, const Ctx *c, Settings *st) {
    MTok *t;
    int nt = cfg_lex(text, &t), i = 0;
    memset(st, 0, sizeof *st);
    Setting *cur = NULL;
    if (c->is_file) { /* skip the leading `macro` word (space_open checked it is there) */
        while (t[i].kind == MT_SEP) i++;
        if (t[i].kind == MT_WORD && strcmp(t[i].text, "macro") == 0) i++;
        if (t[i].kind == MT_WORD && i + 1 < nt && t[i + 1].kind == MT_EQ) {
            /* `macro key=val` on one line is fine too */
        } else if (t[i].kind != MT_SEP && t[i].kind != MT_END) {
            cfg_error(c, &t[i], "expected KEY=VALUE after 'macro', found '%s'", t[i].text);
            goto fail;
        }
    }
    while (t[i].kind != MT_END) {
        MTok *k = &t[i];
        if (k->kind == MT_SEP) {
            i++;
            continue;
        }
        if (k->kind == MT_BAD) {
            cfg_error(c, k, "unexpected character '%s'", k->text);
            goto fail;
        }
        if (k->kind == MT_EQ) {
            cfg_error(c, k, "'=' without a key before it");
            goto fail;
        }
        if (k->kind == MT_WORD && t[i + 1].kind == MT_EQ) { /* KEY = */
            char base[48];
            snprintf(base, sizeof base, "%s", k->text);
            char *dot = strchr(base, '.');
            int stage = -1;
            if (dot) {
                *dot = 0;
                char *end;
                long v = strtol(dot + 1, &end, 10);
                if (!dot[1] || *end || v < 1 || v > MS_MAX_STAGES) {
                    cfg_error(c, k, "bad stage number in '%s' (use KEY.N with N from 1 to %d)", k->text, MS_MAX_STAGES);
                    goto fail;
                }
                stage = (int)v - 1;
            }
            int id = -1;
            for (int q = 0; q < K_COUNT; q++)
                if (strcmp(base, key_names[q]) == 0) id = q;
            if (id < 0) {
                cfg_error(c, k, "unknown key '%s' (keys: channels, strides, acts, depth, kernel, expand, se, width, "
                                "res, stem, stem_stride, stem_act, head, head_act; depth.N etc. for stage N)", base);
                goto fail;
            }
            if (stage >= 0 && (id < K_DEPTH || id > K_SE)) {
                cfg_error(c, k, "only depth, kernel, expand and se take a stage number ('%s')", k->text);
                goto fail;
            }
            cur = stage >= 0 ? &st->stage[id - K_DEPTH][stage] : &st->k[id];
            if (cur->given) {
                cfg_error(c, k, "'%s' given twice", k->text);
                goto fail;
            }
            cur->given = 1;
            cur->key = *k;
            i += 2;
            if (t[i].kind == MT_SEP || t[i].kind == MT_END) {
                cfg_error(c, &t[i], "'%s' needs a value", k->text);
                goto fail;
            }
            continue;
        }
        if (k->kind == MT_WORD || k->kind == MT_NUM) { /* a value of the current key */
            if (!cur) {
                cfg_error(c, k, "expected KEY=VALUE, found '%s'", k->text);
                goto fail;
            }
            if (cur->n == MS_MAX_CHOICES) {
                cfg_error(c, k, "too many values for '%s' (at most %d)", cur->key.text, MS_MAX_CHOICES);
                goto fail;
            }
            cur->val[cur->n++] = *k;
            i++;
            continue;
        }
        cfg_error(c, k, "unexpected '%s'", k->text);
        goto fail;
    }
    free(t);
    return NASC_OK;
fail:
    free(t);
    return NASC_ERR;
}

/* Integer values of a setting in [lo, hi]; distinct when `choices`. */
static int get_ints(const Ctx *c, const Setting *s, int lo, int hi, int choices, int *v, int *n) {
    for (int i = 0; i < s->n; i++) {
        const MTok *t = &s->val[i];
        if (t->kind != MT_NUM || t->num != floor(t->num) || t->num < lo || t->num > hi)
            return cfg_error(c, t, "'%s' takes whole numbers from %d to %d, got '%s'", s->key.text, lo, hi, t->text);
        v[i] = (int)t->num;
        if (choices)
            for (int j = 0; j < i; j++)
                if (v[j] == v[i]) return cfg_error(c, t, "'%s' lists %d twice", s->key.text, v[i]);
    }
    *n = s->n;
    return NASC_OK;
}

static int get_one_int(const Ctx *c, const Setting *s, int lo, int hi, int *v) {
    if (s->n != 1) return cfg_error(c, &s->key, "'%s' takes one value, got %d", s->key.text, s->n);
    int n;
    return get_ints(c, s, lo, hi, 0, v, &n);
}

static int get_acts(const Ctx *c, const Setting *s, int *v, int *n) {
    for (int i = 0; i < s->n; i++) {
        v[i] = s->val[i].kind == MT_WORD ? act_lookup(s->val[i].text) : -1;
        if (v[i] < 0)
            return cfg_error(c, &s->val[i], "unknown activation '%s' (relu, relu6 or hswish)", s->val[i].text);
    }
    *n = s->n;
    return NASC_OK;
}

/* A per-stage list: one value for all stages or exactly S values. */
static int per_stage(const Ctx *c, const Setting *s, int nstages, int *v, int n) {
    if (n == nstages) return NASC_OK;
    if (n == 1) {
        for (int i = 1; i < nstages; i++) v[i] = v[0];
        return NASC_OK;
    }
    return cfg_error(c, &s->key, "'%s' has %d values but there are %d stages (give 1 or %d)", s->key.text, n,
                     nstages, nstages);
}

static void set_default(Setting *s, const char *key, const char *vals) {
    /* vals: blank-separated numbers or words; never a user error */
    memset(s, 0, sizeof *s);
    s->given = 1;
    snprintf(s->key.text, sizeof s->key.text, "%s", key);
    const char *p = vals;
    while (*p) {
        while (*p == ' ') p++;
        if (!*p) break;
        MTok *t = &s->val[s->n++];
        size_t len = strcspn(p, " ");
        snprintf(t->text, sizeof t->text, "%.*s", (int)len, p);
        if (isalpha((unsigned char)*p)) t->kind = MT_WORD;
        else t->kind = MT_NUM, t->num = strtod(p, NULL);
        p += len;
    }
}

static int macro_configure(Macro *M, const char *text, const Ctx *c) {
    Settings st;
    if (text) {
        if (cfg_parse(text, c, &st) != NASC_OK) return NASC_ERR;
    } else {
        memset(&st, 0, sizeof st);
    }
    static const char *defaults[K_COUNT] = {
        [K_CHANNELS] = "16 24 40 80", [K_DEPTH] = "2 3 4", [K_KERNEL] = "3 5 7", [K_EXPAND] = "1 3 4 6", [K_SE] = "0 1",
        [K_WIDTH] = "0.5 0.75 1.0", [K_RES] = "20 24 28", [K_STEM] = "16", [K_STEM_STRIDE] = "1",
        [K_STEM_ACT] = "relu6", [K_HEAD] = "256", [K_HEAD_ACT] = "hswish"};
    if (!st.k[K_CHANNELS].given) set_default(&st.k[K_CHANNELS], "channels", defaults[K_CHANNELS]);
    int n = 0;
    memset(M, 0, sizeof *M);
    if (get_ints(c, &st.k[K_CHANNELS], 1, 4096, 0, M->ch, &M->nstages) != NASC_OK) return NASC_ERR;
    int S = M->nstages;
    /* Per-stage defaults for S stages: stride 1 then 2; relu6 in the first half, hswish after
     * (for the default 4 stages: 1,2,2,2 and relu6,relu6,hswish,hswish). */
    char dstrides[64] = "", dacts[128] = "";
    for (int s = 0; s < S; s++) {
        strcat(dstrides, s ? " 2" : "1");
        strcat(dacts, s ? " " : "");
        strcat(dacts, s < S / 2 ? "relu6" : "hswish");
    }
    for (int k = 0; k < K_COUNT; k++) {
        if (st.k[k].given) continue;
        if (k == K_STRIDES) set_default(&st.k[k], "strides", dstrides);
        else if (k == K_ACTS) set_default(&st.k[k], "acts", dacts);
        else set_default(&st.k[k], key_names[k], defaults[k]);
    }
    if (get_ints(c, &st.k[K_STRIDES], 1, 2, 0, M->stride, &n) != NASC_OK) return NASC_ERR;
    if (per_stage(c, &st.k[K_STRIDES], S, M->stride, n) != NASC_OK) return NASC_ERR;
    if (get_acts(c, &st.k[K_ACTS], M->act, &n) != NASC_OK) return NASC_ERR;
    if (per_stage(c, &st.k[K_ACTS], S, M->act, n) != NASC_OK) return NASC_ERR;
    static const int lo[4] = {1, 1, 1, 0}, hi[4] = {MS_MAX_DEPTH, 15, 16, 1};
    for (int q = 0; q < 4; q++) {
        Choices all;
        if (get_ints(c, &st.k[K_DEPTH + q], lo[q], hi[q], 1, all.v, &all.n) != NASC_OK) return NASC_ERR;
        if (q == 1)
            for (int i = 0; i < all.n; i++)
                if (all.v[i] % 2 == 0)
                    return cfg_error(c, &st.k[K_KERNEL].val[i], "kernel sizes must be odd, got %d", all.v[i]);
        for (int s = 0; s < MS_MAX_STAGES; s++) {
            Setting *ov = &st.stage[q][s];
            Choices *dst = q == 0 ? &M->depth[s] : q == 1 ? &M->kernel[s] : q == 2 ? &M->expand[s] : &M->se[s];
            if (!ov->given) {
                *dst = all;
                continue;
            }
            if (s >= S)
                return cfg_error(c, &ov->key, "'%s': there are only %d stages", ov->key.text, S);
            if (get_ints(c, ov, lo[q], hi[q], 1, dst->v, &dst->n) != NASC_OK) return NASC_ERR;
            if (q == 1)
                for (int i = 0; i < dst->n; i++)
                    if (dst->v[i] % 2 == 0) return cfg_error(c, &ov->val[i], "kernel sizes must be odd, got %d", dst->v[i]);
        }
    }
    const Setting *w = &st.k[K_WIDTH];
    for (int i = 0; i < w->n; i++) {
        const MTok *t = &w->val[i];
        if (t->kind != MT_NUM || !(t->num > 0 && t->num <= 4))
            return cfg_error(c, t, "'width' takes multipliers in (0, 4], got '%s'", t->text);
        M->width[i] = t->num;
        for (int j = 0; j < i; j++)
            if (fabs(M->width[j] - t->num) <= 1e-6 * t->num) return cfg_error(c, t, "'width' lists %s twice", t->text);
    }
    M->nwidth = w->n;
    if (get_ints(c, &st.k[K_RES], 0, 2048, 1, M->res.v, &M->res.n) != NASC_OK) return NASC_ERR;
    if (get_one_int(c, &st.k[K_STEM], 1, 4096, &M->stem) != NASC_OK) return NASC_ERR;
    if (get_one_int(c, &st.k[K_STEM_STRIDE], 1, 2, &M->stem_stride) != NASC_OK) return NASC_ERR;
    if (get_one_int(c, &st.k[K_HEAD], 0, 16384, &M->head) != NASC_OK) return NASC_ERR;
    int a[MS_MAX_CHOICES];
    if (get_acts(c, &st.k[K_STEM_ACT], a, &n) != NASC_OK) return NASC_ERR;
    if (n != 1) return cfg_error(c, &st.k[K_STEM_ACT].key, "'stem_act' takes one value, got %d", n);
    M->stem_act = a[0];
    if (get_acts(c, &st.k[K_HEAD_ACT], a, &n) != NASC_OK) return NASC_ERR;
    if (n != 1) return cfg_error(c, &st.k[K_HEAD_ACT].key, "'head_act' takes one value, got %d", n);
    M->head_act = a[0];
    /* Layout. */
    int nd = 2;
    for (int s = 0; s < S; s++) {
        M->maxdepth[s] = 0;
        for (int i = 0; i < M->depth[s].n; i++) M->maxdepth[s] = NASC_MAX(M->maxdepth[s], M->depth[s].v[i]);
        M->off[s] = nd;
        nd += 1 + 3 * M->maxdepth[s];
    }
    if (nd > SPACE_MAX_DIMS) {
        err_set(c->e, "%s: the space has %d decisions, more than the %d a space can have (fewer stages or a "
                      "smaller maximum depth)", c->is_file ? c->where : "macro config", nd, SPACE_MAX_DIMS);
        return NASC_ERR;
    }
    return NASC_OK;
}

/* ------------------------------------------------------------------ members */
static int make_divisible(double v, int d) {
    int nv = (int)(v + d / 2.0) / d * d;
    if (nv < d) nv = d;
    if (nv < 0.9 * v) nv += d;
    return nv;
}

static const Macro *mac(const Space *s) { return s->impl; }

static int depth_of(const Macro *M, const int *m, int s) { return M->depth[s].v[m[M->off[s]]]; }

static void macro_active(const Space *sp, const int *m, int *act) {
    const Macro *M = mac(sp);
    act[D_RES] = act[D_WIDTH] = 1;
    for (int s = 0; s < M->nstages; s++) {
        int depth = depth_of(M, m, s);
        act[M->off[s]] = 1;
        for (int b = 0; b < M->maxdepth[s]; b++)
            for (int q = 0; q < 3; q++) act[M->off[s] + 1 + 3 * b + q] = b < depth;
    }
}

static void macro_canonical(const Space *sp, const int *m, int *out) {
    int act[SPACE_MAX_DIMS];
    macro_active(sp, m, act);
    for (int d = 0; d < sp->ndims; d++) out[d] = act[d] ? m[d] : 0;
}

typedef struct {
    char *buf;
    size_t len, cap;
} Buf;

static void buf_addf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_addf(Buf *b, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->buf ? b->buf + b->len : NULL, b->buf ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        NASC_ASSERT(n >= 0);
        if (b->buf && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        b->cap = (b->cap + (size_t)n + 1) * 2;
        b->buf = xrealloc(b->buf, b->cap);
    }
}

static void width_str(double w, char *out, size_t n) {
    snprintf(out, n, "%.9g", w);
    if (!strpbrk(out, ".e")) strncat(out, ".0", n - strlen(out) - 1);
}

static void block_str(Buf *b, const Macro *M, const int *m, int s, int blk) {
    const int *q = m + M->off[s] + 1 + 3 * blk;
    buf_addf(b, "k%de%d%s", M->kernel[s].v[q[0]], M->expand[s].v[q[1]], M->se[s].v[q[2]] ? "se" : "");
}

static char *macro_to_arch(const Space *sp, const int *m) {
    const Macro *M = mac(sp);
    char w[40];
    width_str(M->width[m[D_WIDTH]], w, sizeof w);
    Buf b = {0};
    buf_addf(&b, "macro:r%d:w%s:", M->res.v[m[D_RES]], w);
    for (int s = 0; s < M->nstages; s++) {
        if (s) buf_addf(&b, "|");
        int depth = depth_of(M, m, s);
        for (int blk = 0; blk < depth; blk++) {
            if (blk) buf_addf(&b, ",");
            block_str(&b, M, m, s, blk);
        }
        int junk = 0;
        for (int d = M->off[s] + 1 + 3 * depth; d < M->off[s] + 1 + 3 * M->maxdepth[s]; d++) junk |= m[d] != 0;
        if (junk)
            for (int blk = depth; blk < M->maxdepth[s]; blk++) {
                buf_addf(&b, blk == depth ? "/" : ",");
                block_str(&b, M, m, s, blk);
            }
    }
    return b.buf;
}

static int find_choice(const Choices *c, int v) {
    for (int i = 0; i < c->n; i++)
        if (c->v[i] == v) return i;
    return -1;
}

static void choices_str(const Choices *c, char *out, size_t n) {
    size_t len = 0;
    out[0] = 0;
    for (int i = 0; i < c->n && len + 1 < n; i++) len += (size_t)snprintf(out + len, n - len, "%s%d", i ? "," : "", c->v[i]);
}

/* Reads a non-negative integer at *p; -1 when there is none. */
static long read_int(const char **p) {
    if (!isdigit((unsigned char)**p)) return -1;
    long v = 0;
    while (isdigit((unsigned char)**p)) {
        if (v < 100000000) v = v * 10 + (**p - '0');
        (*p)++;
    }
    return v;
}

static int macro_from_arch(const Space *sp, const char *arch, int *m, Err *e) {
    const Macro *M = mac(sp);
    const char *p = arch;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    const char *start = p;
    char cs[128];
#define COL ((int)(p - start) + 1)
    if (strncmp(p, "macro:r", 7) != 0) {
        err_set(e, "macro arch, column %d: expected 'macro:r<resolution>:w<width>:<stages>', found '%.12s'", COL, p);
        return NASC_ERR;
    }
    p += 7;
    long r = read_int(&p);
    if (r < 0 || *p != ':') {
        err_set(e, "macro arch, column %d: expected a resolution and ':' after 'macro:r'", COL);
        return NASC_ERR;
    }
    if ((m[D_RES] = find_choice(&M->res, (int)r)) < 0) {
        choices_str(&M->res, cs, sizeof cs);
        err_set(e, "macro arch, column %d: resolution %ld is not one of the space's (%s)", COL - 1, r, cs);
        return NASC_ERR;
    }
    p++;
    if (*p != 'w') {
        err_set(e, "macro arch, column %d: expected 'w<width>' after the resolution", COL);
        return NASC_ERR;
    }
    p++;
    char *end;
    double w = strtod(p, &end);
    if (end == p || *end != ':' || !(w > 0)) {
        err_set(e, "macro arch, column %d: expected a width multiplier and ':' after 'w'", COL);
        return NASC_ERR;
    }
    m[D_WIDTH] = -1;
    for (int i = 0; i < M->nwidth; i++)
        if (fabs(M->width[i] - w) <= 1e-6 * M->width[i]) m[D_WIDTH] = i;
    if (m[D_WIDTH] < 0) {
        size_t len = 0;
        cs[0] = 0;
        for (int i = 0; i < M->nwidth && len + 1 < sizeof cs; i++)
            len += (size_t)snprintf(cs + len, sizeof cs - len, "%s%g", i ? "," : "", M->width[i]);
        err_set(e, "macro arch, column %d: width %.*s is not one of the space's (%s)", COL, (int)(end - p), p, cs);
        return NASC_ERR;
    }
    p = end + 1;
    for (int s = 0; s < M->nstages; s++) {
        if (s) {
            if (*p != '|') {
                err_set(e, "macro arch, column %d: expected '|' and stage %d (the space has %d stages)", COL, s + 1,
                        M->nstages);
                return NASC_ERR;
            }
            p++;
        }
        int nb = 0, depth = -1;
        for (int d = M->off[s] + 1; d < M->off[s] + 1 + 3 * M->maxdepth[s]; d++) m[d] = 0;
        for (;;) {
            if (nb == M->maxdepth[s]) {
                err_set(e, "macro arch, column %d: stage %d has more than its %d possible blocks", COL, s + 1,
                        M->maxdepth[s]);
                return NASC_ERR;
            }
            int *q = m + M->off[s] + 1 + 3 * nb;
            if (*p != 'k') {
                err_set(e, "macro arch, column %d: expected a block 'k<kernel>e<expansion>[se]' in stage %d", COL, s + 1);
                return NASC_ERR;
            }
            p++;
            long k = read_int(&p);
            if (k < 0 || (q[0] = find_choice(&M->kernel[s], (int)k)) < 0) {
                choices_str(&M->kernel[s], cs, sizeof cs);
                err_set(e, "macro arch, column %d: stage %d: kernel must be one of %s", COL, s + 1, cs);
                return NASC_ERR;
            }
            if (*p != 'e') {
                err_set(e, "macro arch, column %d: expected 'e<expansion>' after the kernel", COL);
                return NASC_ERR;
            }
            p++;
            long x = read_int(&p);
            if (x < 0 || (q[1] = find_choice(&M->expand[s], (int)x)) < 0) {
                choices_str(&M->expand[s], cs, sizeof cs);
                err_set(e, "macro arch, column %d: stage %d: expansion must be one of %s", COL, s + 1, cs);
                return NASC_ERR;
            }
            int se = 0;
            if (p[0] == 's' && p[1] == 'e') se = 1, p += 2;
            if ((q[2] = find_choice(&M->se[s], se)) < 0) {
                err_set(e, "macro arch, column %d: stage %d: squeeze-excitation must be %s", COL, s + 1,
                        se ? "off" : "on ('se' after the block)");
                return NASC_ERR;
            }
            nb++;
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p == '/' && depth < 0) {
                depth = nb;
                p++;
                continue;
            }
            break;
        }
        if (depth < 0) depth = nb;
        else if (nb != M->maxdepth[s]) {
            err_set(e, "macro arch, column %d: stage %d lists %d inactive blocks after '/', expected %d", COL, s + 1,
                    nb - depth, M->maxdepth[s] - depth);
            return NASC_ERR;
        }
        if ((m[M->off[s]] = find_choice(&M->depth[s], depth)) < 0) {
            choices_str(&M->depth[s], cs, sizeof cs);
            err_set(e, "macro arch, stage %d: depth %d (the number of blocks before '/') must be one of %s", s + 1,
                    depth, cs);
            return NASC_ERR;
        }
    }
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    if (*p) {
        err_set(e, "macro arch, column %d: unexpected '%.8s' after the last stage (the space has %d stages)", COL, p,
                M->nstages);
        return NASC_ERR;
    }
#undef COL
    return NASC_OK;
}

static char *macro_to_spec(const Space *sp, const int *m, Err *e) {
    const Macro *M = mac(sp);
    double w = M->width[m[D_WIDTH]];
    Buf b = {0};
    if (M->res.v[m[D_RES]] > 0) buf_addf(&b, "resize(s=%d)\n", M->res.v[m[D_RES]]);
    int cin = make_divisible(M->stem * w, 8);
    buf_addf(&b, "conv(c=%d,k=3,s=%d); bn; stem=%s\n", cin, M->stem_stride, act_names[M->stem_act]);
    char prev[16] = "stem";
    int nblk = 0;
    for (int s = 0; s < M->nstages; s++) {
        int cout = make_divisible(M->ch[s] * w, 8);
        const char *act = act_names[M->act[s]];
        for (int blk = 0; blk < depth_of(M, m, s); blk++, nblk++) {
            const int *q = m + M->off[s] + 1 + 3 * blk;
            int k = M->kernel[s].v[q[0]], x = M->expand[s].v[q[1]], se = M->se[s].v[q[2]];
            int stride = blk == 0 ? M->stride[s] : 1;
            int mid = x == 1 ? cin : make_divisible((double)cin * x, 8);
            buf_addf(&b, "# stage %d block %d: k%de%d%s\n", s + 1, blk + 1, k, x, se ? "se" : "");
            if (x != 1) buf_addf(&b, "conv(c=%d,k=1); bn; %s\n", mid, act);
            buf_addf(&b, "conv(c=%d,k=%d,s=%d,g=%d); bn; ", mid, k, stride, mid);
            if (se) {
                buf_addf(&b, "dw%d=%s\n", nblk, act);
                buf_addf(&b, "gap; conv(c=%d,k=1,bias=1); relu; conv(c=%d,k=1,bias=1); hsigmoid; mul(dw%d, _)\n",
                         make_divisible(mid / 4.0, 8), mid, nblk);
            } else {
                buf_addf(&b, "%s\n", act);
            }
            char out[16];
            snprintf(out, sizeof out, "b%d", nblk);
            if (stride == 1 && cin == cout) buf_addf(&b, "conv(c=%d,k=1); bn; %s=add(_, %s)\n", cout, out, prev);
            else buf_addf(&b, "conv(c=%d,k=1); %s=bn\n", cout, out);
            memcpy(prev, out, sizeof out);
            cin = cout;
        }
    }
    if (M->head > 0)
        buf_addf(&b, "conv(c=%d,k=1); bn; %s\n", make_divisible(M->head * w, 8), act_names[M->head_act]);
    buf_addf(&b, "gap; linear\n");
    return b.buf;
}

static void set_dim_name(Space *s, int d, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_dim_name(Space *s, int d, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->dim_name[d], sizeof s->dim_name[d], fmt, ap);
    va_end(ap);
}

static void macro_destroy(Space *s) {
    free(s->impl);
    free(s);
}

static const SpaceOps macro_ops = {
    .name = "macro",
    .canonical = macro_canonical,
    .to_spec = macro_to_spec,
    .to_arch = macro_to_arch,
    .from_arch = macro_from_arch,
    .active = macro_active,
    .destroy = macro_destroy,
};

Space *macro_space_open(const char *config, const char *where, int is_file, Err *e) {
    Ctx c = {.where = where, .is_file = is_file, .e = e};
    Macro *M = xmalloc(sizeof *M);
    if (macro_configure(M, config, &c) != NASC_OK) {
        free(M);
        return NULL;
    }
    Space *s = xcalloc(1, sizeof *s);
    s->ops = &macro_ops;
    s->impl = M;
    s->card[D_RES] = M->res.n;
    s->card[D_WIDTH] = M->nwidth;
    set_dim_name(s, D_RES, "resolution");
    set_dim_name(s, D_WIDTH, "width");
    for (int st = 0; st < M->nstages; st++) {
        int d = M->off[st];
        s->card[d] = M->depth[st].n;
        set_dim_name(s, d, "stage %d depth", st + 1);
        for (int blk = 0; blk < M->maxdepth[st]; blk++) {
            int q = d + 1 + 3 * blk;
            s->card[q] = M->kernel[st].n;
            s->card[q + 1] = M->expand[st].n;
            s->card[q + 2] = M->se[st].n;
            set_dim_name(s, q, "s%d block %d kernel", st + 1, blk + 1);
            set_dim_name(s, q + 1, "s%d block %d expand", st + 1, blk + 1);
            set_dim_name(s, q + 2, "s%d block %d se", st + 1, blk + 1);
        }
        s->ndims = d + 1 + 3 * M->maxdepth[st];
    }
    if (M->nstages == 0) s->ndims = 2;
    return s;
}
