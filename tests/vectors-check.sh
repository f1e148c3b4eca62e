#!/bin/bash
# Copied from ../shared/vectors/README.md; the only change: LSVEC_WORK chooses the work directory
# (default /tmp/lsvec) so that the full and replay runs can go in parallel.
# check.sh VECTOR_DIR IMPL full|replay [CASE...]   -> exit 0 when every case matches
VEC=$(cd "$1" && pwd); IMPL=$2; MODE=${3:-full}; shift 3
PY=${PY:-python3}; fails=0
cases=("$@"); [ ${#cases[@]} = 0 ] && cases=($(ls "$VEC/cases"))
for n in "${cases[@]}"; do
  case=$VEC/cases/$n; W=${LSVEC_WORK:-/tmp/lsvec}/$n; cf=0
  rm -rf "$W"; mkdir -p "$W/a" "$W/b" "$W/shared"
  eval "$(sed -n 's/^\(mode\|schema_tracks_changes\|dupsort_hack\|header_extra_padding_block\|mask_now\): *\([a-z]*\)$/\1=\2/p' "$case/case.yaml")"
  export LSV_DB_A=$W/a/db.lmdb LSV_DB_B=$W/b/db.lmdb LSV_STORAGE=$W/shared \
         LSV_SCHEMA_TRACKS_CHANGES=$schema_tracks_changes LSV_DUPSORT_HACK=$dupsort_hack \
         LSV_HEADER_EXTRA_PADDING_BLOCK=$header_extra_padding_block
  $PY "$VEC/load.py" "$case" a "$LSV_DB_A" && $PY "$VEC/load.py" "$case" b "$LSV_DB_B" || { echo "FAIL $n: load"; fails=1; continue; }
  if [ "$MODE" = full ]; then            # a, b, a: the implementation talks to itself
    for s in a b a; do "$IMPL" -c "$VEC/ls-$s.yaml" sync --only-once >>"$W/log.txt" 2>&1 || { echo "FAIL $n: sync $s exit $?"; cf=1; }; done
  else                                   # replay: Go's snapshots are the only remote input
    first_a=$(ls "$case/snapshots" | grep '^main__a__' | head -1)
    cp "$case/snapshots/$first_a" "$W/shared/"
    "$IMPL" -c "$VEC/ls-b.yaml" sync --only-once >>"$W/log.txt" 2>&1 || { echo "FAIL $n: sync b exit $?"; cf=1; }
    rm -f "$W"/shared/*; cp "$case/snapshots/$first_a" "$case"/snapshots/main__b__* "$W/shared/" 2>/dev/null
    "$IMPL" -c "$VEC/ls-a.yaml" sync --only-once >>"$W/log.txt" 2>&1 || { echo "FAIL $n: sync a exit $?"; cf=1; }
  fi
  m=; [ "$mask_now" = true ] && m=--mask-now
  for s in a b; do
    $PY "$VEC/dump.py" "$W/$s/db.lmdb" "$mode" $m > "$W/got-$s.jsonl"
    diff -u "$case/expected-$s.jsonl" "$W/got-$s.jsonl" > "$W/diff-$s.txt" || { echo "FAIL $n: $s entries, see $W/diff-$s.txt"; cf=1; }
    $PY "$VEC/dump.py" "$W/$s/db.lmdb" "$mode" --dbis | $PY -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["expected-"+sys.argv[2]] != json.load(sys.stdin))' "$case/dbis.json" "$s" \
      || { echo "FAIL $n: $s DBI flags"; cf=1; }
  done
  if [ $cf = 0 ]; then echo "ok   $n"; else fails=1; fi
done
exit $fails
