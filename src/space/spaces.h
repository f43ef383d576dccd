/* spaces.h: private to src/space. The constructors space_open() dispatches to, one per
 * kind of space. Each returns a Space with ops, ndims, card[] and dim_name[] filled (and impl
 * owned by the space, freed by ops->destroy), or NULL with a message in *e. */
#ifndef NASC_SPACES_H
#define NASC_SPACES_H

#include "space.h"

/* NAS-Bench-201 cells on the engine's NB201 skeleton (--channels, --cells). nb201_space.c */
Space *nb201_space_open(int channels, int cells, Err *e);
/* The MobileNet-style macro space. `config` is NULL (defaults), the text after "macro:"
 * (KEY=VAL,...), or the contents of a config file; `where` names the source for messages
 * ("macro:" or the file path) and `is_file` selects line/column positions. macro.c */
Space *macro_space_open(const char *config, const char *where, int is_file, Err *e);
/* A user-defined space read from a text file (a spec with choice points). user.c */
Space *user_space_open(const char *path, Err *e);

#endif
