#!/usr/bin/env bash
# `nasc report`: a small experiment written by `test_trials --make-db` is summarized (text and
# --json); files that are not trial databases give a clean error naming the file.
set -u
B=${1:-build}
NASC=${NASC_BIN:-$B/nasc}
T=$(mktemp -d /tmp/nasc_report_XXXXXX)
trap 'rm -rf "$T"' EXIT
source "$(dirname "$0")/lib_cli.sh"

"$B/tests/test_trials" --make-db "$T/exp.db" || { echo "FAIL: test_trials --make-db"; exit 1; }
expect ok "trials: 12 (done 9, failed 2, infeasible 1" "$NASC" report "$T/exp.db"
expect ok "arch-11" "$NASC" report "$T/exp.db" --top 3
expect ok '"trials": 12' "$NASC" report "$T/exp.db" --json
json_has trials done failed infeasible running settings best top
[ "$(json_val done)" = 9 ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: done = $(json_val done)"; }
[ ! -e "$T/exp.db-wal" ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: report left a -wal file"; }

echo "not a database, but long enough to carry an SQLite header......................" > "$T/text.db"
expect fail "$T/text.db: not a nasc trial database (not an SQLite file)" "$NASC" report "$T/text.db"
expect fail "$T/none.db: no such file" "$NASC" report "$T/none.db"
: > "$T/empty.db"
expect fail "$T/empty.db: an empty database" "$NASC" report "$T/empty.db"
expect fail "needs a trial database" "$NASC" report
expect fail "unknown flag '--bogus'" "$NASC" report "$T/exp.db" --bogus

echo "cli_report: $pass passed, $fail failed"
[ $fail -eq 0 ]
