/* test_trials.c: the trial database (src/store/trials.c). Create, write and read back; the
 * "never trained twice at the same fidelity" rule and the lookup that answers duplicates;
 * resume with an interrupted (running) row; every error a user can meet when opening (not
 * SQLite, empty, truncated, another application's database, newer schema, other settings,
 * missing file on resume, existing experiment without resume, a file in use); and a crash
 * test: a child process writes trials and is killed with SIGKILL at pseudo-random points (a
 * fixed schedule, counted in committed transactions reported through a pipe); after each
 * kill the file must be intact, and the final database must equal an uninterrupted run's.
 *
 *   build/tests/test_trials                  run the tests
 *   build/tests/test_trials --make-db PATH   write a small experiment (for tests/cli_report.sh)
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../src/store/trials.h"
#include "check.h"

static char tmpdir[256];

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", tmpdir, name); }

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
}

static void remove_db(const char *path) {
    char p[600];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path), unlink(p);
    snprintf(p, sizeof p, "%s-shm", path), unlink(p);
    snprintf(p, sizeof p, "%s-journal", path), unlink(p);
}

static const TrialsSetting settings[] = {
    {"space", "nb201", 0}, {"strategy", "evolution", 0}, {"seed", "7", 0},
    {"epochs", "12", 0},   {"max_params", "100000", 0},  {"trials", "50", 1},
};
#define NSET ((int)(sizeof settings / sizeof settings[0]))

/* The deterministic trial and result of position seq (what any run writes there). */
static TrialBegin begin_of(long seq, char *arch, char *canon, char *spec) {
    sprintf(arch, "arch-%ld", seq);
    sprintf(canon, "canon-%ld", seq);
    sprintf(spec, "conv 3x3 %ld\nlinear 10\n", seq);
    TrialBegin b = {seq, seq, arch, canon, spec, {4.0, 0.5}, 1000 + (uint64_t)seq, 0, -1};
    return b;
}

static TrialResult result_of(long seq) {
    TrialResult r = trials_result_empty();
    r.status = seq % 7 == 3 ? TRIAL_FAILED : TRIAL_OK;
    r.val_acc = r.status == TRIAL_OK ? (double)(seq % 97) / 100.0 : NAN;
    r.train_acc = 0.5 + (seq % 10) / 100.0;
    r.train_loss = 1.0 / (seq + 1);
    r.params = 1000 * seq + 1;
    r.macs = 77777 * seq;
    r.peak_bytes = 4096 + seq;
    r.flash_bytes = 8192 + seq;
    r.latency_ms = 0.25 * seq;
    r.predicted_latency_ms = 0.3 * seq;
    r.train_seconds = 1.5;
    r.error = r.status == TRIAL_FAILED ? "diverged" : NULL;
    return r;
}

static int same_real(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

/* Row equals the deterministic trial seq (everything but timestamps, worker, attempts). */
static int row_matches(const TrialRow *row, long seq) {
    char arch[64], canon[64], spec[128];
    TrialBegin b = begin_of(seq, arch, canon, spec);
    TrialResult r = result_of(seq);
    return row->seq == seq && row->trial_id == b.trial_id && !strcmp(row->arch, arch) &&
           !strcmp(row->canonical, canon) && !strcmp(row->spec, spec) && row->fid.epochs == b.fid.epochs &&
           row->fid.fraction == b.fid.fraction && row->seed == b.seed && !row->running && row->reuse_of == -1 &&
           row->r.status == r.status && same_real(row->r.val_acc, r.val_acc) &&
           same_real(row->r.train_acc, r.train_acc) && same_real(row->r.train_loss, r.train_loss) &&
           row->r.params == r.params && row->r.macs == r.macs && row->r.peak_bytes == r.peak_bytes &&
           row->r.flash_bytes == r.flash_bytes && same_real(row->r.latency_ms, r.latency_ms) &&
           same_real(row->r.predicted_latency_ms, r.predicted_latency_ms) &&
           same_real(row->r.train_seconds, r.train_seconds) &&
           ((!row->error && !r.error) || (row->error && r.error && !strcmp(row->error, r.error)));
}

static TrialsDb *open_ok(const char *path, TrialsMode mode) {
    Err e = {{0}};
    TrialsDb *db = trials_open(path, mode, settings, NSET, &e);
    if (!db) {
        fprintf(stderr, "cannot open %s: %s\n", path, e.msg);
        exit(1);
    }
    return db;
}

/* Opening must fail with a message that names the file and contains `want`. */
static void expect_open_error(const char *path, TrialsMode mode, const TrialsSetting *s, int n, const char *want,
                              const char *what) {
    Err e = {{0}};
    TrialsDb *db = trials_open(path, mode, s, n, &e);
    CHECK(db == NULL, "%s: open succeeded", what);
    if (db) trials_close(db);
    CHECK(strstr(e.msg, path) != NULL, "%s: message does not name the file: %s", what, e.msg);
    CHECK(strstr(e.msg, want) != NULL, "%s: message lacks '%s': %s", what, want, e.msg);
    printf("  %-28s -> %s\n", what, e.msg);
}

static void raw_exec(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK || sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK) {
        fprintf(stderr, "raw sqlite on %s failed: %s\n", path, db ? sqlite3_errmsg(db) : "?");
        exit(1);
    }
    sqlite3_close(db);
}

/* ------------------------------------------------------------------ tests */

static void test_roundtrip(void) {
    char path[300], arch[64], canon[64], spec[128];
    path_in(path, sizeof path, "rt.db");
    Err e = {{0}};
    TrialsDb *db = open_ok(path, TRIALS_CREATE);
    CHECK(trials_count(db, &e) == 0, "new db has trials");
    CHECK(trials_interrupted(db) == 0, "new db has interrupted trials");
    for (long s = 0; s < 5; s++) {
        TrialBegin b = begin_of(s, arch, canon, spec);
        TrialResult r = result_of(s);
        if (s == 2) {
            CHECK(trials_mark_infeasible(db, &b, &r, &e) == NASC_OK, "infeasible: %s", e.msg);
            continue;
        }
        CHECK(trials_begin(db, &b, &e) == NASC_OK, "begin %ld: %s", s, e.msg);
        TrialRow row;
        CHECK(trials_get(db, s, &row, &e) == NASC_OK && row.running && row.tell_ev == -1, "running row %ld", s);
        trials_row_free(&row);
        CHECK(trials_finish(db, s, &r, &e) == NASC_OK, "finish %ld: %s", s, e.msg);
    }
    CHECK(trials_check(db, &e) == NASC_OK, "check: %s", e.msg);
    trials_close(db);

    db = open_ok(path, TRIALS_READ);
    TrialRow *rows;
    long n;
    CHECK(trials_list(db, &rows, &n, &e) == NASC_OK && n == 5, "list: %ld rows", n);
    for (long i = 0; i < n; i++) {
        if (i == 2) {
            CHECK(!rows[i].running && rows[i].r.status == TRIAL_INFEASIBLE && rows[i].r.params == result_of(2).params,
                  "infeasible row");
            CHECK(!strcmp(trials_status_name(&rows[i]), "infeasible"), "status name");
        } else {
            CHECK(row_matches(&rows[i], i), "row %ld read back differs", i);
        }
        CHECK(rows[i].attempts == 1 && rows[i].started > 1e9 && rows[i].finished >= rows[i].started,
              "timestamps/attempts of row %ld", i);
    }
    CHECK(!strcmp(trials_status_name(&rows[3]), "failed") && rows[3].error && !strcmp(rows[3].error, "diverged"),
          "failed row");
    trials_rows_free(rows, n);
    TrialsEvent *ev;
    CHECK(trials_events(db, &ev, &n, &e) == NASC_OK && n == 10, "events: %ld", n);
    for (long i = 0; i < n && n == 10; i++)
        CHECK(ev[i].seq == i / 2 && ev[i].kind == (i % 2 ? TRIALS_EV_TELL : TRIALS_EV_ASK), "event %ld", i);
    free(ev);
    TrialsSetting *kv;
    int nkv;
    CHECK(trials_settings(db, &kv, &nkv, &e) == NASC_OK && nkv == NSET, "settings: %d", nkv);
    for (int i = 0; i < nkv; i++) {
        int found = 0;
        for (int j = 0; j < NSET; j++)
            found |= !strcmp(kv[i].key, settings[j].key) && !strcmp(kv[i].value, settings[j].value);
        CHECK(found, "setting %s=%s not given", kv[i].key, kv[i].value);
    }
    trials_settings_free(kv, nkv);
    CHECK(trials_meta(db, &kv, &nkv, &e) == NASC_OK && nkv == 3, "meta: %d", nkv);
    for (int i = 0; i < nkv; i++)
        if (!strcmp(kv[i].key, "schema_version")) CHECK(atoi(kv[i].value) == TRIALS_SCHEMA_VERSION, "schema_version");
    trials_settings_free(kv, nkv);
    /* read-only: writes refused */
    TrialBegin b = begin_of(5, arch, canon, spec);
    CHECK(trials_begin(db, &b, &e) == NASC_ERR && strstr(e.msg, "read-only"), "write on read-only: %s", e.msg);
    trials_close(db);
    char wal[320];
    snprintf(wal, sizeof wal, "%s-wal", path);
    CHECK(access(wal, F_OK) != 0, "a reader left %s behind", wal);

    /* The pragmas a reader of the file sees. */
    sqlite3 *raw;
    sqlite3_open(path, &raw);
    sqlite3_stmt *st;
    sqlite3_prepare_v2(raw,
                       "SELECT (SELECT application_id FROM pragma_application_id), "
                       "(SELECT user_version FROM pragma_user_version), (SELECT journal_mode FROM pragma_journal_mode)",
                       -1, &st, NULL);
    CHECK(sqlite3_step(st) == SQLITE_ROW, "pragmas");
    CHECK(sqlite3_column_int64(st, 0) == TRIALS_APP_ID, "application_id");
    CHECK(sqlite3_column_int(st, 1) == TRIALS_SCHEMA_VERSION, "user_version");
    CHECK(!strcmp((const char *)sqlite3_column_text(st, 2), "wal"), "journal_mode %s", sqlite3_column_text(st, 2));
    sqlite3_finalize(st);
    sqlite3_close(raw);
}

static void test_unique(void) {
    char path[300], arch[64], canon[64], spec[128];
    path_in(path, sizeof path, "uniq.db");
    Err e = {{0}};
    TrialsDb *db = open_ok(path, TRIALS_CREATE);
    TrialBegin b0 = begin_of(0, arch, canon, spec);
    TrialResult r0 = result_of(0);
    r0.val_acc = 0.8;
    CHECK(trials_begin(db, &b0, &e) == NASC_OK, "begin 0: %s", e.msg);

    /* A duplicate ask while the first is training: lookup says RUNNING, training it is refused. */
    TrialRow row;
    CHECK(trials_find_result(db, canon, b0.fid, &row, &e) == TRIALS_FOUND_RUNNING && row.seq == 0, "running lookup");
    trials_row_free(&row);
    TrialBegin dup = b0;
    dup.seq = 1, dup.trial_id = 1, dup.arch = "another-arch-same-function";
    CHECK(trials_begin(db, &dup, &e) == NASC_ERR && strstr(e.msg, "never trained twice") &&
              strstr(e.msg, "being trained"),
          "duplicate while running: %s", e.msg);
    dup.reuse_of = 0;
    CHECK(trials_record(db, &dup, &r0, &e) == NASC_ERR, "reuse of a running trial accepted");
    CHECK(trials_finish(db, 0, &r0, &e) == NASC_OK, "finish 0: %s", e.msg);
    CHECK(trials_finish(db, 0, &r0, &e) == NASC_ERR && strstr(e.msg, "not running"), "finish twice: %s", e.msg);

    /* Now answered from the database and recorded as a reuse row. */
    CHECK(trials_find_result(db, canon, b0.fid, &row, &e) == TRIALS_FOUND_DONE && row.seq == 0 && row.r.val_acc == 0.8,
          "done lookup");
    trials_row_free(&row);
    dup.reuse_of = -1;
    CHECK(trials_begin(db, &dup, &e) == NASC_ERR && strstr(e.msg, "never trained twice") && strstr(e.msg, "trial 0"),
          "duplicate after done: %s", e.msg);
    dup.reuse_of = 0;
    CHECK(trials_record(db, &dup, &r0, &e) == NASC_OK, "reuse row: %s", e.msg);
    /* the same arch at another fidelity trains */
    TrialBegin hi = b0;
    hi.seq = 2, hi.trial_id = 2, hi.fid.epochs = 12;
    CHECK(trials_find_result(db, canon, hi.fid, &row, &e) == TRIALS_FOUND_NONE, "other fidelity found");
    CHECK(trials_begin(db, &hi, &e) == NASC_OK, "other fidelity: %s", e.msg);
    TrialResult bad = trials_result_empty();
    CHECK(trials_finish(db, 2, &bad, &e) == NASC_ERR && strstr(e.msg, "val_acc"), "done without val_acc: %s", e.msg);
    bad.val_acc = 1.5;
    CHECK(trials_finish(db, 2, &bad, &e) == NASC_ERR, "val_acc 1.5 accepted");
    CHECK(trials_finish(db, 2, &r0, &e) == NASC_OK, "finish 2: %s", e.msg);
    /* infeasible duplicates are allowed (never trained) and do not block training */
    TrialBegin inf = begin_of(50, arch, canon, spec);
    inf.seq = 3, inf.trial_id = 3;
    CHECK(trials_mark_infeasible(db, &inf, NULL, &e) == NASC_OK, "infeasible: %s", e.msg);
    inf.seq = 4, inf.trial_id = 4;
    CHECK(trials_mark_infeasible(db, &inf, NULL, &e) == NASC_OK, "infeasible twice: %s", e.msg);
    CHECK(trials_find_result(db, canon, inf.fid, &row, &e) == TRIALS_FOUND_DONE && row.seq == 3 &&
              row.r.status == TRIAL_INFEASIBLE,
          "infeasible lookup");
    trials_row_free(&row);
    /* seq must be the next one */
    TrialBegin gap = begin_of(9, arch, canon, spec);
    CHECK(trials_begin(db, &gap, &e) == NASC_ERR && strstr(e.msg, "out of order"), "gap: %s", e.msg);
    gap.seq = 4;
    CHECK(trials_begin(db, &gap, &e) == NASC_ERR, "seq reused");
    gap.seq = 5;
    gap.fid.fraction = 0;
    CHECK(trials_begin(db, &gap, &e) == NASC_ERR && strstr(e.msg, "fidelity"), "bad fidelity: %s", e.msg);
    CHECK(trials_count(db, &e) == 5, "count after refused writes");
    CHECK(trials_check(db, &e) == NASC_OK, "check: %s", e.msg);

    /* The rule is the schema's, not only the API's. */
    sqlite3 *raw;
    sqlite3_open(path, &raw);
    CHECK(
        sqlite3_exec(raw,
                     "INSERT INTO trials(seq, trial_id, arch, canonical, spec, fid_epochs, fid_fraction, seed, status, "
                     "val_acc, started, finished, ask_ev, tell_ev) SELECT 5, 5, arch, canonical, spec, fid_epochs, "
                     "fid_fraction, 1, 'done', 0.5, 0, 0, 100, 101 FROM trials WHERE seq = 0",
                     NULL, NULL, NULL) == SQLITE_CONSTRAINT,
        "schema lets a trial train twice");
    sqlite3_close(raw);
    trials_close(db);
}

static void test_resume(void) {
    char path[300], arch[64], canon[64], spec[128];
    path_in(path, sizeof path, "resume.db");
    Err e = {{0}};
    TrialsDb *db = open_ok(path, TRIALS_CREATE);
    for (long s = 0; s < 3; s++) {
        TrialBegin b = begin_of(s, arch, canon, spec);
        TrialResult r = result_of(s);
        CHECK(trials_begin(db, &b, &e) == NASC_OK && trials_finish(db, s, &r, &e) == NASC_OK, "write %ld", s);
    }
    TrialBegin b3 = begin_of(3, arch, canon, spec);
    CHECK(trials_begin(db, &b3, &e) == NASC_OK, "begin 3");
    trials_close(db); /* as if killed while training trial 3 */

    /* A changed budget is accepted and stored; a changed seed is not. */
    TrialsSetting more[NSET];
    memcpy(more, settings, sizeof more);
    more[NSET - 1].value = "80";
    db = trials_open(path, TRIALS_RESUME, more, NSET, &e);
    CHECK(db != NULL, "resume: %s", e.msg);
    if (!db) return;
    CHECK(trials_interrupted(db) == 1, "interrupted: %ld", trials_interrupted(db));
    TrialRow *rows;
    long n;
    CHECK(trials_list(db, &rows, &n, &e) == NASC_OK && n == 4 && rows[3].running && rows[3].seq == 3, "running kept");
    trials_rows_free(rows, n);
    TrialResult r3 = result_of(3);
    CHECK(trials_restart(db, 2, 0, &e) == NASC_ERR, "restart of a done trial");
    CHECK(trials_restart(db, 3, 1, &e) == NASC_OK, "restart: %s", e.msg);
    CHECK(trials_finish(db, 3, &r3, &e) == NASC_OK, "finish redone: %s", e.msg);
    TrialRow row;
    CHECK(trials_get(db, 3, &row, &e) == NASC_OK && row_matches(&row, 3) && row.attempts == 2 && row.worker == 1,
          "redone row");
    trials_row_free(&row);
    TrialsEvent *ev;
    CHECK(trials_events(db, &ev, &n, &e) == NASC_OK && n == 8, "events %ld", n);
    if (n == 8)
        CHECK(ev[6].seq == 3 && ev[6].kind == TRIALS_EV_ASK && ev[7].seq == 3 && ev[7].kind == TRIALS_EV_TELL,
              "redone trial keeps its ask position");
    free(ev);
    TrialsSetting *kv;
    int nkv;
    trials_settings(db, &kv, &nkv, &e);
    for (int i = 0; i < nkv; i++)
        if (!strcmp(kv[i].key, "trials")) CHECK(!strcmp(kv[i].value, "80"), "budget not updated: %s", kv[i].value);
    trials_settings_free(kv, nkv);
    trials_close(db);
}

static void test_open_errors(void) {
    char path[300], other[300];
    Err e = {{0}};

    path_in(path, sizeof path, "missing.db");
    expect_open_error(path, TRIALS_RESUME, settings, NSET, "no experiment to resume", "missing file, resume");
    expect_open_error(path, TRIALS_READ, NULL, 0, "no such file", "missing file, read");
    CHECK(access(path, F_OK) != 0, "resume created the missing file");

    path_in(path, sizeof path, "text.db");
    const char text[] = "space nb201\nthis is a text file, not a database, long enough to have a header......\n";
    write_file(path, text, sizeof text - 1);
    expect_open_error(path, TRIALS_CREATE, settings, NSET, "not an SQLite file", "text file, create");
    expect_open_error(path, TRIALS_RESUME, settings, NSET, "not an SQLite file", "text file, resume");
    FILE *f = fopen(path, "rb");
    char back[sizeof text];
    CHECK(f && fread(back, 1, sizeof text - 1, f) == sizeof text - 1 && !memcmp(back, text, sizeof text - 1),
          "text file modified");
    if (f) fclose(f);

    /* An empty file is an empty database: a new experiment may start in it, a resume may not. */
    path_in(path, sizeof path, "empty.db");
    write_file(path, "", 0);
    expect_open_error(path, TRIALS_RESUME, settings, NSET, "no experiment to resume", "empty file, resume");
    TrialsDb *db = trials_open(path, TRIALS_CREATE, settings, NSET, &e);
    CHECK(db != NULL, "empty file, create: %s", e.msg);
    trials_close(db);
    expect_open_error(path, TRIALS_CREATE, settings, NSET, "already holds an experiment", "existing experiment");
    expect_open_error(path, TRIALS_CREATE, settings, NSET, "--resume", "existing experiment (hint)");

    /* A writer holds the file; a second writer is refused, a reader is not. */
    db = open_ok(path, TRIALS_RESUME);
    expect_open_error(path, TRIALS_RESUME, settings, NSET, "in use by another nasc process", "file in use");
    TrialsDb *rd = trials_open(path, TRIALS_READ, NULL, 0, &e);
    CHECK(rd != NULL, "reader while a writer runs: %s", e.msg);
    trials_close(rd);
    trials_close(db);

    /* Another application's SQLite databases. */
    path_in(path, sizeof path, "other.db");
    raw_exec(path, "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'x');");
    expect_open_error(path, TRIALS_CREATE, settings, NSET, "another application", "foreign db, create");
    expect_open_error(path, TRIALS_RESUME, settings, NSET, "another application", "foreign db, resume");
    path_in(path, sizeof path, "other_id.db");
    raw_exec(path, "PRAGMA application_id = 1598903374; CREATE TABLE t(x);");
    expect_open_error(path, TRIALS_RESUME, settings, NSET, "application_id 0x5f4d544e", "foreign application_id");
    path_in(path, sizeof path, "half.db");
    raw_exec(path, "PRAGMA application_id = 1312904003; PRAGMA user_version = 1; CREATE TABLE meta(k, v);");
    expect_open_error(path, TRIALS_RESUME, settings, NSET, "missing", "nasc id without tables");

    /* A newer schema. */
    path_in(path, sizeof path, "newer.db");
    trials_close(open_ok(path, TRIALS_CREATE));
    raw_exec(path, "PRAGMA user_version = 3;");
    expect_open_error(path, TRIALS_RESUME, settings, NSET, "newer nasc", "newer schema");
    expect_open_error(path, TRIALS_READ, NULL, 0, "schema version 3", "newer schema, read");

    /* Other settings: the message names each one that differs. */
    path_in(path, sizeof path, "settings.db");
    trials_close(open_ok(path, TRIALS_CREATE));
    TrialsSetting changed[NSET];
    memcpy(changed, settings, sizeof changed);
    changed[2].value = "8";      /* seed */
    changed[1].value = "random"; /* strategy */
    expect_open_error(path, TRIALS_RESUME, changed, NSET, "seed: stored '7', this command '8'", "other settings");
    expect_open_error(path, TRIALS_RESUME, changed, NSET, "strategy: stored 'evolution', this command 'random'",
                      "other settings (2)");
    expect_open_error(path, TRIALS_RESUME, settings, NSET - 2, "max_params: stored '100000', this command (not set)",
                      "missing setting");
    TrialsSetting extra[NSET + 1];
    memcpy(extra, settings, sizeof settings);
    extra[NSET] = (TrialsSetting){"target", "mcu", 0};
    expect_open_error(path, TRIALS_RESUME, extra, NSET + 1, "target: stored (not set), this command 'mcu'",
                      "extra setting");

    /* A truncated database: a real file with trials, cut in half. */
    path_in(path, sizeof path, "trunc.db");
    db = open_ok(path, TRIALS_CREATE);
    for (long s = 0; s < 200; s++) {
        char arch[64], canon[64], spec[128];
        TrialBegin b = begin_of(s, arch, canon, spec);
        TrialResult r = result_of(s);
        trials_record(db, &b, &r, &e);
    }
    trials_close(db);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && sb.st_size > 8192, "trunc.db size %lld", (long long)sb.st_size);
    CHECK(truncate(path, sb.st_size / 2) == 0, "truncate");
    expect_open_error(path, TRIALS_RESUME, settings, NSET, "damaged", "truncated db");
    CHECK(truncate(path, 50) == 0, "truncate to 50 bytes");
    expect_open_error(path, TRIALS_RESUME, settings, NSET, "damaged", "truncated to 50 bytes");

    /* A folder. */
    expect_open_error(tmpdir, TRIALS_CREATE, settings, NSET, "not a regular file", "a folder");
    path_in(other, sizeof other, "nofolder/x.db");
    expect_open_error(other, TRIALS_CREATE, settings, NSET, "cannot open", "missing folder");
}

/* A schema-1 file (no trials.score): readers see score = val_acc and leave the file alone; a
 * writer (resume) upgrades it in place to the current schema, keeping every row. */
static void test_migrate(void) {
    char path[300], arch[64], canon[64], spec[128];
    Err e = {{0}};
    path_in(path, sizeof path, "v1.db");
    TrialsDb *db = open_ok(path, TRIALS_CREATE);
    for (long s = 0; s < 6; s++) {
        TrialBegin b = begin_of(s, arch, canon, spec);
        TrialResult r = result_of(s);
        CHECK(trials_record(db, &b, &r, &e) == NASC_OK, "record %ld: %s", s, e.msg);
    }
    trials_close(db);
    raw_exec(path, "ALTER TABLE trials DROP COLUMN score; PRAGMA user_version = 1; "
                   "UPDATE meta SET value = '1' WHERE key = 'schema_version';");
    for (int pass = 0; pass < 2; pass++) { /* 0: read as version 1; 1: after the upgrade */
        if (pass == 1) trials_close(open_ok(path, TRIALS_RESUME));
        db = trials_open(path, TRIALS_READ, NULL, 0, &e);
        CHECK(db != NULL, "open %s (pass %d): %s", path, pass, e.msg);
        if (!db) return;
        TrialRow *rows;
        long n = 0;
        CHECK(trials_list(db, &rows, &n, &e) == NASC_OK && n == 6, "list (pass %d): %ld rows, %s", pass, n, e.msg);
        for (long i = 0; i < n; i++) {
            CHECK(row_matches(&rows[i], i), "row %ld changed (pass %d)", i, pass);
            CHECK(same_real(rows[i].r.score, rows[i].r.status == TRIAL_OK ? rows[i].r.val_acc : NAN),
                  "row %ld: score %g, val_acc %g (pass %d)", i, rows[i].r.score, rows[i].r.val_acc, pass);
        }
        trials_rows_free(rows, n);
        TrialsSetting *kv;
        int nkv, ver = -1, migrated = 0;
        CHECK(trials_meta(db, &kv, &nkv, &e) == NASC_OK, "meta: %s", e.msg);
        for (int i = 0; i < nkv; i++) {
            if (!strcmp(kv[i].key, "schema_version")) ver = atoi(kv[i].value);
            migrated |= !strcmp(kv[i].key, "migrated");
        }
        trials_settings_free(kv, nkv);
        trials_close(db);
        CHECK(ver == (pass ? TRIALS_SCHEMA_VERSION : 1) && migrated == pass, "pass %d: schema_version %d, migrated %d",
              pass, ver, migrated);
    }
    /* The upgraded file takes new trials with their score. */
    db = open_ok(path, TRIALS_RESUME);
    TrialBegin b = begin_of(6, arch, canon, spec);
    TrialResult r = result_of(6);
    r.score = 0.125;
    CHECK(trials_record(db, &b, &r, &e) == NASC_OK, "record after the upgrade: %s", e.msg);
    TrialRow row;
    CHECK(trials_get(db, 6, &row, &e) == NASC_OK && row.r.score == 0.125, "score after the upgrade");
    trials_row_free(&row);
    trials_close(db);
    printf("  schema 1 -> %d upgrade        ok\n", TRIALS_SCHEMA_VERSION);
}

/* ------------------------------------------------------------------ crash test */

#define CRASH_TRIALS 40

/* The child: opens (resume, else create), redoes an interrupted trial, then writes trials
 * until CRASH_TRIALS, one transaction each, reporting each commit with a byte on fd. */
static _Noreturn void crash_child(const char *path, int fd) {
    Err e = {{0}};
    TrialsDb *db = trials_open(path, TRIALS_RESUME, settings, NSET, &e);
    if (!db) db = trials_open(path, TRIALS_CREATE, settings, NSET, &e);
    if (!db) {
        fprintf(stderr, "child: %s\n", e.msg);
        _exit(3);
    }
    char arch[64], canon[64], spec[128];
    if (write(fd, "o", 1) != 1) _exit(4);
    long n = trials_count(db, &e);
    if (n > 0) {
        TrialRow last;
        if (trials_get(db, n - 1, &last, &e) != NASC_OK) _exit(5);
        if (last.running) {
            TrialResult r = result_of(n - 1);
            if (trials_restart(db, n - 1, 0, &e) != NASC_OK || trials_finish(db, n - 1, &r, &e) != NASC_OK) _exit(6);
            if (write(fd, "r", 1) != 1) _exit(4);
        }
        trials_row_free(&last);
    }
    for (long s = n; s < CRASH_TRIALS; s++) {
        TrialBegin b = begin_of(s, arch, canon, spec);
        TrialResult r = result_of(s);
        if (trials_begin(db, &b, &e) != NASC_OK) {
            fprintf(stderr, "child: %s\n", e.msg);
            _exit(7);
        }
        if (write(fd, "b", 1) != 1) _exit(4);
        if (trials_finish(db, s, &r, &e) != NASC_OK) {
            fprintf(stderr, "child: %s\n", e.msg);
            _exit(7);
        }
        if (write(fd, "f", 1) != 1) _exit(4);
    }
    trials_close(db);
    _exit(0);
}

/* After a kill: the file is intact, rows contiguous, at most one running row (the last),
 * every finished row is exactly the deterministic trial. Returns the row count. */
static long verify_after_kill(const char *path, int round) {
    Err e = {{0}};
    struct stat sb;
    if (stat(path, &sb) != 0 || sb.st_size == 0) return 0; /* killed before creating */
    TrialsDb *db = trials_open(path, TRIALS_READ, NULL, 0, &e);
    if (!db) {
        /* killed before the schema committed: an empty database */
        CHECK(strstr(e.msg, "empty database") != NULL, "round %d: reopen: %s", round, e.msg);
        return 0;
    }
    CHECK(trials_check(db, &e) == NASC_OK, "round %d: check: %s", round, e.msg);
    TrialRow *rows;
    long n = 0;
    CHECK(trials_list(db, &rows, &n, &e) == NASC_OK, "round %d: list: %s", round, e.msg);
    long running = 0;
    for (long i = 0; i < n; i++) {
        CHECK(rows[i].seq == i, "round %d: seq %ld at %ld", round, rows[i].seq, i);
        if (rows[i].running) {
            running++;
            CHECK(i == n - 1, "round %d: running row %ld is not the last", round, i);
        } else {
            CHECK(row_matches(&rows[i], i), "round %d: row %ld differs", round, i);
        }
    }
    CHECK(running <= 1, "round %d: %ld running rows", round, running);
    trials_rows_free(rows, n);
    trials_close(db);
    return n;
}

static void test_crash(void) {
    char path[300], ref[300], arch[64], canon[64], spec[128];
    path_in(path, sizeof path, "crash.db");
    path_in(ref, sizeof ref, "uninterrupted.db");
    Rng rng;
    rng_seed(&rng, 20240607);
    int kills = 0, mid_running = 0;
    long rows = 0;
    for (int round = 0; round < 60 && rows < CRASH_TRIALS; round++) {
        int p[2];
        if (pipe(p) != 0) nasc_die("pipe: %s", strerror(errno));
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) nasc_die("fork: %s", strerror(errno));
        if (pid == 0) {
            close(p[0]);
            crash_child(path, p[1]);
        }
        close(p[1]);
        /* kill after k commits: 0 (before or during the open) to 12 */
        int k = (int)rng_below(&rng, 13), got = 0;
        char c;
        while (got < k && read(p[0], &c, 1) == 1) got++;
        int status = 0;
        if (got == k) {
            kill(pid, SIGKILL);
            kills++;
        }
        waitpid(pid, &status, 0);
        close(p[0]);
        CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) || (WIFEXITED(status) && WEXITSTATUS(status) == 0),
              "round %d: child ended with status %d", round, status);
        rows = verify_after_kill(path, round);
        if (rows > 0) {
            TrialsDb *db = open_ok(path, TRIALS_READ);
            TrialRow last;
            if (trials_get(db, rows - 1, &last, NULL) == NASC_OK) {
                mid_running += last.running;
                if (last.running) rows--; /* not finished: run another round */
                trials_row_free(&last);
            }
            trials_close(db);
        }
    }
    printf("  crash test: %d kills, %d left a running row\n", kills, mid_running);
    CHECK(kills >= 5, "only %d kills", kills);
    CHECK(rows == CRASH_TRIALS, "the killed experiment did not complete (%ld rows)", rows);

    /* The same experiment, uninterrupted. */
    Err e = {{0}};
    TrialsDb *db = open_ok(ref, TRIALS_CREATE);
    for (long s = 0; s < CRASH_TRIALS; s++) {
        TrialBegin b = begin_of(s, arch, canon, spec);
        TrialResult r = result_of(s);
        CHECK(trials_begin(db, &b, &e) == NASC_OK && trials_finish(db, s, &r, &e) == NASC_OK, "ref %ld: %s", s, e.msg);
    }
    TrialsEvent *ev_ref, *ev;
    long n_ref, n;
    trials_events(db, &ev_ref, &n_ref, &e);
    trials_close(db);
    db = open_ok(path, TRIALS_RESUME);
    CHECK(trials_interrupted(db) == 0, "interrupted after completion");
    TrialRow *r;
    CHECK(trials_list(db, &r, &n, &e) == NASC_OK && n == CRASH_TRIALS, "final rows %ld", n);
    for (long i = 0; i < n; i++) CHECK(row_matches(&r[i], i), "final row %ld differs from the uninterrupted run", i);
    trials_rows_free(r, n);
    /* the same ask/tell sequence (event numbers may differ only by position, not order) */
    trials_events(db, &ev, &n, &e);
    CHECK(n == n_ref, "events %ld vs %ld", n, n_ref);
    for (long i = 0; i < n && i < n_ref; i++)
        CHECK(ev[i].seq == ev_ref[i].seq && ev[i].kind == ev_ref[i].kind, "event %ld differs", i);
    free(ev);
    free(ev_ref);
    CHECK(trials_check(db, &e) == NASC_OK, "final check: %s", e.msg);
    trials_close(db);
}

static void cleanup(void) {
    static const char *names[] = {"rt.db",    "uniq.db",     "resume.db",        "text.db",   "empty.db",
                                  "other.db", "other_id.db", "half.db",          "newer.db",  "settings.db",
                                  "trunc.db", "crash.db",    "uninterrupted.db", "missing.db", "v1.db"};
    char p[300];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        path_in(p, sizeof p, names[i]);
        remove_db(p);
    }
    if (rmdir(tmpdir) != 0) fprintf(stderr, "warning: cannot remove %s: %s\n", tmpdir, strerror(errno));
}

/* `test_trials --make-db PATH`: a small finished experiment for tests/cli_report.sh. */
static int make_db(const char *path) {
    char arch[64], canon[64], spec[128];
    Err e = {{0}};
    TrialsDb *db = open_ok(path, TRIALS_CREATE);
    for (long s = 0; s < 12; s++) {
        TrialBegin b = begin_of(s, arch, canon, spec);
        TrialResult r = result_of(s);
        if (s == 5) r.status = TRIAL_INFEASIBLE;
        if (trials_record(db, &b, &r, &e) != NASC_OK) {
            fprintf(stderr, "%s\n", e.msg);
            return 1;
        }
    }
    trials_close(db);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--make-db")) return make_db(argv[2]);
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/nasc-trials-XXXXXX", base);
    if (!mkdtemp(tmpdir)) nasc_die("mkdtemp %s: %s", tmpdir, strerror(errno));
    test_roundtrip();
    test_unique();
    test_resume();
    test_open_errors();
    test_migrate();
    test_crash();
    cleanup();
    return check_summary("test_trials");
}
