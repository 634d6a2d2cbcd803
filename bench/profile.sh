#!/usr/bin/env bash
# Profiles duroxide's seq and fan runs and prints what limits them:
#   - Go CPU profiles (pprof -top) of the timed part, SQLite NORMAL with 10×
#     the workflows (enough samples) and PostgreSQL at the normal size;
#   - for PostgreSQL: where the engine's sessions wait (pg_stat_activity
#     sampled every 5 ms) and time per stored function (track_functions);
#   - when perf is installed and allowed: where the whole process's CPU goes,
#     SQLite's C code and the kernel included (pprof sees cgo as one frame).
# Usage: ./profile.sh [outdir]   (default: prof/)
set -eu
cd "$(dirname "$0")"
out=${1:-prof}
mkdir -p "$out"
go build -o "$out/bench" .
"$out/bench" -engines duroxide -scenarios seq,fan -stores sqlite-normal -reps 1 -scale 10 -profile "$out" >/dev/null
"$out/bench" -engines duroxide -scenarios seq,fan -stores postgres -reps 1 -profile "$out" >/dev/null
for f in "$out"/*.cpu.pprof; do
	echo "=== go tool pprof -top $f"
	go tool pprof -top -nodecount=12 "$f" 2>/dev/null | sed -n '4,20p'
	echo "--- cumulative, duroxide and store frames"
	go tool pprof -top -cum -nodecount=200 "$f" 2>/dev/null | grep -E 'toygres|cgocall|json' | head -14
done
for f in "$out"/*.mutex.pprof; do
	echo "=== mutex contention $f"
	go tool pprof -top -nodecount=5 "$f" 2>/dev/null | sed -n '4,12p'
done
for f in "$out"/*.fetches.txt "$out"/*.pgwaits.txt "$out"/*.pgfunctions.txt; do
	[ -e "$f" ] || continue
	echo "=== $f"
	head -12 "$f"
done
if command -v perf >/dev/null 2>&1 && perf stat -e task-clock true >/dev/null 2>&1; then
	dir=$(mktemp -d)
	perf record -q -F 999 -o "$out/perf.data" -- "$out/bench" -child -engine duroxide -store sqlite-normal \
		-scenario seq -scale 10 -dir "$dir" -timeout 120s >/dev/null 2>&1 || true
	rm -rf "$dir"
	echo "=== perf: CPU by binary (bench = Go code + SQLite's C code, statically linked)"
	perf report -i "$out/perf.data" --sort dso --stdio 2>/dev/null | grep '%' | head -6
	echo "=== perf: hottest symbols"
	perf report -i "$out/perf.data" --sort sym --stdio 2>/dev/null | grep '%' | head -25
fi
if command -v strace >/dev/null 2>&1; then
	dir=$(mktemp -d)
	echo "=== strace -c: system calls of one seq run (10×), SQLite NORMAL"
	strace -f -c -o "$out/strace.txt" "$out/bench" -child -engine duroxide -store sqlite-normal \
		-scenario seq -scale 10 -dir "$dir" -timeout 300s >/dev/null 2>&1 || true
	rm -rf "$dir"
	head -12 "$out/strace.txt"
fi
