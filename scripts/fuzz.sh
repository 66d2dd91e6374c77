#!/usr/bin/env bash
# Long fuzz run: N structured and N byte-level cases of the run seeded SEED, each under a time
# limit and the whole driver under a memory limit; writes OUT/summary.json (counts per outcome)
# and keeps every failing case in OUT/failures (copy them to fixtures/fuzz/ to replay in CI).
#   scripts/fuzz.sh N SEED OUT [DRIVER]
# DRIVER defaults to the release build of examples/fuzz.rs. A driver that dies (an abort, the
# memory limit) or stops at a timeout is restarted after the case it was on, which is counted
# as a failure ("Aborted").
set -uo pipefail
cd "$(dirname "$0")/.."
n="${1:?N cases}"; seed="${2:?SEED}"; out="${3:?OUT dir}"
driver="${4:-}"
if [ -z "$driver" ]; then
  cargo build --release --example fuzz >&2 || exit 2
  driver="${CARGO_TARGET_DIR:-target}/release/examples/fuzz"
fi
mkdir -p "$out"
ulimit -v $((16 * 1024 * 1024)) # KiB: 16 GiB of address space for the whole driver
# KINDS (default both) runs one kind only, e.g. the two kinds in parallel into two OUT dirs.
for kind in ${KINDS:-structured bytes}; do
  start=0
  while [ "$start" -lt "$n" ]; do
    # Chunks of at most 5000 cases, so the counts so far are on disk.
    chunk=$((n - start < 5000 ? n - start : 5000))
    "$driver" --kind "$kind" --seed "$seed" --start "$start" --cases "$chunk" \
      --out "$out" --limit-secs 30 >>"$out/driver.log" 2>&1
    rc=$?
    if [ "$rc" -eq 0 ]; then start=$((start + chunk)); continue; fi
    read -r _ _ at <"$out/current"
    if [ "$rc" -ne 3 ]; then # died on case $at: keep it, count it
      echo "{\"kind\": \"$kind\", \"seed\": $seed, \"start\": $at, \"counts\": {\"Aborted\": 1}}" \
        >"$out/counts-$kind-$seed-abort-$at.json"
      "$driver" --kind "$kind" --seed "$seed" --start "$at" --cases 1 --out "$out/died" \
        --save-only 1 >/dev/null 2>&1
      cp "$out/died/failures/"* "$out/failures/" 2>/dev/null
      echo "driver exit $rc on it" >>"$out/failures/$kind-$seed-$at.txt"
    fi
    start=$((at + 1))
  done
done
python3 - "$out" <<'PY'
import glob, json, sys
out = sys.argv[1]
total = {}
seconds = 0.0
for f in glob.glob(f"{out}/counts-*.json"):
    c = json.load(open(f))
    k = total.setdefault(c["kind"], {})
    seconds += c.get("seconds", 0.0)
    for name, v in c["counts"].items():
        if name != "stopped_at":
            k[name] = k.get(name, 0) + v
summary = {"counts": total, "driver_seconds": round(seconds, 1),
           "failures": sorted(glob.glob(f"{out}/failures/*.txt"))}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
print(json.dumps(summary, indent=1))
PY
