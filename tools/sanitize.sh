#!/usr/bin/env bash
# Builds turbopipe._core with AddressSanitizer+UndefinedBehaviorSanitizer and with
# ThreadSanitizer, each into its own venv under build/ (git-ignored), and runs the engine's
# tests on the native engine under each. Exits 0 only if every build and test passed and no
# sanitizer reported anything; prints how long each phase took.
#
#   tools/sanitize.sh                  both, ASan+UBSan first
#   tools/sanitize.sh tsan             one of them (asan | tsan)
#   tools/sanitize.sh asan -- -x -v    extra pytest arguments after --
#
# Python is not instrumented, so pytest starts with the runtime in LD_PRELOAD. The module
# tools/sanitize_env.py, installed into each venv with a .pth file, then takes LD_PRELOAD
# out of the environment of every interpreter of the venv at startup: ffmpeg, head and the
# other programs the tests start run without the runtime. The fresh interpreters some tests
# start on purpose (conftest.run_with_engine, through sys.executable) get it back through a
# wrapper, build/<name>/venv/bin/python-sanitized: they import the instrumented _core,
# which cannot load into a process without its runtime, so they are checked too.
# Reports of ASan and TSan go to build/<name>/reports/ (from any process, including those
# whose stderr a test captures). UBSan's go to stderr (GCC 12's libubsan ignores log_path):
# halt_on_error makes them fatal, and pytest's stderr is not captured at the fd level.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python=${PYTHON:-python3}
tests=(tests/test_arguments.py tests/test_delivery.py tests/test_descriptors.py
       tests/test_failures.py tests/test_identity.py tests/test_lifecycle.py tests/test_memory.py
       tests/test_scarce_resources.py tests/test_signals.py tests/test_vmsplice.py
       tests/test_waits.py tests/test_write_paths.py tests/test_glmap.py tests/test_sequences.py
       tests/test_zero_copy.py tests/test_yuv.py)

names=()
while [ $# -gt 0 ]; do
  case "$1" in
    asan | tsan) names+=("$1") ;;
    --) shift; break ;;
    *) echo "usage: tools/sanitize.sh [asan] [tsan] [-- pytest args]" >&2; exit 2 ;;
  esac
  shift
done
[ ${#names[@]} -gt 0 ] || names=(asan tsan)
extra=("$@")

timings=()
failed=()
phase_start() { phase=$1; started=$EPOCHREALTIME; echo; echo "=== $phase"; }
phase_end() {  # $1: 0 if the phase passed
  local seconds
  seconds=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
  if [ "$1" = 0 ]; then result=ok; else result=FAILED; failed+=("$phase"); fi
  timings+=("$(printf '%-12s %7ss  %s' "$phase" "$seconds" "$result")")
  echo "=== $phase: $result in ${seconds}s"
}

runtime_of() {  # the sanitizer runtime that gcc links, as an absolute path
  local path
  path=$(gcc -print-file-name="lib$1.so")
  if [ "${path#/}" = "$path" ] || [ ! -e "$path" ]; then
    echo "gcc has no lib$1.so (Debian: apt-get install lib${1}*)" >&2
    return 1
  fi
  echo "$path"
}

build() {  # $1: asan | tsan, $2: -fsanitize= list
  local dir=build/$1 venv=build/$1/venv site so
  mkdir -p "$dir"
  if [ ! -x "$venv/bin/python" ]; then
    nice -n 10 "$python" -m venv "$venv" || return 1
  fi
  # build-dir per sanitizer: pyproject's build/{wheel_tag} would share one CMake cache.
  if ! CMAKE_BUILD_PARALLEL_LEVEL=2 nice -n 10 "$venv/bin/python" -m pip install \
      --disable-pip-version-check --progress-bar off ".[test]" \
      --config-settings=cmake.define.TURBOPIPE_SANITIZE="$2" \
      --config-settings=cmake.build-type=RelWithDebInfo \
      --config-settings=build-dir="$dir/cmake" >"$dir/pip.log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$dir/pip.log" | tail -40
    return 1
  fi
  site=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_path('purelib'))")
  so=$(echo "$site"/turbopipe/_core*.so)
  if ! ldd "$so" | grep -q "lib$1\.so"; then
    echo "$so is not linked with lib$1: the sanitizer option did not reach CMake" >&2
    return 1
  fi
  cp tools/sanitize_env.py "$site/_turbopipe_sanitize_env.py"
  echo "import _turbopipe_sanitize_env" >"$site/_turbopipe_sanitize_env.pth"
  cat >"$venv/bin/python-sanitized" <<EOF
#!/bin/sh
# sys.executable of the interpreters of a tools/sanitize.sh run: the runtime preloaded again.
LD_PRELOAD="\$TURBOPIPE_SANITIZER_RUNTIME" exec '$root/$venv/bin/python' "\$@"
EOF
  chmod +x "$venv/bin/python-sanitized"
  echo "built $so"
}

run_tests() {  # $1: asan | tsan, $2: -k expression, then VAR=value settings for the run
  local name=$1 select=$2 dir=build/$1 runtime rc reports
  shift 2
  runtime=$(runtime_of "$name") || return 1
  # ASan looks up the real __cxa_throw when it starts: unless libstdc++ is loaded by then,
  # the first C++ exception (a writer thread that cannot start) trips one of its CHECKs.
  if [ "$name" = asan ]; then runtime="$runtime $(g++ -print-file-name=libstdc++.so.6)"; fi
  reports=$root/$dir/reports
  rm -rf "$reports" && mkdir -p "$reports"
  # nice and env start without the runtime; only the python that env execs has it.
  # --capture=sys: pytest captures Python's sys.stdout/err only, so a report that a runtime
  # writes to fd 2 and then halts the process on reaches pytest.log instead of a temp file.
  nice -n 10 env "$@" \
    PYTHONMALLOC=malloc \
    TURBOPIPE_SANITIZER_RUNTIME="$runtime" \
    TURBOPIPE_SANITIZER_PYTHON="$root/$dir/venv/bin/python-sanitized" \
    LD_PRELOAD="$runtime" \
    "$dir/venv/bin/python" -u -m pytest -q -p no:cacheprovider --capture=sys -k "$select" \
    "${tests[@]}" ${extra[@]+"${extra[@]}"} 2>&1 | tee "$dir/pytest.log"
  rc=${PIPESTATUS[0]}
  if [ -n "$(ls -A "$reports")" ]; then
    echo "--- sanitizer reports ($reports):"
    for report in "$reports"/*; do echo "--- $report"; cat "$report"; done
    rc=1
  fi
  # UBSan writes to stderr; a report in the pytest process halts it, so look for it here.
  if grep -qE "runtime error:|(Address|Thread|UndefinedBehavior|Leak)Sanitizer" "$dir/pytest.log"; then
    echo "--- a sanitizer message is in $dir/pytest.log"
    rc=1
  fi
  return "$rc"
}

total_start=$EPOCHREALTIME
for name in "${names[@]}"; do
  case "$name" in
    asan)
      phase_start "asan build"
      build asan address,undefined
      built=$?
      phase_end $built
      [ $built = 0 ] || continue
      phase_start "asan tests"
      # The RSS test is left out here only: ASan keeps freed memory in its quarantine (up to
      # 256 MiB), so resident memory grows by design. It runs under TSan.
      # detect_leaks=0: CPython leaks by design at exit.
      # The forked-child GL test is left out too: this ASan's allocator is not fork-safe
      # (a lock another thread of the parent holds at fork stays held in the child, whose
      # first allocation then waits forever; seen with GCC 12's libasan).
      # So is the released-buffer test, under both: it has the engine read freed driver
      # memory on purpose (what it checks is that this gets reported), which is what the
      # sanitizers report.
      run_tests asan "native and not test_a_long_run_holds_no_memory_or_references and not test_a_forked_child and not test_a_buffer_released_before_its_sync" \
        ASAN_OPTIONS="detect_leaks=0:log_path=$root/build/asan/reports/asan" \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
      phase_end $?
      ;;
    tsan)
      phase_start "tsan build"
      build tsan thread
      built=$?
      phase_end $built
      [ $built = 0 ] || continue
      phase_start "tsan tests"
      # LP_NUM_THREADS=0: Mesa's llvmpipe renders on the calling thread. Its worker threads
      # partly synchronise in ways TSan cannot see (a lock then a destroy of one of its
      # fence mutexes is reported as a race inside swrast_dri.so); without them nothing of
      # Mesa's own needs suppressing, and _core's threads still race against Mesa's calls.
      # die_after_fork=0: test_fork_with_writes_queued forks a process with writer threads
      # and the child starts its own; TSan would otherwise die there (a TSan limitation).
      # The forked-child GL test is left out: its child's writer thread gets the stack, so
      # the id, of a parent's thread that does not exist in the child, and TSan, which still
      # counts that one, warns "dup thread with used id" and fails the child's exit status.
      run_tests tsan "native and not test_a_forked_child and not test_a_buffer_released_before_its_sync" \
        TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:die_after_fork=0:log_path=$root/build/tsan/reports/tsan" \
        LP_NUM_THREADS=0
      phase_end $?
      ;;
  esac
done

echo
echo "=== summary"
printf '%s\n' "${timings[@]}"
awk -v a="$total_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "total        %7.1fs\n", b - a }'
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}"
  exit 1
fi
echo "all passed, no sanitizer reports"
