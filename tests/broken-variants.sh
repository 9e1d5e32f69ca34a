#!/usr/bin/env bash
# Shows that the concurrency tests can fail: builds deliberately broken
# variants and runs the test that must catch each one. Not part of ctest
# (each variant is expected to crash or report corruption).
#   no-grace    GOSTACK_TEST_NO_GRACE: the lock-free retirement design
#               without its grace period: retired pool spans go back to the
#               heap (and may be reused, here as guard regions:
#               gostack__test_guard_free) while a pop may still read them,
#               and arenas are unmapped without a grace period
#               -> lockfree.reclaim_torture must fail
#   unsafe-pop  GOSTACK_TEST_UNSAFE_POP: single-width CAS pops (ABA-prone)
#               -> lockfree.aba must fail
#   no-lock     the mutex pools with their locks removed (a patched copy)
#               -> stress.mutex.nocache must fail
#   eager-decay the scavenger's lock-free sweep retiring every span it sees,
#               free or not (a patched copy) -> stress.lockfree.decay must fail
#   reachable   the lock-free sweep retiring fully free spans but pushing
#               their stacks back onto the pool (a patched copy): a retired
#               span's stacks stay reachable after its memory went back to
#               the heap -> lockfree.reclaim_torture must fail
#   no-compat   GOSTACK_TEST_NO_COMPAT: the GOSTACK_0 versions of the
#               functions whose structs grew take today's layouts (reading
#               and writing past an 0.1 binary's structs)
#               -> abi.old_header (test_abi_old) must fail
#   no-join     the scavenger not stopped and joined at exit (a patched
#               copy) -> tools.valgrind must report its thread's leak
#   no-fence    the per-CPU tier's drain without its membarrier fence (a
#               patched copy): a CS in flight on the drained CPU commits
#               after the drainer read the bin -> lockfree.percpu must fail
#   no-cpu-check the per-CPU CS without its CPU compare (a patched copy): a
#               thread migrated between reading the CPU and the CS writes
#               another CPU's bin -> lockfree.percpu must fail
#   undrained   the lock-free sweep not draining the transfer batches (a
#               patched copy): stacks that crossed CPUs in batches are out
#               of every sweep, so their spans never go back
#               -> lockfree.percpu (transfer) must fail
#   stale-depth the depth profile not giving a sampled stack's lower pages
#               back at handout (a patched copy): a previous, deeper use
#               shows in the sample -> profile.* (known_depth) must fail
#   unmeasured  the cached free comparing lo with lo_off alone, not the
#               span's sampled bits above it (a patched copy): a sampled
#               stack freed by the cached path is never measured
#               -> profile.* (known_depth) must fail
# Usage: tests/broken-variants.sh [RUNS]   (default 3 runs per variant)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
status=0

try() {   # name, build dir, test binary + args
	local name=$1 dir=$2; shift 2
	local caught=0
	for i in $(seq "$runs"); do
		if GOSTACK_TEST_YIELD=8 timeout 300 "$dir/tests/$@" >"$work/out" 2>&1; then
			echo "$name run $i: PASSED (not caught): $(tail -1 "$work/out")"
		else
			rc=$?
			caught=$((caught + 1))
			if [ "$rc" -eq 124 ]; then   # timeout(1): the unbroken tests finish well within it
				why="hung: killed by timeout after 300 s"
			else
				why=$(grep -m1 -E 'CHECK|corrupt [1-9]|FAIL' "$work/out" || echo "killed by signal $((rc - 128))")
			fi
			echo "$name run $i: caught (exit $rc): $why"
		fi
	done
	echo "$name: caught in $caught of $runs runs"
	[ "$caught" -eq "$runs" ] || status=1
}

cmake -S "$root" -B "$work/nograce" -DGOSTACK_TEST_NO_GRACE=ON -DGOSTACK_BUILD_HARNESS=OFF -DGOSTACK_BUILD_EXAMPLES=OFF >/dev/null &&
	cmake --build "$work/nograce" -j2 --target test_lockfree >/dev/null || exit 2
try no-grace "$work/nograce" test_lockfree --backend lockfree --scale 1 reclaim_torture

cmake -S "$root" -B "$work/unsafepop" -DGOSTACK_TEST_UNSAFE_POP=ON -DGOSTACK_BUILD_HARNESS=OFF -DGOSTACK_BUILD_EXAMPLES=OFF >/dev/null &&
	cmake --build "$work/unsafepop" -j2 --target test_lockfree >/dev/null || exit 2
try unsafe-pop "$work/unsafepop" test_lockfree --backend lockfree --scale 1 aba

# A patched copy of the sources: name, file under the tree, sed script, a
# marker the patch leaves, test target. Built into $work/<name>.
patched() {
	local name=$1 file=$2 script=$3 marker=$4 target=$5
	rm -rf "$work/src-$name" && mkdir -p "$work/src-$name"
	cp -r "$root/CMakeLists.txt" "$root/cmake" "$root/core" "$root/include" "$root/lockfree" "$root/tests" \
		"$work/src-$name/"
	sed -i "$script" "$work/src-$name/$file"
	grep -q "$marker" "$work/src-$name/$file" || { echo "$name: patch did not apply"; exit 2; }
	cmake -S "$work/src-$name" -B "$work/$name" -DGOSTACK_BUILD_HARNESS=OFF -DGOSTACK_BUILD_EXAMPLES=OFF >/dev/null &&
		cmake --build "$work/$name" -j2 --target "$target" >/dev/null || exit 2
}

patched nolock core/mutex/stackpool.c \
	's/pthread_mutex_lock(&mp->stackpool\[order\].mu);/\/* lock removed *\//; s/pthread_mutex_unlock(&mp->stackpool\[order\].mu);/\/* unlock removed *\//' \
	"lock removed" test_stress
try no-lock "$work/nolock" test_stress --backend mutex --nocache --threads 16 --scale 20 exchange

patched eager lockfree/stackpool.c \
	's|bool free_span = gostack__lf(s)->sweep_count == s->nelems;|bool free_span = gostack__lf(s)->sweep_count == s->nelems \|\| idle_pass != 0; /* BROKEN */|' \
	"BROKEN" test_stress
try eager-decay "$work/eager" test_stress --backend lockfree --decay 1 --threads 16

patched reachable lockfree/stackpool.c \
	's#if (gostack__lf(s)->sweep_count != s->nelems ||#if (1 /* BROKEN */ || gostack__lf(s)->sweep_count != s->nelems ||#' \
	"BROKEN" test_lockfree
try reachable "$work/reachable" test_lockfree --backend lockfree --scale 1 reclaim_torture

cmake -S "$root" -B "$work/nocompat" -DGOSTACK_TEST_NO_COMPAT=ON -DGOSTACK_BUILD_HARNESS=OFF -DGOSTACK_BUILD_EXAMPLES=OFF >/dev/null &&
	cmake --build "$work/nocompat" -j2 --target test_abi_old >/dev/null || exit 2
LD_LIBRARY_PATH="$work/nocompat" try no-compat "$work/nocompat" test_abi_old

patched nofence lockfree/percpu.c \
	's|if (syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU, c) != 0 \&\&|if (0 /* BROKEN */ \&\& syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU, c) != 0 \&\&|' \
	"BROKEN" test_lockfree
try no-fence "$work/nofence" test_lockfree --backend lockfree --scale 1 percpu

patched nocpu lockfree/percpu.c \
	's|"cmpl %\[cpu\], %%fs:4(%\[rs\])\\n\\t" \\|"/* BROKEN: no CPU compare */\\n\\t" \\|; /"jnz 4f\\n\\t" \\/d' \
	"BROKEN" test_lockfree
try no-cpu-check "$work/nocpu" test_lockfree --backend lockfree --scale 1 percpu

patched undrained lockfree/stackpool.c \
	's|^\tx = gostack__lf_xfer_drain(lp, order, x);|\t(void)0; /* BROKEN */|' \
	"BROKEN" test_lockfree
try undrained "$work/undrained" test_lockfree --backend lockfree --scale 1 transfer

patched staledepth core/profile.c \
	's|^\t\tgostack__os_decommit((void \*)lo, p - lo);|\t\t(void)0; /* BROKEN */|; s|^\t\tgostack__os_decommit((void \*)lo, n);|\t\t(void)0; /* BROKEN */|' \
	"BROKEN" test_profile
try stale-depth "$work/staledepth" test_profile --backend lockfree known_depth

patched unmeasured core/stack.c \
	's|(lo \& s->stride_mask) != atomic_load_explicit(\&s->lo_sampled, memory_order_relaxed))) {|(lo \& s->stride_mask) != (uint32_t)atomic_load_explicit(\&s->lo_sampled, memory_order_relaxed) /* BROKEN */)) {|' \
	"BROKEN" test_profile
try unmeasured "$work/unmeasured" test_profile --backend lockfree known_depth

if command -v valgrind >/dev/null; then
	patched nojoin core/scavenger.c \
		's|^__attribute__((destructor)) static void|static __attribute__((used)) void /* BROKEN */|' \
		"BROKEN" test_valgrind
	caught=0
	for i in $(seq "$runs"); do
		if sh "$root/tests/valgrind_tools.sh" valgrind "$work/nojoin/tests/test_valgrind" >"$work/out" 2>&1; then
			echo "no-join run $i: PASSED (not caught)"
		else
			caught=$((caught + 1))
			echo "no-join run $i: caught: $(grep -m1 'valgrind_tools:' "$work/out")"
		fi
	done
	echo "no-join: caught in $caught of $runs runs"
	[ "$caught" -eq "$runs" ] || status=1
else
	echo "no-join: SKIP (no valgrind)"
fi
exit $status
