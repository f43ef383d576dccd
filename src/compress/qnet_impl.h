/* qnet_impl.h: private to src/compress. The steps qnet_build (qnet.c) and qmodel_load
 * (qmodel.c) share, so that a loaded QNet is set up by the same code as a built one:
 *
 *   qnet_setup      copy the tape and shapes, plan the lowering, size and place the payload
 *   (fill the table: from ranges when building, from the file when loading)
 *   qnet_derive     the quantization of values that have no table entry (max pool, zero, alias)
 *   (fill the payload: from the float net, or from the file)
 *   qnet_finish     clamps, conv arguments, the fast path's packed weights
 */
#ifndef NASC_QNET_IMPL_H
#define NASC_QNET_IMPL_H

#include "quant.h"

void qnet_setup(QNet *q, const Net *net);
/* 1 if executed node i's value (the tail of its chain) has its own entry in the table. */
int qnet_has_table_entry(const QNet *q, int i);
void qnet_derive(QNet *q);
void qnet_finish(QNet *q);

#endif
