# Sourced by the GPU scripts: keep_earlier_results OUTDIR moves an earlier run's results (a GPU
# hour is rare) aside to OUTDIR.<UTC time> with one rename, never overwriting them; an empty or
# missing OUTDIR is left as it is. Exits the script (code 2) when the rename cannot be done.
keep_earlier_results() {
    local out=$1 kept
    if [ -d "$out" ] && [ -n "$(ls -A "$out")" ]; then
        kept="$out.$(date -u +%Y%m%dT%H%M%SZ)"
        mv -nT "$out" "$kept" && [ ! -e "$out" ] || { echo "$(basename "$0"): could not move the earlier results in $out aside; give another OUTDIR" >&2; exit 2; }
        echo "$(basename "$0"): the earlier results in $out are kept in $kept"
    fi
}
