/* text.c: the growable string and the tokenizer shared by nasc's text formats. */
#include "text.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>

void str_addf(Str *s, const char *fmt, ...) {
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(s->buf ? s->buf + s->len : NULL, s->buf ? s->cap - s->len : 0, fmt, ap);
        va_end(ap);
        NASC_ASSERT(n >= 0);
        if (s->buf && s->len + (size_t)n < s->cap) {
            s->len += (size_t)n;
            return;
        }
        s->cap = (s->cap + (size_t)n + 1) * 2;
        s->buf = xrealloc(s->buf, s->cap);
    }
}

static void lex_char(Lexer *L) {
    if (L->src[L->at] == '\n') {
        L->line++;
        L->col = 1;
    } else {
        L->col++;
    }
    L->at++;
}

void lex_init(Lexer *L, const char *src, Err *e) {
    memset(L, 0, sizeof *L);
    L->src = src;
    L->line = L->col = 1;
    L->e = e;
    lex_next(L);
}

void lex_next(Lexer *L) {
    const char *s = L->src;
    for (;;) {
        char ch = s[L->at];
        if (ch == ' ' || ch == '\t' || ch == '\r') lex_char(L);
        else if (ch == '#')
            while (s[L->at] && s[L->at] != '\n') lex_char(L);
        else break;
    }
    Tok *t = &L->tok;
    t->pos.line = L->line;
    t->pos.col = L->col;
    t->text[0] = 0;
    char ch = s[L->at];
    if (ch == 0) {
        t->kind = T_END;
        return;
    }
    if (isalpha((unsigned char)ch) || ch == '_') {
        size_t n = 0;
        while (isalnum((unsigned char)s[L->at]) || s[L->at] == '_') {
            if (n + 1 < sizeof t->text) t->text[n++] = s[L->at];
            lex_char(L);
        }
        t->text[n] = 0;
        t->kind = T_NAME;
        return;
    }
    if (isdigit((unsigned char)ch) || ch == '.' || ch == '-' || ch == '+') {
        char *end;
        errno = 0;
        t->num = strtod(s + L->at, &end);
        size_t len = (size_t)(end - (s + L->at));
        if (len == 0 || errno == ERANGE || !isfinite(t->num)) {
            t->kind = T_BAD;
            snprintf(t->text, sizeof t->text, "%c", ch);
            return;
        }
        snprintf(t->text, sizeof t->text, "%.*s", (int)NASC_MIN(len, 60), s + L->at);
        for (size_t i = 0; i < len; i++) lex_char(L);
        t->kind = T_NUM;
        return;
    }
    TokKind k = T_BAD;
    switch (ch) {
    case '(': k = T_LP; break;
    case ')': k = T_RP; break;
    case ',': k = T_COMMA; break;
    case '=': k = T_EQ; break;
    case '{': k = T_LB; break;
    case '}': k = T_RB; break;
    case '|': k = T_BAR; break;
    case ';':
    case '\n': k = T_SEP; break;
    default: break;
    }
    snprintf(t->text, sizeof t->text, "%c", ch);
    t->kind = k;
    lex_char(L);
}
