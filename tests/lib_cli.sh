# lib_cli.sh: what the CLI test scripts share (sourced, not run). `expect ok|fail MESSAGE cmd...`
# runs a command and checks its status (a failure must be a clean non-zero exit, never a crash
# or a sanitizer report) and that its output contains MESSAGE; json_has/json_lacks/json_val
# read the last line of the last command's output. Counters: pass, fail.
pass=0; fail=0
# expect ok|fail MESSAGE_PART -- command...
expect() {
    local want=$1 msg=$2; shift 2
    local out rc
    out=$("$@" 2>&1); rc=$?
    local ok=1
    if [ "$want" = fail ]; then
        { [ $rc -ne 0 ] && [ $rc -lt 128 ]; } || ok=0
    else
        [ $rc -eq 0 ] || ok=0
    fi
    case "$out" in *"$msg"*) ;; *) ok=0 ;; esac
    case "$out" in *"runtime error"*|*"AddressSanitizer"*|*"internal error"*) ok=0 ;; esac
    if [ $ok = 1 ]; then pass=$((pass+1)); else
        fail=$((fail+1)); echo "FAIL (exit $rc, wanted $want with '$msg'): $*"; echo "$out" | tail -5 | sed 's/^/    /'; fi
    LAST="$out"
}
# json_has KEY...: the last line of $LAST is a JSON object with every KEY.
json_has() {
    local line; line=$(printf '%s\n' "$LAST" | tail -n 1)
    for k in "$@"; do
        case "$line" in "{"*"\"$k\": "*"}") pass=$((pass+1)) ;; *) fail=$((fail+1)); echo "FAIL: JSON has no '$k': $line" ;; esac
    done
}
json_lacks() {
    local line; line=$(printf '%s\n' "$LAST" | tail -n 1)
    case "$line" in *"\"$1\": "*) fail=$((fail+1)); echo "FAIL: JSON should not have '$1': $line" ;; *) pass=$((pass+1)) ;; esac
}
json_val() { printf '%s\n' "$LAST" | tail -n 1 | sed -n "s/.*\"$1\": \([^,}]*\).*/\1/p"; }
