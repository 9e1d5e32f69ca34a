#!/bin/sh
# tests/valgrind_tools.sh VALGRIND TEST_VALGRIND: the -DGOSTACK_VALGRIND=ON
# build's checks (core/tools.c), each able to fail:
#   switch  coroutines on gostack stacks: no "client switching stacks?"
#           warning (the stacks are registered) and no memcheck error
#   uaf     a write into a freed stack: memcheck reports "Invalid write"
set -u
vg=$1 prog=$2
supp=$(dirname "$0")/valgrind.supp
out=$(mktemp) || exit 2
trap 'rm -f "$out"' EXIT
fail=0

"$vg" --error-exitcode=9 --suppressions="$supp" "$prog" switch >"$out" 2>&1
rc=$?
cat "$out"
if [ $rc -ne 0 ]; then
	echo "valgrind_tools: switch: exit status $rc, want 0"; fail=1
fi
if grep -q "client switching stacks" "$out"; then
	echo "valgrind_tools: switch: Valgrind did not know the stacks (client switching stacks?)"; fail=1
fi
grep -q "test_valgrind switch: ok" "$out" || { echo "valgrind_tools: switch: did not finish"; fail=1; }

"$vg" --error-exitcode=9 --suppressions="$supp" "$prog" uaf >"$out" 2>&1
rc=$?
cat "$out"
if [ $rc -ne 9 ]; then
	echo "valgrind_tools: uaf: exit status $rc, want 9 (a memcheck error)"; fail=1
fi
if ! grep -q "Invalid write of size 1" "$out"; then
	echo "valgrind_tools: uaf: no \"Invalid write\" for a write into a freed stack"; fail=1
fi
[ $fail -eq 0 ] && echo "valgrind_tools: ok"
exit $fail
