#!/usr/bin/env bash
# Profiles the bot's core during a load test step and prints bot / libopus samples
# (scripts/perf-ratio.py). Needs perf (linux-perf) and root.
#   scripts/perf-ratio.sh <mediabot binary> <streams> <out dir> [extra loadtest flags...]
# The bot runs on CPU 1 (the load test's default); the profile is 20 s of the 30 s steady window.
set -euo pipefail
bin=$1; streams=$2; out=$3; shift 3
mkdir -p "$out"
# `wav` unless the caller chose (the load test refuses the flag twice).
recording=(--bot-recording wav)
for a in "$@"; do
  case $a in --bot-recording | --bot-recording=*) recording=() ;; esac
done
"$bin" loadtest --streams "$streams" --speakers 10 --ramp-secs 4 --steady-secs 30 \
  --cooldown-secs 2 --floor-secs 2 --webhook-secs 0 --quiet --out "$out/lt" \
  "${recording[@]}" "$@" > "$out/loadtest.log" 2>&1 &
lt=$!
sleep 16
perf record -e cpu-clock -F 2999 -C 1 -a -o "$out/perf.data" -- sleep 20 > "$out/perf.log" 2>&1
wait "$lt"
perf script -i "$out/perf.data" -F comm,tid,ip,sym,dso 2> /dev/null > "$out/script.txt"
python3 "$(dirname "$0")/perf-ratio.py" "$out/script.txt" "$(basename "$out")"
