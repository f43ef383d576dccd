/* loaders.h: the per-format loaders behind dataset_load (private to src/data). Each fills
 * *out with one split of the files in dir, or returns NASC_ERR with a message naming the
 * file and the problem. */
#ifndef NASC_LOADERS_H
#define NASC_LOADERS_H

#include "data.h"

int idx_load_dir(Dataset *out, const char *dir, Split split, Err *e);     /* idx.c */
int cifar10_load_dir(Dataset *out, const char *dir, Split split, Err *e); /* cifar.c */
int folder_load_dir(Dataset *out, const char *dir, Split split, Err *e);  /* folder.c */

#endif
