/* cgen.h: standalone C export for microcontrollers (`nasc export MODEL --format c`).
 *
 * A model file becomes NAME.c + NAME.h: plain C99 that needs nothing but a C compiler (the .c
 * includes only <stdint.h> through its header; no malloc, no libc calls, no libm), with
 *   - the weights, biases, requantization multipliers/shifts and lookup tables as `static
 *     const` arrays (flash);
 *   - one static arena (RAM) whose size is the cost model's deployable peak for the same net
 *     (cost_peak_bytes: the arena planner's figure, src/cost/arena.h), every tensor at its
 *     planned offset, the nodes run in the memory planner's order;
 *   - one entry point, `int NAME_predict(const float *input, float *scores)`: input is one
 *     normalized CHW image exactly as nasc's loader makes it, x = (pixel / 255 - mean[c]) /
 *     std[c]; scores gets the logits; the return value is the arg-max class (the first of
 *     equal maxima). Int8 models also get `int NAME_predict_q(const int8_t *input, int8_t
 *     *scores_q)`, the same at the int8 level (input quantized with NAME_INPUT_SCALE/ZP, the
 *     logits as int8 with NAME_OUTPUT_SCALE/ZP).
 * An int8 model (src/compress/qmodel.c) gives int8 C whose outputs are bit-identical to
 * qnet_forward_int8 / qnet_forward: the kernels are the reference semantics of qops.h written
 * out (convolutions requantize in IEEE single precision as ONNX Runtime does, the other ops in
 * integers; the input quantization's round-half-even done without
 * libm, bit for bit). An fp32 model (src/net/model.c) gives float C (BN applied as a
 * per-channel scale and shift, sigmoid through a libm-free exp), within a few 1e-6 of
 * net_forward relative to the largest logit; the arena then holds floats (the cost model's
 * fp32 figure).
 *
 * The generated code is not reentrant (one static arena). Two macros tune it when NAME.c is
 * compiled: NAME_ARENA_ATTR is placed on the arena's declaration (e.g. a linker section), and
 * NAME_CONV_BLK (default 16) sets the output columns per conv block: any value gives the same
 * results; 16 lets compilers vectorize, a small one wastes less on small maps on scalar cores.
 * The generated code assumes an int of at least 32 bits (checked at compile time) and an
 * arithmetic right shift of negative integers (as nasc's own kernels do).
 */
#ifndef NASC_CGEN_H
#define NASC_CGEN_H

#include <stddef.h>

#include "../core/common.h"

#define CGEN_PATH_MAX 1024
#define CGEN_NAME_MAX 64
#define CGEN_DEFAULT_NAME "nasc_model"

typedef struct {
    int int8;             /* 1: int8 model -> int8 C; 0: fp32 */
    int nodes;            /* spec nodes */
    int ops;              /* kernel calls per inference */
    size_t arena_bytes;   /* the static arena: SRAM for activations (= cost_peak_bytes of the net) */
    size_t ideal_bytes;   /* the ideal-allocator peak of the same order (the lower bound) */
    const char *arena_method; /* the arena heuristic that won (static string) */
    size_t weight_bytes;  /* const data written, exactly: weights, biases, multipliers, shifts, LUTs, tables */
    /* From compiling NAME.c (cgen_measure); measured = 0 when no compiler ran: */
    int measured;
    size_t code_bytes;    /* executable sections of the object (.text): the host ISA, -O2 */
    size_t rodata_bytes;  /* read-only data sections (the const arrays plus compiler constants) */
    size_t ram_bytes;     /* writable sections (.data + .bss: the arena and nothing else) */
    size_t flash_bytes;   /* code + rodata + .data when measured, else weight_bytes */
    size_t sram_bytes;    /* ram_bytes when measured, else arena_bytes */
    char cc[128];         /* the compile command's compiler */
    char c_path[CGEN_PATH_MAX], h_path[CGEN_PATH_MAX];
} CgenReport;

/* Writes OUT_DIR/NAME.c and OUT_DIR/NAME.h (atomically) for the model at model_path (int8 or
 * fp32, told apart by qmodel_probe). name: a C identifier of at most CGEN_NAME_MAX - 1
 * characters (NULL = CGEN_DEFAULT_NAME); out_dir is created if missing (one level). Then
 * measures the code size with cgen_measure unless $NASC_CGEN_MEASURE is "0". rep may be NULL.
 * NASC_ERR with a message for a bad name, an unreadable model or an unwritable folder. */
int cgen_export(const char *model_path, const char *out_dir, const char *name, CgenReport *rep, Err *e);

/* Compiles c_path with `$NASC_CC` (default cc) `-std=c99 -O2 -fno-asynchronous-unwind-tables
 * -c` into a temporary object next to it, reads the object's ELF section sizes (32- or 64-bit,
 * little-endian: allocated sections only, .eh_frame and notes excluded) into rep's code/rodata/
 * ram/flash/sram fields and sets rep->measured. Returns NASC_OK, or NASC_ERR with a message
 * (no compiler, a compile error, not ELF) leaving measured = 0 and flash/sram at the data-only
 * figures. */
int cgen_measure(const char *c_path, CgenReport *rep, Err *e);

#endif
