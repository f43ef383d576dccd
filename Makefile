# nasc build. `make` builds build/nasc; `make test` installs what is missing (Debian), builds,
# and runs the whole suite twice: normally, then under AddressSanitizer + UBSan (SAN=1 build).
# `make run` is the main job on Fashion-MNIST. Options: SAN=1 (sanitizers), DEBUG=1 (-O0),
# MPI=1 (OpenMPI's mpicc, -DNASC_MPI, into build-mpi/: `mpirun -np N build-mpi/nasc search ...`).

CC      ?= cc
SAN     ?= 0
DEBUG   ?= 0
MPI     ?= 0
BUILD   ?= build
ifeq ($(SAN),1)
override BUILD := $(BUILD)-san
endif
ifeq ($(MPI),1)
override BUILD := $(BUILD)-mpi
CC      := mpicc
endif

OPT      = -O3
ifeq ($(DEBUG),1)
OPT      = -O0
endif
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -g $(OPT) -Wall -Wextra -Wno-unused-parameter -fopenmp -MMD -MP
ifeq ($(MPI),1)
CFLAGS_BASE += -DNASC_MPI -pthread
endif
ifeq ($(SAN),1)
CFLAGS_BASE += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDSAN        = -fsanitize=address,undefined
endif
CFLAGS  ?=
override CFLAGS := $(CFLAGS_BASE) $(CFLAGS)
LDLIBS   = -lsqlite3 -lstb -lz -lm -lprotobuf-c
LDFLAGS += -fopenmp $(LDSAN)
ifeq ($(MPI),1)
LDFLAGS += -pthread
endif

LIB_SRC  := $(sort $(filter-out src/cli/%,$(wildcard src/*/*.c)))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
BENCH_SRC:= $(sort $(wildcard bench/*.c))
# The reference kernels, compiled in double for the gradient checker.
REF_SRC  := src/ops/conv.c src/ops/linear.c src/ops/norm.c src/ops/act.c src/ops/pool.c \
            src/ops/elem.c src/ops/loss.c src/ops/resize.c src/core/common.c

LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/onnx.pb-c.o
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
BENCHES  := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
REF_OBJ  := $(REF_SRC:%.c=$(BUILD)/ref64/%.o)

.PHONY: all deps test check run bench clean refs

all: $(BUILD)/nasc $(TESTS) $(BUILD)/tests/gradcheck $(BENCHES)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/ref64/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DNASC_REAL=double -DNASC_REF_ONLY -c $< -o $@

# ONNX (src/export): protoc-c generates the C code for Debian's onnx.proto (libonnx-dev) into
# $(BUILD)/gen at build time; the export sources need the generated header before they compile.
ONNX_PROTO := /usr/include/onnx/onnx.proto
$(BUILD)/gen/onnx.pb-c.c $(BUILD)/gen/onnx.pb-c.h &: $(ONNX_PROTO)
	@mkdir -p $(BUILD)/gen
	protoc-c --c_out=$(BUILD)/gen -I$(dir $(ONNX_PROTO)) $(ONNX_PROTO)

$(BUILD)/gen/onnx.pb-c.o: $(BUILD)/gen/onnx.pb-c.c $(BUILD)/gen/onnx.pb-c.h
	$(CC) $(CFLAGS) -w -c $< -o $@

$(filter $(BUILD)/src/export/%,$(LIB_OBJ)): $(BUILD)/gen/onnx.pb-c.h
$(filter $(BUILD)/src/export/%,$(LIB_OBJ)): override CFLAGS += -I$(BUILD)/gen

$(BUILD)/libnasc.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/nasc: $(CLI_OBJ) $(BUILD)/libnasc.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# GCC 12.2 for ARM64 (Debian 12's cross compiler; its native one is the same release) stops with
# an internal compiler error (in vect_transform_reduction) when it vectorizes a double max
# reduction over float values, fmax(m, fabs(x[i])), which the tests use to scale their
# tolerances. The tests are built without loop vectorization there; the library, which has no
# such loop, is unaffected.
ifneq ($(findstring aarch64,$(shell $(CC) -dumpmachine 2>/dev/null)),)
TEST_CFLAGS = -fno-tree-loop-vectorize
endif

$(BUILD)/tests/gradcheck: tests/gradcheck.c $(REF_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) -DNASC_REAL=double -DNASC_REF_ONLY $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: tests/%.c $(wildcard tests/*.h) $(BUILD)/libnasc.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(TEST_CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libnasc.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libnasc.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libnasc.a $(LDLIBS)

deps:
	@bash scripts/install-deps.sh

# The whole suite, plain and under ASan+UBSan. When OpenMPI is there (install-deps adds it), the
# MPI binary is built too and tests/cli_search_mpi.sh (run with the plain build) uses it.
test: deps
	$(MAKE) all
	if command -v mpicc >/dev/null && command -v mpirun >/dev/null; then $(MAKE) MPI=1 $(BUILD)-mpi/nasc; fi
	bash tests/run.sh $(BUILD)
	$(MAKE) SAN=1 all
	bash tests/run.sh $(BUILD)-san

# Only the plain build's suite (quick local loop).
check: all
	bash tests/run.sh $(BUILD)

run: deps all
	bash scripts/run.sh

bench: all
	bash bench/run.sh

# Regenerate the PyTorch reference files in tests/ref (needs python3-torch; not a CI step).
refs:
	/usr/bin/python3 scripts/make_refs.py tests/ref

clean:
	rm -rf build build-san build-mpi build-san-mpi build-arm64

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d) $(REF_OBJ:.o=.d)
