/* trials.h: the trial database, one SQLite file (WAL mode) per experiment. It holds the
 * experiment's settings and one row per trial the strategy asked: arch, canonical arch, spec,
 * fidelity, seed, status, metrics, costs, timings. It is what makes a search crash-safe.
 *
 * Resume design (see also the determinism contract in src/search/strategy.h):
 *   - A trial row is written when the trial is asked (trials_begin: status running) and
 *     completed when its result is known (trials_finish). Every write is one transaction
 *     (synchronous=FULL), so after a kill -9 the file holds every trial whose result was
 *     committed, plus at most the rows that were running.
 *   - `seq` is the ask order (0, 1, 2, ... contiguous: trials_begin refuses gaps). Each ask
 *     and each tell also takes a number from one event clock (ask_ev, tell_ev), so that the
 *     interleaving of asks and tells (which matters with several workers) is recorded too.
 *     trials_events() returns that sequence; the driver replays it into a fresh strategy
 *     with the same seed: on ASK it calls ask() and checks that the trial equals the row, on
 *     TELL it calls tell() with the recorded result. No training happens during replay.
 *   - Rows still 'running' when a writer opens the file were interrupted. They are kept,
 *     in their seq position and with their ask event (the replay re-asks them in the same
 *     place), and trials_interrupted() counts them. After the replay the driver redoes
 *     each one: trials_restart() (new start time, attempts + 1), train, trials_finish().
 *     The tell of a redone trial gets a new event number, after everything recorded, which
 *     is where it falls in a run that was never interrupted (serial runs: the last trial).
 *   - A trial is never trained twice at the same fidelity: a UNIQUE index over (canonical,
 *     fidelity) covers the rows that train (running, done, failed; not infeasible ones, and
 *     not reuse rows). When a strategy asks a canonical arch again at a fidelity already
 *     trained, the driver answers from the database: trials_find_result(), then a reuse row
 *     (reuse_of = the trained trial's seq) written with trials_record(), so the replay
 *     still sees that ask and tell.
 *   - One writer per file: a writer holds an flock(2) on the file for its whole session
 *     (released by the kernel on kill -9); readers (TRIALS_READ, `nasc report`) need no lock.
 *
 * Errors a user can cause (not a database, another application's database, a newer schema,
 * different settings on resume, a missing file on resume, an existing experiment without
 * resume, a damaged file, a file in use) return NASC_ERR/NULL with a message naming the
 * file and the problem.
 */
#ifndef NASC_TRIALS_H
#define NASC_TRIALS_H

#include "../search/strategy.h"

/* 2: trials.score (the search objective's value). A version-1 file gains the column when a writer
 * opens it (score = val_acc: version 1 only knew the accuracy objective); readers of a
 * version-1 file see score = val_acc without changing it. */
#define TRIALS_SCHEMA_VERSION 2
#define TRIALS_APP_ID 0x4E415343 /* "NASC", PRAGMA application_id */

typedef enum {
    TRIALS_CREATE, /* start a new experiment; the file must be missing, empty or an empty SQLite db */
    TRIALS_RESUME, /* continue the experiment in an existing file; settings must match */
    TRIALS_READ,   /* read only (reports); no settings check, no lock, no writes */
} TrialsMode;

/* One experiment setting (space, strategy, seed, budget, constraints, fidelities, data...).
 * Values are text, compared as text: write numbers with "%.17g" or as the user typed them.
 * may_change: a resume may change this one (e.g. the budget); the stored value is updated. */
typedef struct {
    const char *key;
    const char *value;
    int may_change;
} TrialsSetting;

typedef struct TrialsDb TrialsDb;

/* A trial's result. Unknown values: NAN for doubles, -1 for counts (stored as NULL). */
typedef struct {
    TrialStatus status;
    double val_acc; /* [0, 1]; required when status is TRIAL_OK */
    double train_acc, train_loss;
    long long params, macs, peak_bytes, flash_bytes;
    double latency_ms, predicted_latency_ms;
    double score;         /* what the search maximizes (driver.h: the accuracy, or MnasNet's reward) */
    double train_seconds; /* training wall time of this trial */
    const char *error;    /* NULL, or why it failed / is infeasible */
} TrialResult;

/* What trials_begin / trials_record write about a newly asked trial. */
typedef struct {
    long seq;              /* ask order: must be the next one (0 for the first trial) */
    long trial_id;         /* Trial.id as the strategy assigned it */
    const char *arch;      /* compact arch string */
    const char *canonical; /* space_canonical_arch() */
    const char *spec;      /* the spec text trained */
    Fidelity fid;
    uint64_t seed; /* training seed (stored as a 64-bit two's-complement integer) */
    int worker;    /* MPI rank that runs it (0 when serial) */
    long reuse_of; /* -1, or the seq of the trained trial whose result this row reuses */
} TrialBegin;

/* A row read back. Strings are owned by the row (trials_row_free / trials_rows_free). */
typedef struct {
    long seq, trial_id;
    char *arch, *canonical, *spec, *error;
    Fidelity fid;
    uint64_t seed;
    int running;              /* 1: no result yet (interrupted, or in progress elsewhere) */
    TrialResult r;            /* valid when !running; r.error points to row->error */
    long reuse_of;            /* -1 or seq of the trained trial */
    double started, finished; /* unix seconds (finished: NAN while running) */
    int worker, attempts;
    long ask_ev, tell_ev; /* event clock; tell_ev -1 while running */
} TrialRow;

typedef enum { TRIALS_EV_ASK, TRIALS_EV_TELL } TrialsEventKind;
typedef struct {
    long ev;  /* event clock value, increasing through the array */
    long seq; /* the trial */
    TrialsEventKind kind;
} TrialsEvent;

/* trials_find_result answers */
#define TRIALS_FOUND_NONE 0    /* never asked at this fidelity */
#define TRIALS_FOUND_DONE 1    /* *row holds the finished result (done, failed or infeasible) */
#define TRIALS_FOUND_RUNNING 2 /* being trained now (row->seq): wait for it, then reuse */

/* Open or create. settings (nsettings pairs) are stored on create and compared on resume
 * (ignored for TRIALS_READ). NULL with a message naming the file and the problem. */
TrialsDb *trials_open(const char *path, TrialsMode mode, const TrialsSetting *settings, int nsettings, Err *e);
void trials_close(TrialsDb *db);
const char *trials_path(const TrialsDb *db);
/* Rows that were 'running' when this writer opened the file (to redo after the replay). */
long trials_interrupted(const TrialsDb *db);

/* Writes (one transaction each). NASC_ERR with a message on a constraint violation (out of
 * order seq, a second training of the same canonical arch and fidelity, a bad result) or an
 * I/O error. */
int trials_begin(TrialsDb *db, const TrialBegin *b, Err *e);
int trials_restart(TrialsDb *db, long seq, int worker, Err *e);
int trials_finish(TrialsDb *db, long seq, const TrialResult *r, Err *e);
/* Begin and finish in one transaction: infeasible trials (never trained; costs known) and
 * answers reused from the database (b->reuse_of >= 0; same canonical and fidelity). */
int trials_record(TrialsDb *db, const TrialBegin *b, const TrialResult *r, Err *e);
int trials_mark_infeasible(TrialsDb *db, const TrialBegin *b, const TrialResult *costs, Err *e);

/* Reads. */
int trials_find_result(TrialsDb *db, const char *canonical, Fidelity fid, TrialRow *row, Err *e);
long trials_count(TrialsDb *db, Err *e);                         /* -1 on error */
int trials_list(TrialsDb *db, TrialRow **rows, long *n, Err *e); /* seq order */
int trials_get(TrialsDb *db, long seq, TrialRow *row, Err *e);   /* NASC_ERR if absent */
int trials_events(TrialsDb *db, TrialsEvent **ev, long *n, Err *e);
/* The stored settings and meta (schema_version, created, nasc_version; migrated when a
 * version-1 file was upgraded), key order; the
 * arrays and strings are allocated: free with trials_settings_free. */
int trials_settings(TrialsDb *db, TrialsSetting **kv, int *n, Err *e);
int trials_meta(TrialsDb *db, TrialsSetting **kv, int *n, Err *e);
void trials_settings_free(TrialsSetting *kv, int n);
void trials_row_free(TrialRow *row);
void trials_rows_free(TrialRow *rows, long n);
const char *trials_status_name(const TrialRow *row); /* running, done, failed, infeasible */
/* Full check: PRAGMA integrity_check, seq contiguous from 0, every finished row complete,
 * event numbers consistent. NASC_ERR with the first problem found. */
int trials_check(TrialsDb *db, Err *e);
/* An empty result: status TRIAL_OK, every value unknown. */
TrialResult trials_result_empty(void);

#endif
