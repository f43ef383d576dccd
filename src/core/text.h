/* text.h: what the text formats share (the spec language in src/net/spec.c and user-defined
 * search spaces in src/space/user.c): a growable string and one tokenizer with line and
 * column positions, so both report errors as "line L, column C". */
#ifndef NASC_TEXT_H
#define NASC_TEXT_H

#include "common.h"

/* A growable, always NUL-terminated string (once anything was added). Free buf. */
typedef struct {
    char *buf;
    size_t len, cap;
} Str;
void str_addf(Str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

typedef struct {
    int line, col; /* 1-based */
} Pos;

typedef enum { T_END, T_NAME, T_NUM, T_LP, T_RP, T_COMMA, T_EQ, T_SEP, T_LB, T_RB, T_BAR, T_BAD } TokKind;

typedef struct {
    TokKind kind;
    char text[64]; /* the token as written (truncated past 63 characters) */
    double num;    /* T_NUM's value */
    Pos pos;
} Tok;

/* Names are [A-Za-z_][A-Za-z0-9_]*, numbers what strtod reads (finite), '#' comments run to
 * the end of the line, ';' and a line break are both T_SEP. */
typedef struct {
    const char *src;
    size_t at;
    int line, col;
    Tok tok;  /* the current token */
    Err *e;   /* for the caller's error reports */
} Lexer;

void lex_init(Lexer *L, const char *src, Err *e); /* and reads the first token */
void lex_next(Lexer *L);

#endif
