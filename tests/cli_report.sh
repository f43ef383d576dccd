#!/usr/bin/env bash
# `nasc report`: a small experiment written by `test_trials --make-db` is summarized (text and
# --json); files that are not trial databases give a clean error naming the file. `--out FILE.html`
# on a tabular search with latencies: one self-contained page (four PNG plots as data URIs that
# decode to PNG files, no external asset, every trial a row, the Pareto front highlighted, arch
# strings escaped); without gnuplot, or when it fails, the page is still written and the command
# warns and exits 0; a bad --out is a clean error.
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


# --out: the HTML report of a tabular search with a latency column (instant, deterministic).
CSV="$T/lat.csv"
awk 'BEGIN {
    split("none skip_connect nor_conv_1x1 nor_conv_3x3 avg_pool_3x3", op, " ")
    print "arch,accuracy,latency_ms"
    for (a = 1; a <= 5; a++) for (b = 1; b <= 5; b++) for (c = 1; c <= 5; c++) for (d = 1; d <= 5; d++) {
        i++
        printf "nb201:|%s~0|+|%s~0|%s~1|+|%s~0|%s~1|none~2|,%.4f,%.3f\n", op[a], op[b], op[c], op[d], op[(a + d) % 5 + 1],
            0.5 + (a * 7 + b * 3 + c * 5 + d) / 200, 0.2 + a * 0.3 + b * 0.1 + c * 0.2 + d * 0.05
    }
}' > "$CSV"
"$NASC" search --benchmark "$CSV" --strategy evolution --trials 30 --seed 2 --max-params 180000 --db "$T/s.db" --quiet > /dev/null 2>&1
expect ok "report written to $T/r.html (" "$NASC" report "$T/s.db" --out "$T/r.html" --json
rep=$(printf '%s\n' "$LAST" | tail -n 1)
ntr=$(printf '%s\n' "$rep" | sed -n 's/^{"db": "[^"]*", "trials": \([0-9]*\),.*/\1/p')
nfront=$(printf '%s\n' "$rep" | sed 's/.*"pareto": \[//' | grep -o '"seq": ' | wc -l)
H="$T/r.html"
head -c 15 "$H" | grep -q '<!DOCTYPE html>' && tail -n 1 "$H" | grep -q '</html>' && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: $H is not a whole HTML page"; }
# Self-contained: no link, script, stylesheet or image that is not a data URI.
if ! grep -Eq '<link|<script|src="(http|/|\.)|url\(' "$H"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $H refers to an external asset"; fi
# One table row per trial in "All trials", the front highlighted there and in its own table.
rows=$(sed -n '/<h2>All trials/,/<\/table>/p' "$H" | grep -c '^<tr[ >].*<td')
hl=$(grep -c '^<tr class=pareto>' "$H")
if [ -n "$ntr" ] && [ "$rows" = "$ntr" ] && [ "$nfront" -ge 2 ] && [ "$hl" = $((2 * nfront)) ]; then pass=$((pass+1)); else
    fail=$((fail+1)); echo "FAIL: $rows trial rows for $ntr trials, $hl highlighted rows for a front of $nfront"; fi
for want in "Experiment settings" "Summary" "Pareto front ($nfront)" "max_params" "recommended" "peak KB" "flash KB" "latency ms" "rejected by hard limits"; do
    grep -qF "$want" "$H" && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: $H lacks '$want'"; }
done
ls "$T" | grep -q 'r.html.tmp' && { fail=$((fail+1)); echo "FAIL: a temporary file was left next to the report"; } || pass=$((pass+1))
if command -v gnuplot >/dev/null; then
    # Four plots (accuracy vs params, MACs, latency; best so far by trial), each a real PNG.
    n=0
    for img in $(grep -o 'data:image/png;base64,[A-Za-z0-9+/=]*' "$H" | sed 's/^data:image\/png;base64,//'); do
        n=$((n+1))
        printf '%s' "$img" | base64 -d > "$T/plot$n.png" 2>/dev/null
        [ "$(head -c 8 "$T/plot$n.png" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] && [ "$(stat -c %s "$T/plot$n.png")" -gt 2000 ] || {
            fail=$((fail+1)); echo "FAIL: plot $n does not decode to a PNG image"; }
    done
    [ $n = 4 ] && [ "$(json_val plots)" = 4 ] && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: $n plots in $H (json: $(json_val plots)), wanted 4"; }
    ! grep -q 'class=note' "$H" && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: $H has a note although gnuplot ran"; }
else
    echo "cli_report: gnuplot is not installed: plot checks skipped"
fi
# Without gnuplot (nothing on PATH) or with a gnuplot that fails: a warning, the page without plots, exit 0.
expect ok "warning: gnuplot was not found (install gnuplot-nox" env PATH=/nonexistent "$NASC" report "$T/s.db" --out "$T/np.html"
grep -q 'No plots: gnuplot was not found' "$T/np.html" && ! grep -q 'data:image' "$T/np.html" && grep -q '</html>' "$T/np.html" && pass=$((pass+1)) || {
    fail=$((fail+1)); echo "FAIL: the report without gnuplot does not say so, or has images"; }
expect ok "warning: false failed (exit status 1)" env NASC_GNUPLOT=false "$NASC" report "$T/s.db" --out "$T/gf.html"
grep -q 'No plots: false failed' "$T/gf.html" && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: the report does not say that gnuplot failed"; }
# The test_trials experiment (a failed and an infeasible trial, errors in the note column).
expect ok "report written to $T/exp.html" "$NASC" report "$T/exp.db" --out "$T/exp.html"
grep -q 'arch-11' "$T/exp.html" && grep -q 'diverged' "$T/exp.html" && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: exp.html lacks a trial or an error"; }
# A benchmark without latencies: no accuracy-vs-latency plot, and the page says so.
cut -d, -f1,2 "$CSV" > "$T/nolat.csv"
"$NASC" search --benchmark "$T/nolat.csv" --strategy random --trials 10 --db "$T/nl.db" --quiet > /dev/null 2>&1
expect ok "report written to $T/nl.html" "$NASC" report "$T/nl.db" --out "$T/nl.html"
if command -v gnuplot >/dev/null; then
    [ "$(grep -o 'data:image/png' "$T/nl.html" | wc -l)" = 3 ] && grep -q 'No accuracy-vs-latency plot' "$T/nl.html" && pass=$((pass+1)) || {
        fail=$((fail+1)); echo "FAIL: nl.html should have 3 plots and say there is no latency plot"; }
fi
# Arch strings are HTML-escaped (an arch with markup put in with the sqlite3 shell, when present).
if command -v sqlite3 >/dev/null; then
    cp "$T/s.db" "$T/x.db"
    sqlite3 "$T/x.db" "UPDATE trials SET arch = '<b>&\"x''</b>' WHERE seq = 0;"
    "$NASC" report "$T/x.db" --out "$T/x.html" > /dev/null 2>&1
    grep -qF '&lt;b&gt;&amp;&quot;x&#39;&lt;/b&gt;' "$T/x.html" && ! grep -qF '<b>&"x' "$T/x.html" && pass=$((pass+1)) || {
        fail=$((fail+1)); echo "FAIL: the arch string is not HTML-escaped"; }
else
    echo "cli_report: no sqlite3 shell: escaping check skipped"
fi
expect fail "cannot write $T/no/such/dir/r.html" "$NASC" report "$T/s.db" --out "$T/no/such/dir/r.html"
expect fail "--out needs a file name" "$NASC" report "$T/s.db" --out ''
expect fail "--out needs a value" "$NASC" report "$T/s.db" --out

echo "cli_report: $pass passed, $fail failed"
[ $fail -eq 0 ]
