/* check.h: the tiny assertion layer every test binary uses. A failed check prints where and
 * why and the binary exits non-zero from check_summary(); nothing here depends on timing. */
#ifndef NASC_CHECK_H
#define NASC_CHECK_H

#include <math.h>
#include <stdio.h>

static int check_passed, check_failed;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (cond) {                                                                        \
            check_passed++;                                                                \
        } else {                                                                           \
            check_failed++;                                                                \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                           \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

/* |a - b| <= atol + rtol * |b| */
#define CHECK_CLOSE(a, b, atol, rtol, what)                                                \
    do {                                                                                   \
        double check_a_ = (a), check_b_ = (b);                                             \
        CHECK(fabs(check_a_ - check_b_) <= (atol) + (rtol)*fabs(check_b_) &&               \
                  !isnan(check_a_) && !isnan(check_b_),                                    \
              "%s: got %.9g, want %.9g", (what), check_a_, check_b_);                      \
    } while (0)

static inline int check_summary(const char *name) {
    printf("%s: %d checks passed, %d failed\n", name, check_passed, check_failed);
    return check_failed ? 1 : 0;
}

#endif
