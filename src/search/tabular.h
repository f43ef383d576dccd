/* tabular.h: tabular benchmarks. `--benchmark FILE.csv` answers trials by lookup instead of
 * training. The file: a header row, then one architecture per row. Column `arch` holds the arch
 * string as nasc prints it (the space's to_arch, e.g. "nb201:|nor_conv_3x3~0|+|...|"), column
 * `accuracy` the accuracy at full fidelity as a fraction in [0, 1]; optional columns `params`,
 * `macs`, `latency_ms`, `peak_bytes` (numbers >= 0, may be empty) and `accuracy@E` (the accuracy
 * after E epochs, for multi-fidelity lookups; may be empty). Other columns are ignored.
 *
 * Lookup: a member is looked up by its exact arch first (the table gives an accuracy per exact
 * arch, as NAS-Bench-201 does for all 15,625 cells, isomorphic ones included), and failing that
 * by its canonical arch: the mean over the table's rows of that canonical class (so a table
 * listing one arch per function also answers every spelling of it).
 *
 * Fidelity: `accuracy` is the accuracy at the strategy's full fidelity. A trial below full
 * epochs gets the `accuracy@E` column with the largest E <= its epochs (the smallest E when all
 * are above), or `accuracy` when the table has no such column or the cell is empty. The data
 * fraction is not modelled. Without `accuracy@E` columns a low-fidelity lookup therefore sees
 * the full-fidelity accuracy, which flatters multi-fidelity strategies; runner.h charges every
 * lookup as one query whatever its fidelity to compensate.
 */
#ifndef NASC_TABULAR_H
#define NASC_TABULAR_H

#include "../space/space.h"
#include "strategy.h"

typedef struct Tabular Tabular;

/* Load and check a table for the given space. NULL with a message naming the file, line and
 * column on any error (missing header columns, wrong field count, arch the space cannot parse,
 * missing arch, accuracy not a number or outside [0, 1], duplicate arch, bad costs). */
Tabular *tabular_load(const char *path, const Space *space, Err *e);
void tabular_free(Tabular *t);

typedef struct {
    double accuracy;                            /* at the asked fidelity */
    double params, macs, latency_ms, peak_bytes; /* NAN when the table does not say */
    int row;                                    /* 0-based data row of an exact match, -1 for a class mean */
} TabularEntry;

/* Answer member m at fidelity fid, full_epochs being the strategy's full fidelity. NASC_OK,
 * or NASC_ERR when neither the exact nor the canonical arch is in the table. */
int tabular_lookup(const Tabular *t, const int *m, Fidelity fid, double full_epochs, TabularEntry *out);

int tabular_rows(const Tabular *t);
const char *tabular_arch(const Tabular *t, int row); /* the row's arch as to_arch prints it */
double tabular_accuracy(const Tabular *t, int row);  /* the row's full-fidelity accuracy */

#endif
