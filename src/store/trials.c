/* trials.c: the trial database on SQLite (see trials.h for the resume design).
 *
 * Opening classifies the file before touching it: missing, empty (a new database), not an
 * SQLite file, an SQLite file of another application (application_id, or tables that are
 * not ours), a nasc file from a newer schema, a damaged file (quick_check). Only then does a
 * writer switch on WAL, take the writer lock and create the schema or check the settings.
 *
 * Durability: journal_mode=WAL with synchronous=FULL, so a committed trial survives a power
 * loss as well as a kill; a commit costs one fsync of the WAL, nothing next to training a
 * network. Every write is one BEGIN IMMEDIATE ... COMMIT transaction; the schema's CHECK
 * constraints make a half-written row impossible to commit.
 */
#include "trials.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUSY_TIMEOUT_MS 10000

struct TrialsDb {
    sqlite3 *db;
    char *path;
    int lock_fd; /* flock(LOCK_EX) held by a writer, -1 for readers */
    TrialsMode mode;
    long interrupted;
    int version; /* the file's schema version (readers of an older one adapt their queries) */
};

static const char schema_sql[] =
    "CREATE TABLE meta(\n"
    "  key   TEXT PRIMARY KEY,\n"
    "  value TEXT NOT NULL\n"
    ") WITHOUT ROWID;\n"
    "CREATE TABLE settings(\n"
    "  key   TEXT PRIMARY KEY,\n"
    "  value TEXT NOT NULL\n"
    ") WITHOUT ROWID;\n"
    "CREATE TABLE trials(\n"
    "  seq          INTEGER PRIMARY KEY CHECK (seq >= 0),\n"
    "  trial_id     INTEGER NOT NULL,\n"
    "  arch         TEXT NOT NULL,\n"
    "  canonical    TEXT NOT NULL,\n"
    "  spec         TEXT NOT NULL,\n"
    "  fid_epochs   REAL NOT NULL CHECK (fid_epochs >= 0),\n"
    "  fid_fraction REAL NOT NULL CHECK (fid_fraction > 0 AND fid_fraction <= 1),\n"
    "  seed         INTEGER NOT NULL,\n"
    "  status       TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed', 'infeasible')),\n"
    "  reuse_of     INTEGER REFERENCES trials(seq),\n"
    "  val_acc      REAL CHECK (val_acc IS NULL OR (val_acc >= 0 AND val_acc <= 1)),\n"
    "  train_acc    REAL,\n"
    "  train_loss   REAL,\n"
    "  params       INTEGER,\n"
    "  macs         INTEGER,\n"
    "  peak_bytes   INTEGER,\n"
    "  flash_bytes  INTEGER,\n"
    "  latency_ms   REAL,\n"
    "  predicted_latency_ms REAL,\n"
    "  score        REAL,\n"
    "  train_seconds REAL,\n"
    "  started      REAL NOT NULL,\n"
    "  finished     REAL,\n"
    "  worker       INTEGER NOT NULL DEFAULT 0,\n"
    "  attempts     INTEGER NOT NULL DEFAULT 1,\n"
    "  error        TEXT,\n"
    "  ask_ev       INTEGER NOT NULL UNIQUE,\n"
    "  tell_ev      INTEGER UNIQUE,\n"
    "  CHECK (status <> 'running' OR (tell_ev IS NULL AND finished IS NULL)),\n"
    "  CHECK (status = 'running' OR (tell_ev IS NOT NULL AND finished IS NOT NULL AND tell_ev > ask_ev)),\n"
    "  CHECK (status <> 'done' OR val_acc IS NOT NULL),\n"
    "  CHECK (reuse_of IS NULL OR reuse_of < seq)\n"
    ");\n"
    "CREATE UNIQUE INDEX trials_trained_once ON trials(canonical, fid_epochs, fid_fraction)\n"
    "  WHERE reuse_of IS NULL AND status <> 'infeasible';\n"
    "CREATE INDEX trials_by_status ON trials(status, val_acc);\n";

static const char *status_names[] = {"done", "infeasible", "failed"}; /* by TrialStatus */

/* ------------------------------------------------------------------ helpers */

static int sql_fail(TrialsDb *db, Err *e, const char *what) {
    err_set(e, "%s: %s: %s", db->path, what, sqlite3_errmsg(db->db));
    return NASC_ERR;
}

static int exec(TrialsDb *db, const char *sql, Err *e) {
    char *msg = NULL;
    if (sqlite3_exec(db->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        err_set(e, "%s: %s", db->path, msg ? msg : sqlite3_errmsg(db->db));
        sqlite3_free(msg);
        return NASC_ERR;
    }
    return NASC_OK;
}

static int begin_tx(TrialsDb *db, Err *e) {
    if (db->mode == TRIALS_READ) {
        err_set(e, "%s: opened read-only", db->path);
        return NASC_ERR;
    }
    return exec(db, "BEGIN IMMEDIATE", e);
}

static int commit_tx(TrialsDb *db, Err *e) {
    if (exec(db, "COMMIT", e) != NASC_OK) {
        sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
        return NASC_ERR;
    }
    return NASC_OK;
}

static int rollback(TrialsDb *db) {
    if (!sqlite3_get_autocommit(db->db)) sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
    return NASC_ERR;
}

static sqlite3_stmt *prep(TrialsDb *db, const char *sql, Err *e) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->db, sql, -1, &st, NULL) != SQLITE_OK) {
        sql_fail(db, e, "cannot prepare a query");
        return NULL;
    }
    return st;
}

static void bind_real(sqlite3_stmt *st, int i, double v) {
    if (isnan(v))
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_double(st, i, v);
}

static void bind_count(sqlite3_stmt *st, int i, long long v) {
    if (v < 0)
        sqlite3_bind_null(st, i);
    else
        sqlite3_bind_int64(st, i, v);
}

static void bind_text(sqlite3_stmt *st, int i, const char *s) {
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static double col_real(sqlite3_stmt *st, int i) {
    return sqlite3_column_type(st, i) == SQLITE_NULL ? NAN : sqlite3_column_double(st, i);
}

static long long col_count(sqlite3_stmt *st, int i) {
    return sqlite3_column_type(st, i) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, i);
}

static char *col_str(sqlite3_stmt *st, int i) {
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? xstrdup((const char *)s) : NULL;
}

static double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One integer from a query without parameters; NASC_ERR with a message. */
static int query_int(TrialsDb *db, const char *sql, long long *out, Err *e) {
    sqlite3_stmt *st = prep(db, sql, e);
    if (!st) return NASC_ERR;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        if (rc == SQLITE_DONE) {
            err_set(e, "%s: query returned no row", db->path);
            return NASC_ERR;
        }
        return sql_fail(db, e, "cannot read");
    }
    *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return NASC_OK;
}

TrialResult trials_result_empty(void) {
    TrialResult r;
    r.status = TRIAL_OK;
    r.val_acc = r.train_acc = r.train_loss = NAN;
    r.params = r.macs = r.peak_bytes = r.flash_bytes = -1;
    r.latency_ms = r.predicted_latency_ms = r.score = r.train_seconds = NAN;
    r.error = NULL;
    return r;
}

/* ------------------------------------------------------------------ open */

/* Classifies an opened file. Returns 0: empty (no tables, no application id), 1: a nasc
 * database of a readable schema, NASC_ERR: anything else (message set). */
static int classify(TrialsDb *db, Err *e) {
    long long app = 0, ver = 0, ntables = 0;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db->db, "PRAGMA application_id", -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) app = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW) {
        int ec = sqlite3_errcode(db->db);
        if (ec == SQLITE_NOTADB)
            err_set(e, "%s: not a nasc trial database (not an SQLite file)%s", db->path,
                    db->mode == TRIALS_READ ? "" : "; give another --db");
        else if (ec == SQLITE_CORRUPT)
            err_set(e, "%s: the database file is damaged (%s)", db->path, sqlite3_errmsg(db->db));
        else if (ec == SQLITE_BUSY)
            err_set(e, "%s: locked by another process (%s)", db->path, sqlite3_errmsg(db->db));
        else
            err_set(e, "%s: cannot read the database: %s", db->path, sqlite3_errmsg(db->db));
        return NASC_ERR;
    }
    if (query_int(db, "PRAGMA user_version", &ver, e) != NASC_OK) return NASC_ERR;
    if (query_int(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table'", &ntables, e) != NASC_OK) {
        err_set(e, "%s: the database file is damaged (%s)", db->path, sqlite3_errmsg(db->db));
        return NASC_ERR;
    }
    if (app == 0 && ntables == 0 && ver == 0) return 0;
    if (app != TRIALS_APP_ID) {
        if (app == 0)
            err_set(e,
                    "%s: an SQLite database of another application (%lld table%s, no nasc application id), "
                    "not a nasc trial database%s",
                    db->path, ntables, ntables == 1 ? "" : "s", db->mode == TRIALS_READ ? "" : "; give another --db");
        else
            err_set(e,
                    "%s: an SQLite database of another application (application_id 0x%08llx; nasc uses 0x%08x), "
                    "not a nasc trial database%s",
                    db->path, (unsigned long long)(uint32_t)app, (unsigned)TRIALS_APP_ID,
                    db->mode == TRIALS_READ ? "" : "; give another --db");
        return NASC_ERR;
    }
    if (ver > TRIALS_SCHEMA_VERSION) {
        err_set(e,
                "%s: written by a newer nasc (trial database schema version %lld; this nasc reads up to %d); "
                "use a newer nasc",
                db->path, ver, TRIALS_SCHEMA_VERSION);
        return NASC_ERR;
    }
    if (ver < 1) {
        err_set(e, "%s: an incomplete nasc trial database (schema version %lld)", db->path, ver);
        return NASC_ERR;
    }
    static const char *const tables[] = {"meta", "settings", "trials"};
    for (int i = 0; i < 3; i++) {
        char sql[128];
        long long n = 0;
        snprintf(sql, sizeof sql, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = '%s'", tables[i]);
        if (query_int(db, sql, &n, e) != NASC_OK) return NASC_ERR;
        if (!n) {
            err_set(e, "%s: a damaged nasc trial database (table '%s' is missing)", db->path, tables[i]);
            return NASC_ERR;
        }
    }
    /* Cheap enough for thousands of trials, and it turns a truncated or overwritten file
     * into a clear message now rather than a failure in the middle of a search. */
    st = prep(db, "PRAGMA quick_check", e);
    if (!st) return NASC_ERR;
    rc = sqlite3_step(st);
    const char *res = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (!res || strcmp(res, "ok")) {
        err_set(e, "%s: the database file is damaged (%s)", db->path, res ? res : sqlite3_errmsg(db->db));
        sqlite3_finalize(st);
        return NASC_ERR;
    }
    sqlite3_finalize(st);
    db->version = (int)ver;
    return 1;
}

static int set_pragmas(TrialsDb *db, Err *e) {
    if (exec(db, "PRAGMA foreign_keys = ON", e) != NASC_OK) return NASC_ERR;
    if (db->mode == TRIALS_READ) return NASC_OK;
    sqlite3_stmt *st = prep(db, "PRAGMA journal_mode = WAL", e);
    if (!st) return NASC_ERR;
    int rc = sqlite3_step(st);
    int wal = rc == SQLITE_ROW && !sqlite3_stricmp((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    if (!wal) {
        err_set(e, "%s: cannot switch to WAL mode (%s); is the folder on a network file system?", db->path,
                sqlite3_errmsg(db->db));
        return NASC_ERR;
    }
    return exec(db, "PRAGMA synchronous = FULL", e);
}

static int create_schema(TrialsDb *db, const TrialsSetting *settings, int n, Err *e) {
    if (begin_tx(db, e) != NASC_OK) return NASC_ERR;
    char pragmas[160];
    snprintf(pragmas, sizeof pragmas, "PRAGMA application_id = %d; PRAGMA user_version = %d;", (int)TRIALS_APP_ID,
             TRIALS_SCHEMA_VERSION);
    if (exec(db, schema_sql, e) != NASC_OK || exec(db, pragmas, e) != NASC_OK) return rollback(db);
    sqlite3_stmt *st = prep(db, "INSERT INTO meta(key, value) VALUES (?1, ?2)", e);
    if (!st) return rollback(db);
    char ver[16], created[64];
    snprintf(ver, sizeof ver, "%d", TRIALS_SCHEMA_VERSION);
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    const char *meta[3][2] = {{"schema_version", ver}, {"created", created}, {"nasc_version", NASC_VERSION}};
    for (int i = 0; i < 3; i++) {
        sqlite3_reset(st);
        bind_text(st, 1, meta[i][0]);
        bind_text(st, 2, meta[i][1]);
        if (sqlite3_step(st) != SQLITE_DONE) {
            sqlite3_finalize(st);
            sql_fail(db, e, "cannot write the schema");
            return rollback(db);
        }
    }
    sqlite3_finalize(st);
    st = prep(db, "INSERT INTO settings(key, value) VALUES (?1, ?2)", e);
    if (!st) return rollback(db);
    for (int i = 0; i < n; i++) {
        sqlite3_reset(st);
        bind_text(st, 1, settings[i].key);
        bind_text(st, 2, settings[i].value ? settings[i].value : "");
        if (sqlite3_step(st) != SQLITE_DONE) {
            sqlite3_finalize(st);
            sql_fail(db, e, "cannot store the settings (a key given twice?)");
            return rollback(db);
        }
    }
    sqlite3_finalize(st);
    db->version = TRIALS_SCHEMA_VERSION;
    return commit_tx(db, e);
}

/* A writer opened a version-1 file: add trials.score (= val_acc, the only objective version 1
 * had) in one transaction, so a kill leaves the file either old or new. */
static int migrate(TrialsDb *db, Err *e) {
    if (db->version != 1) {
        err_set(e, "%s: cannot upgrade a trial database of schema version %d", db->path, db->version);
        return NASC_ERR;
    }
    if (begin_tx(db, e) != NASC_OK) return NASC_ERR;
    char sql[512], when[64];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(sql, sizeof sql,
             "ALTER TABLE trials ADD COLUMN score REAL;"
             "UPDATE trials SET score = val_acc WHERE status = 'done';"
             "PRAGMA user_version = %d;"
             "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', '%d'), "
             "('migrated', 'schema 1 to %d on %s');",
             TRIALS_SCHEMA_VERSION, TRIALS_SCHEMA_VERSION, TRIALS_SCHEMA_VERSION, when);
    Err why;
    if (exec(db, sql, &why) != NASC_OK) {
        rollback(db);
        err_set(e, "cannot upgrade the trial database from schema version 1 to %d: %s", TRIALS_SCHEMA_VERSION,
                why.msg);
        return NASC_ERR;
    }
    if (commit_tx(db, e) != NASC_OK) return NASC_ERR;
    db->version = TRIALS_SCHEMA_VERSION;
    return NASC_OK;
}

/* Appends "key: stored 'a', this command 'b'" to a bounded list ("..." when full). */
static void append_diff(char *buf, size_t cap, int *ndiff, const char *key, const char *was, const char *now) {
    char item[256];
    char a[96], b[96];
    snprintf(a, sizeof a, was ? "'%s'" : "%s", was ? was : "(not set)");
    snprintf(b, sizeof b, now ? "'%s'" : "%s", now ? now : "(not set)");
    snprintf(item, sizeof item, "%s%s: stored %s, this command %s", (*ndiff)++ ? "; " : "", key, a, b);
    size_t len = strlen(buf);
    if (len + strlen(item) + 6 < cap)
        memcpy(buf + len, item, strlen(item) + 1);
    else if (len + 6 <= cap && !strstr(buf, "; ..."))
        memcpy(buf + len, "; ...", 6);
}

/* Compares the stored settings with this command's; updates the may_change ones. */
static int check_settings(TrialsDb *db, const TrialsSetting *cur, int n, Err *e) {
    TrialsSetting *old = NULL;
    int nold = 0;
    if (trials_settings(db, &old, &nold, e) != NASC_OK) return NASC_ERR;
    char diff[400] = "";
    int ndiff = 0;
    for (int i = 0; i < n; i++) {
        const char *v = cur[i].value ? cur[i].value : "";
        const char *was = NULL;
        for (int j = 0; j < nold; j++)
            if (!strcmp(old[j].key, cur[i].key)) was = old[j].value;
        if (was && !strcmp(was, v)) continue;
        if (was && cur[i].may_change) continue;
        append_diff(diff, sizeof diff, &ndiff, cur[i].key, was, v);
    }
    for (int j = 0; j < nold; j++) {
        int found = 0;
        for (int i = 0; i < n; i++) found |= !strcmp(old[j].key, cur[i].key);
        if (!found) append_diff(diff, sizeof diff, &ndiff, old[j].key, old[j].value, NULL);
    }
    trials_settings_free(old, nold);
    if (ndiff) {
        err_set(e,
                "%s: cannot resume: the experiment was started with other settings (%s); "
                "rerun with the same settings, or start a new experiment with another --db",
                db->path, diff);
        return NASC_ERR;
    }
    /* Settings that may change on resume (budgets): store this command's values. */
    int any = 0;
    for (int i = 0; i < n; i++) any |= cur[i].may_change;
    if (!any) return NASC_OK;
    if (begin_tx(db, e) != NASC_OK) return NASC_ERR;
    sqlite3_stmt *st = prep(db, "INSERT OR REPLACE INTO settings(key, value) VALUES (?1, ?2)", e);
    if (!st) return rollback(db);
    for (int i = 0; i < n; i++) {
        if (!cur[i].may_change) continue;
        sqlite3_reset(st);
        bind_text(st, 1, cur[i].key);
        bind_text(st, 2, cur[i].value ? cur[i].value : "");
        if (sqlite3_step(st) != SQLITE_DONE) {
            sqlite3_finalize(st);
            sql_fail(db, e, "cannot update the settings");
            return rollback(db);
        }
    }
    sqlite3_finalize(st);
    return commit_tx(db, e);
}

static int take_lock(TrialsDb *db, Err *e) {
    db->lock_fd = open(db->path, O_RDONLY | O_CLOEXEC);
    if (db->lock_fd < 0) {
        err_set(e, "%s: cannot open: %s", db->path, strerror(errno));
        return NASC_ERR;
    }
    if (flock(db->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            err_set(
                e,
                "%s: in use by another nasc process (a search is writing it); wait for it to end or use another --db",
                db->path);
        else
            err_set(e, "%s: cannot lock: %s", db->path, strerror(errno));
        return NASC_ERR;
    }
    return NASC_OK;
}

TrialsDb *trials_open(const char *path, TrialsMode mode, const TrialsSetting *settings, int nsettings, Err *e) {
    if (!path || !*path) {
        err_set(e, "trial database: no file name given");
        return NULL;
    }
    struct stat sb;
    int exists = stat(path, &sb) == 0;
    if (!exists && errno != ENOENT) {
        err_set(e, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (exists && !S_ISREG(sb.st_mode)) {
        err_set(e, "%s: not a regular file; give a file name with --db", path);
        return NULL;
    }
    if (!exists && mode == TRIALS_RESUME) {
        err_set(e, "%s: no such file, so there is no experiment to resume; run without --resume to start one", path);
        return NULL;
    }
    if (!exists && mode == TRIALS_READ) {
        err_set(e, "%s: no such file", path);
        return NULL;
    }
    TrialsDb *db = xcalloc(1, sizeof *db);
    db->path = xstrdup(path);
    db->mode = mode;
    db->lock_fd = -1;
    /* Readers open read-write when they can but only ever read (query_only): a read-only
     * connection to a WAL database leaves -wal and -shm files behind, a read-write one lets
     * the last connection to close remove them. */
    int flags = SQLITE_OPEN_READWRITE | (mode == TRIALS_CREATE ? SQLITE_OPEN_CREATE : 0);
    if (mode == TRIALS_READ && access(path, W_OK) != 0) flags = SQLITE_OPEN_READONLY;
    if (sqlite3_open_v2(path, &db->db, flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        err_set(e, "%s: cannot open: %s", path, db->db ? sqlite3_errmsg(db->db) : "out of memory");
        trials_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db->db, BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(db->db, 0);
    if (mode == TRIALS_READ && exec(db, "PRAGMA query_only = ON", e) != NASC_OK) goto fail;
    /* The writer lock first, so that two searches never both create or resume the file. */
    if (mode != TRIALS_READ && take_lock(db, e) != NASC_OK) goto fail;
    int kind = classify(db, e);
    if (kind == NASC_ERR) goto fail;
    if (kind == 0 && mode != TRIALS_CREATE) {
        err_set(e, "%s: an empty database, so there is no experiment to %s%s", path,
                mode == TRIALS_RESUME ? "resume" : "read",
                mode == TRIALS_RESUME ? "; run without --resume to start one" : "");
        goto fail;
    }
    if (kind == 1 && mode == TRIALS_CREATE) {
        long long n = 0;
        query_int(db, "SELECT count(*) FROM trials", &n, NULL);
        err_set(e,
                "%s: already holds an experiment (%lld trials); use --resume to continue it, or another --db "
                "for a new one",
                path, n);
        goto fail;
    }
    if (set_pragmas(db, e) != NASC_OK) goto fail;
    if (kind == 0 && create_schema(db, settings, nsettings, e) != NASC_OK) goto fail;
    if (kind == 1 && mode == TRIALS_RESUME && check_settings(db, settings, nsettings, e) != NASC_OK) goto fail;
    if (kind == 1 && mode == TRIALS_RESUME && db->version < TRIALS_SCHEMA_VERSION && migrate(db, e) != NASC_OK)
        goto fail;
    if (mode == TRIALS_RESUME) {
        long long n = 0;
        if (query_int(db, "SELECT count(*) FROM trials WHERE status = 'running'", &n, e) != NASC_OK) goto fail;
        db->interrupted = (long)n;
    }
    return db;
fail:
    trials_close(db);
    return NULL;
}

void trials_close(TrialsDb *db) {
    if (!db) return;
    /* SQLite first: close() of any descriptor of the file drops every POSIX (fcntl) lock this
     * process holds on it, SQLite's included, so the flock descriptor must outlive SQLite. */
    if (db->db) sqlite3_close_v2(db->db);
    if (db->lock_fd >= 0) close(db->lock_fd);
    free(db->path);
    free(db);
}

const char *trials_path(const TrialsDb *db) { return db->path; }
long trials_interrupted(const TrialsDb *db) { return db->interrupted; }

/* ------------------------------------------------------------------ writes */

static int next_event(TrialsDb *db, long long *ev, Err *e) {
    return query_int(db,
                     "SELECT max(coalesce((SELECT max(ask_ev) FROM trials), -1), "
                     "coalesce((SELECT max(tell_ev) FROM trials), -1)) + 1",
                     ev, e);
}

static int check_result(TrialsDb *db, long seq, const TrialResult *r, Err *e) {
    if ((int)r->status < 0 || (int)r->status > TRIAL_FAILED) {
        err_set(e, "%s: trial %ld: bad status %d", db->path, seq, (int)r->status);
        return NASC_ERR;
    }
    if (r->status == TRIAL_OK && !(r->val_acc >= 0 && r->val_acc <= 1)) {
        err_set(e, "%s: trial %ld: a finished trial needs val_acc in [0, 1] (got %g)", db->path, seq, r->val_acc);
        return NASC_ERR;
    }
    return NASC_OK;
}

/* Inside a transaction: inserts the row, running or (r != NULL) finished. */
static int insert_row(TrialsDb *db, const TrialBegin *b, const TrialResult *r, Err *e) {
    long long next = 0, ev = 0;
    if (query_int(db, "SELECT coalesce(max(seq), -1) + 1 FROM trials", &next, e) != NASC_OK) return NASC_ERR;
    if (b->seq != next) {
        err_set(e, "%s: trial seq %ld out of order (the next trial is %lld)", db->path, b->seq, next);
        return NASC_ERR;
    }
    if (!b->arch || !b->canonical || !b->spec) {
        err_set(e, "%s: trial %ld: arch, canonical and spec are required", db->path, b->seq);
        return NASC_ERR;
    }
    if (!(b->fid.fraction > 0 && b->fid.fraction <= 1) || !(b->fid.epochs >= 0)) {
        err_set(e, "%s: trial %ld: bad fidelity (%g epochs, fraction %g)", db->path, b->seq, b->fid.epochs,
                b->fid.fraction);
        return NASC_ERR;
    }
    if (b->reuse_of >= 0) {
        TrialRow src;
        if (!r) {
            err_set(e, "%s: trial %ld: a reused result is recorded with trials_record", db->path, b->seq);
            return NASC_ERR;
        }
        if (trials_get(db, b->reuse_of, &src, e) != NASC_OK) return NASC_ERR;
        int ok = !src.running && src.reuse_of < 0 && !strcmp(src.canonical, b->canonical) &&
                 src.fid.epochs == b->fid.epochs && src.fid.fraction == b->fid.fraction;
        trials_row_free(&src);
        if (!ok) {
            err_set(e, "%s: trial %ld reuses trial %ld, which is not a finished training of the same arch and fidelity",
                    db->path, b->seq, b->reuse_of);
            return NASC_ERR;
        }
    }
    if (next_event(db, &ev, e) != NASC_OK) return NASC_ERR;
    sqlite3_stmt *st = prep(db,
                            "INSERT INTO trials(seq, trial_id, arch, canonical, spec, fid_epochs, fid_fraction, seed, "
                            "status, reuse_of, started, worker, ask_ev) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, "
                            "'running', ?9, ?10, ?11, ?12)",
                            e);
    if (!st) return NASC_ERR;
    sqlite3_bind_int64(st, 1, b->seq);
    sqlite3_bind_int64(st, 2, b->trial_id);
    bind_text(st, 3, b->arch);
    bind_text(st, 4, b->canonical);
    bind_text(st, 5, b->spec);
    sqlite3_bind_double(st, 6, b->fid.epochs);
    sqlite3_bind_double(st, 7, b->fid.fraction);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)b->seed);
    if (b->reuse_of >= 0)
        sqlite3_bind_int64(st, 9, b->reuse_of);
    else
        sqlite3_bind_null(st, 9);
    sqlite3_bind_double(st, 10, wall_seconds());
    sqlite3_bind_int(st, 11, b->worker);
    sqlite3_bind_int64(st, 12, ev);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        if (rc == SQLITE_CONSTRAINT && b->reuse_of < 0) {
            TrialRow other;
            int f = trials_find_result(db, b->canonical, b->fid, &other, NULL);
            if (f == TRIALS_FOUND_DONE || f == TRIALS_FOUND_RUNNING) {
                err_set(e,
                        "%s: trial %ld: %s at %g epochs (fraction %g) is already %s as trial %ld; a trial is never "
                        "trained twice at the same fidelity: reuse its result (trials_find_result)",
                        db->path, b->seq, b->canonical, b->fid.epochs, b->fid.fraction,
                        f == TRIALS_FOUND_RUNNING ? "being trained" : "trained", other.seq);
                trials_row_free(&other);
                return NASC_ERR;
            }
        }
        return sql_fail(db, e, "cannot insert a trial");
    }
    return NASC_OK;
}

static int finish_row(TrialsDb *db, long seq, const TrialResult *r, Err *e) {
    long long ev = 0;
    if (check_result(db, seq, r, e) != NASC_OK) return NASC_ERR;
    if (next_event(db, &ev, e) != NASC_OK) return NASC_ERR;
    sqlite3_stmt *st = prep(db,
                            "UPDATE trials SET status = ?2, val_acc = ?3, train_acc = ?4, train_loss = ?5, "
                            "params = ?6, macs = ?7, peak_bytes = ?8, flash_bytes = ?9, latency_ms = ?10, "
                            "predicted_latency_ms = ?11, train_seconds = ?12, error = ?13, finished = ?14, "
                            "tell_ev = ?15, score = ?16 WHERE seq = ?1 AND status = 'running'",
                            e);
    if (!st) return NASC_ERR;
    sqlite3_bind_int64(st, 1, seq);
    bind_text(st, 2, status_names[r->status]);
    bind_real(st, 3, r->val_acc);
    bind_real(st, 4, r->train_acc);
    bind_real(st, 5, r->train_loss);
    bind_count(st, 6, r->params);
    bind_count(st, 7, r->macs);
    bind_count(st, 8, r->peak_bytes);
    bind_count(st, 9, r->flash_bytes);
    bind_real(st, 10, r->latency_ms);
    bind_real(st, 11, r->predicted_latency_ms);
    bind_real(st, 12, r->train_seconds);
    bind_text(st, 13, r->error);
    sqlite3_bind_double(st, 14, wall_seconds());
    sqlite3_bind_int64(st, 15, ev);
    bind_real(st, 16, r->score);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) return sql_fail(db, e, "cannot store a trial's result");
    if (sqlite3_changes(db->db) != 1) {
        err_set(e, "%s: trial %ld is not running (unknown, or already finished)", db->path, seq);
        return NASC_ERR;
    }
    return NASC_OK;
}

int trials_begin(TrialsDb *db, const TrialBegin *b, Err *e) {
    if (b->reuse_of >= 0) {
        err_set(e, "%s: trial %ld: a reused result is recorded with trials_record", db->path, b->seq);
        return NASC_ERR;
    }
    if (begin_tx(db, e) != NASC_OK) return NASC_ERR;
    if (insert_row(db, b, NULL, e) != NASC_OK) return rollback(db);
    return commit_tx(db, e);
}

int trials_finish(TrialsDb *db, long seq, const TrialResult *r, Err *e) {
    if (begin_tx(db, e) != NASC_OK) return NASC_ERR;
    if (finish_row(db, seq, r, e) != NASC_OK) return rollback(db);
    return commit_tx(db, e);
}

int trials_record(TrialsDb *db, const TrialBegin *b, const TrialResult *r, Err *e) {
    if (begin_tx(db, e) != NASC_OK) return NASC_ERR;
    if (check_result(db, b->seq, r, e) != NASC_OK || insert_row(db, b, r, e) != NASC_OK ||
        finish_row(db, b->seq, r, e) != NASC_OK)
        return rollback(db);
    return commit_tx(db, e);
}

int trials_mark_infeasible(TrialsDb *db, const TrialBegin *b, const TrialResult *costs, Err *e) {
    TrialResult r = costs ? *costs : trials_result_empty();
    r.status = TRIAL_INFEASIBLE;
    return trials_record(db, b, &r, e);
}

int trials_restart(TrialsDb *db, long seq, int worker, Err *e) {
    if (begin_tx(db, e) != NASC_OK) return NASC_ERR;
    sqlite3_stmt *st = prep(
        db,
        "UPDATE trials SET started = ?2, worker = ?3, attempts = attempts + 1 WHERE seq = ?1 AND status = 'running'",
        e);
    if (!st) return rollback(db);
    sqlite3_bind_int64(st, 1, seq);
    sqlite3_bind_double(st, 2, wall_seconds());
    sqlite3_bind_int(st, 3, worker);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        sql_fail(db, e, "cannot restart a trial");
        return rollback(db);
    }
    if (sqlite3_changes(db->db) != 1) {
        err_set(e, "%s: trial %ld is not an interrupted trial", db->path, seq);
        return rollback(db);
    }
    return commit_tx(db, e);
}

/* ------------------------------------------------------------------ reads */

#define ROW_COLUMNS                                                                                                    \
    "seq, trial_id, arch, canonical, spec, fid_epochs, fid_fraction, seed, status, reuse_of, val_acc, "                \
    "train_acc, train_loss, params, macs, peak_bytes, flash_bytes, latency_ms, predicted_latency_ms, "                 \
    "train_seconds, started, finished, worker, attempts, error, ask_ev, tell_ev, "

/* "SELECT <the row columns> FROM trials <rest>": a version-1 file (read, not upgraded) has no
 * score column; its score is the accuracy. */
static sqlite3_stmt *prep_rows(TrialsDb *db, const char *rest, Err *e) {
    char sql[1024];
    snprintf(sql, sizeof sql, "SELECT " ROW_COLUMNS "%s FROM trials %s", db->version >= 2 ? "score" : "val_acc",
             rest);
    return prep(db, sql, e);
}

static void read_row(sqlite3_stmt *st, TrialRow *row) {
    memset(row, 0, sizeof *row);
    row->seq = (long)sqlite3_column_int64(st, 0);
    row->trial_id = (long)sqlite3_column_int64(st, 1);
    row->arch = col_str(st, 2);
    row->canonical = col_str(st, 3);
    row->spec = col_str(st, 4);
    row->fid.epochs = sqlite3_column_double(st, 5);
    row->fid.fraction = sqlite3_column_double(st, 6);
    row->seed = (uint64_t)sqlite3_column_int64(st, 7);
    const char *status = (const char *)sqlite3_column_text(st, 8);
    row->r = trials_result_empty();
    row->running = !status || !strcmp(status, "running");
    row->r.status = !status                         ? TRIAL_FAILED
                    : !strcmp(status, "infeasible") ? TRIAL_INFEASIBLE
                    : !strcmp(status, "failed")     ? TRIAL_FAILED
                                                    : TRIAL_OK;
    row->reuse_of = (long)col_count(st, 9);
    row->r.val_acc = col_real(st, 10);
    row->r.train_acc = col_real(st, 11);
    row->r.train_loss = col_real(st, 12);
    row->r.params = col_count(st, 13);
    row->r.macs = col_count(st, 14);
    row->r.peak_bytes = col_count(st, 15);
    row->r.flash_bytes = col_count(st, 16);
    row->r.latency_ms = col_real(st, 17);
    row->r.predicted_latency_ms = col_real(st, 18);
    row->r.train_seconds = col_real(st, 19);
    row->started = col_real(st, 20);
    row->finished = col_real(st, 21);
    row->worker = sqlite3_column_int(st, 22);
    row->attempts = sqlite3_column_int(st, 23);
    row->error = col_str(st, 24);
    row->r.error = row->error;
    row->ask_ev = (long)sqlite3_column_int64(st, 25);
    row->tell_ev = (long)col_count(st, 26);
    row->r.score = col_real(st, 27);
}

void trials_row_free(TrialRow *row) {
    if (!row) return;
    free(row->arch);
    free(row->canonical);
    free(row->spec);
    free(row->error);
    memset(row, 0, sizeof *row);
}

void trials_rows_free(TrialRow *rows, long n) {
    for (long i = 0; i < n; i++) trials_row_free(&rows[i]);
    free(rows);
}

const char *trials_status_name(const TrialRow *row) { return row->running ? "running" : status_names[row->r.status]; }

int trials_get(TrialsDb *db, long seq, TrialRow *row, Err *e) {
    sqlite3_stmt *st = prep_rows(db, "WHERE seq = ?1", e);
    if (!st) return NASC_ERR;
    sqlite3_bind_int64(st, 1, seq);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) read_row(st, row);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) return NASC_OK;
    if (rc == SQLITE_DONE) {
        err_set(e, "%s: no trial %ld", db->path, seq);
        return NASC_ERR;
    }
    return sql_fail(db, e, "cannot read a trial");
}

int trials_find_result(TrialsDb *db, const char *canonical, Fidelity fid, TrialRow *row, Err *e) {
    /* The trained row first (at most one, by the unique index), else an infeasible one. */
    sqlite3_stmt *st = prep_rows(db,
                                 "WHERE canonical = ?1 AND fid_epochs = ?2 AND fid_fraction = ?3 AND reuse_of IS NULL "
                                 "ORDER BY status = 'infeasible', seq LIMIT 1",
                                 e);
    if (!st) return NASC_ERR;
    bind_text(st, 1, canonical);
    sqlite3_bind_double(st, 2, fid.epochs);
    sqlite3_bind_double(st, 3, fid.fraction);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) read_row(st, row);
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) return TRIALS_FOUND_NONE;
    if (rc != SQLITE_ROW) return sql_fail(db, e, "cannot look up a trial");
    return row->running ? TRIALS_FOUND_RUNNING : TRIALS_FOUND_DONE;
}

long trials_count(TrialsDb *db, Err *e) {
    long long n = 0;
    return query_int(db, "SELECT count(*) FROM trials", &n, e) == NASC_OK ? (long)n : -1;
}

int trials_list(TrialsDb *db, TrialRow **rows, long *n, Err *e) {
    *rows = NULL;
    *n = 0;
    sqlite3_stmt *st = prep_rows(db, "ORDER BY seq", e);
    if (!st) return NASC_ERR;
    long cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            *rows = xrealloc(*rows, (size_t)cap * sizeof **rows);
        }
        read_row(st, &(*rows)[(*n)++]);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        trials_rows_free(*rows, *n);
        *rows = NULL, *n = 0;
        return sql_fail(db, e, "cannot list the trials");
    }
    return NASC_OK;
}

int trials_events(TrialsDb *db, TrialsEvent **ev, long *n, Err *e) {
    *ev = NULL;
    *n = 0;
    sqlite3_stmt *st = prep(db,
                            "SELECT ask_ev, seq, 0 FROM trials UNION ALL "
                            "SELECT tell_ev, seq, 1 FROM trials WHERE tell_ev IS NOT NULL ORDER BY 1",
                            e);
    if (!st) return NASC_ERR;
    long cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 128;
            *ev = xrealloc(*ev, (size_t)cap * sizeof **ev);
        }
        TrialsEvent *x = &(*ev)[(*n)++];
        x->ev = (long)sqlite3_column_int64(st, 0);
        x->seq = (long)sqlite3_column_int64(st, 1);
        x->kind = sqlite3_column_int(st, 2) ? TRIALS_EV_TELL : TRIALS_EV_ASK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        free(*ev);
        *ev = NULL, *n = 0;
        return sql_fail(db, e, "cannot read the events");
    }
    return NASC_OK;
}

static int read_kv(TrialsDb *db, const char *sql, TrialsSetting **kv, int *n, Err *e) {
    *kv = NULL;
    *n = 0;
    sqlite3_stmt *st = prep(db, sql, e);
    if (!st) return NASC_ERR;
    int cap = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            *kv = xrealloc(*kv, (size_t)cap * sizeof **kv);
        }
        TrialsSetting *s = &(*kv)[(*n)++];
        s->key = col_str(st, 0);
        s->value = col_str(st, 1);
        s->may_change = 0;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        trials_settings_free(*kv, *n);
        *kv = NULL, *n = 0;
        return sql_fail(db, e, "cannot read the settings");
    }
    return NASC_OK;
}

int trials_settings(TrialsDb *db, TrialsSetting **kv, int *n, Err *e) {
    return read_kv(db, "SELECT key, value FROM settings ORDER BY key", kv, n, e);
}

int trials_meta(TrialsDb *db, TrialsSetting **kv, int *n, Err *e) {
    return read_kv(db, "SELECT key, value FROM meta ORDER BY key", kv, n, e);
}

void trials_settings_free(TrialsSetting *kv, int n) {
    for (int i = 0; i < n; i++) {
        free((char *)kv[i].key);
        free((char *)kv[i].value);
    }
    free(kv);
}

int trials_check(TrialsDb *db, Err *e) {
    sqlite3_stmt *st = prep(db, "PRAGMA integrity_check", e);
    if (!st) return NASC_ERR;
    int rc = sqlite3_step(st);
    const char *res = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    if (!res || strcmp(res, "ok")) {
        err_set(e, "%s: integrity check failed: %s", db->path, res ? res : sqlite3_errmsg(db->db));
        sqlite3_finalize(st);
        return NASC_ERR;
    }
    sqlite3_finalize(st);
    static const struct {
        const char *sql, *what;
    } checks[] = {
        {"SELECT (SELECT count(*) FROM trials) - (coalesce((SELECT max(seq) FROM trials), -1) + 1)",
         "trial seq numbers are not contiguous from 0"},
        {"SELECT count(*) FROM trials WHERE status = 'done' AND (val_acc IS NULL OR finished IS NULL OR tell_ev IS "
         "NULL)",
         "a done trial lacks its result"},
        {"SELECT count(*) FROM trials a JOIN trials b ON b.seq = a.seq + 1 WHERE b.ask_ev <= a.ask_ev",
         "asks are not in seq order"},
        {"SELECT count(*) FROM pragma_foreign_key_check('trials')", "a reuse row names a missing trial"},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        long long bad = 0;
        if (query_int(db, checks[i].sql, &bad, e) != NASC_OK) return NASC_ERR;
        if (bad) {
            err_set(e, "%s: %s (%lld rows)", db->path, checks[i].what, bad);
            return NASC_ERR;
        }
    }
    return NASC_OK;
}
