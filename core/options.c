/*
 * options.c: the tables of options.h and their one parser.
 *
 * The environment is read from `environ` directly, with no call to getenv
 * (coroutine libraries such as libco interpose getenv, and gostack's first
 * call may come from inside their half-built thread environment) and no
 * malloc; once, at library load (a constructor) or at the first
 * gostack__init(), whichever runs first; never from an allocation.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define BOOL_VALUES "`1` / `0` (also true/false, yes/no)"

const struct gostack__option_row gostack__option_table[GOSTACK__OPT_COUNT] = {
	[GOSTACK__OPT_NOCACHE] = { "GOSTACK_NOCACHE", GOSTACK__OPT_BOOL, 0, 0, 1, "0", BOOL_VALUES,
	    "Go's `stackNoCache` for the default allocator", false },
	[GOSTACK__OPT_BACKEND] = { "GOSTACK_BACKEND", GOSTACK__OPT_ENUM_BACKEND, GOSTACK_BACKEND_DEFAULT, 0, 0,
	    "lockfree", "`lockfree` / `mutex`", "pools of the default allocator and of every allocator made with GOSTACK_BACKEND_DEFAULT", false },
	[GOSTACK__OPT_GUARD] = { "GOSTACK_GUARD", GOSTACK__OPT_BYTES, 0, 0, (long long)GOSTACK_MAX_SIZE, "0",
	    "bytes, `K`/`M`/`G` suffix allowed, 0..1G",
	    "guard below every stack of the default allocator (rounded up to pages; 0: none)", false },
	[GOSTACK__OPT_DECAY_MS] = { "GOSTACK_DECAY_MS", GOSTACK__OPT_INT, 0, INT32_MIN, INT32_MAX, "1000",
	    "integer ms; `0` default; negative: never",
	    "idle memory of the default allocator back to the OS after this long", false },
	[GOSTACK__OPT_STATS] = { "GOSTACK_STATS", GOSTACK__OPT_BOOL, 0, 0, 1, "0", BOOL_VALUES,
	    "print the default allocator's statistics to stderr at exit", false },
	[GOSTACK__OPT_DEBUG] = { "GOSTACK_DEBUG", GOSTACK__OPT_BOOL, 0, 0, 1, "0", BOOL_VALUES,
	    "debug mode in every allocator of the process (see below)", false },
	[GOSTACK__OPT_THP] = { "GOSTACK_THP", GOSTACK__OPT_BOOL, 0, 0, 1, "0", BOOL_VALUES,
	    "leave stack memory eligible for transparent huge pages (see below)", false },
	[GOSTACK__OPT_PROFILE] = { "GOSTACK_PROFILE", GOSTACK__OPT_INT, 0, 0, 1 << 30, "0",
	    "integer N, 0..2^30", "depth profile of every allocator that leaves config.profile 0: one stack in N (0: off; see below)", false },
	[GOSTACK__OPT_PERCPU] = { "GOSTACK_PERCPU", GOSTACK__OPT_BOOL, 1, 0, 1, "1", BOOL_VALUES,
	    "the lock-free pools' per-CPU tier (rseq); 0 turns it off in every allocator (see below)", false },
	[GOSTACK__OPT_TEST_YIELD] = { "GOSTACK_TEST_YIELD", GOSTACK__OPT_INT, 0, 0, 1000000000, "0",
	    "integer N", "test builds only: a sched_yield() in one of N lock-free pop windows", true },
};

const struct gostack__tunable_row gostack__tunable_table[] = {
	{ "GOSTACK__HEAP_RETAIN", (long long)GOSTACK__HEAP_RETAIN, "16 MiB",
	    "dirty free memory the heap keeps, process-wide, before it scavenges it all" },
	{ "GOSTACK__LARGE_KEEP", (long long)GOSTACK__LARGE_KEEP, "64 MiB",
	    "bytes of free large stacks stackLarge keeps per allocator" },
	{ "GOSTACK__LF_SWEEP_MIN", (long long)GOSTACK__LF_SWEEP_MIN, "8 MiB",
	    "a lock-free order's spans past which a refill sweeps before it carves (and 2x the last sweep's)" },
	{ "GOSTACK__DECAY_DEFAULT_MS", GOSTACK__DECAY_DEFAULT_MS, "1000",
	    "what decay_ms 0 means" },
	{ "GOSTACK__SCAV_PERIOD_MIN_MS", GOSTACK__SCAV_PERIOD_MIN_MS, "10",
	    "the scavenger's shortest period (ms)" },
	{ "GOSTACK__SCAV_PERIOD_MAX_MS", GOSTACK__SCAV_PERIOD_MAX_MS, "1000",
	    "the scavenger's longest period (ms)" },
	{ "GOSTACK__PCPU_BIN_BYTES", (long long)GOSTACK__PCPU_BIN_BYTES, "512 KiB",
	    "free stacks one CPU's per-CPU bin of one order holds at most (lock-free pools)" },
	{ "GOSTACK__PCPU_SLOTS", GOSTACK__PCPU_SLOTS, "64", "slots of a per-CPU bin (bound the 2 and 4 KiB orders before the bytes do)" },
	{ "GOSTACK__PCPU_XFER", GOSTACK__PCPU_XFER, "16", "stacks a full per-CPU bin sends to the global pool in one transfer batch" },
	{ "GOSTACK__PCPU_XFER_BATCHES", GOSTACK__PCPU_XFER_BATCHES, "16", "transfer batch descriptors per CPU (all orders)" },
	{ "GOSTACK__PCPU_LARGE_BYTES", (long long)GOSTACK__PCPU_LARGE_BYTES, "512 KiB",
	    "free large stacks (32 KiB .. 1 MiB) one CPU's bin of one log2 class holds at most (always one)" },
	{ "GOSTACK__PCPU_LARGE_SLOTS", GOSTACK__PCPU_LARGE_SLOTS, "4", "slots of a per-CPU large bin" },
	{ "GOSTACK__SCAV_EXIT_WAIT_MS", GOSTACK__SCAV_EXIT_WAIT_MS, "1000",
	    "at exit, the longest wait for the scavenger thread to be joined (ms)" },
};
const int gostack__tunable_count = (int)(sizeof gostack__tunable_table / sizeof gostack__tunable_table[0]);

extern char **environ;

static long long values[GOSTACK__OPT_COUNT];
static pthread_once_t parse_once = PTHREAD_ONCE_INIT;
/* Release: pairs with the acquire in gostack__opt(); values[] are set first. */
static _Atomic bool parsed;

/* The value of NAME in environ, or NULL: no getenv (file comment). */
static const char *
env_lookup(const char *name)
{
	size_t n = strlen(name);

	if (environ == NULL)
		return NULL;
	for (char **e = environ; *e != NULL; e++)
		if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
			return *e + n + 1;
	return NULL;
}

static bool
parse_bool(const struct gostack__option_row *r, const char *v, long long *out)
{
	if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0 || strcmp(v, "yes") == 0)
		*out = 1;
	else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0 || strcmp(v, "no") == 0)
		*out = 0;
	else {
		gostack__warn("%s=%s is not 0 or 1; using %lld", r->name, v, r->def);
		return false;
	}
	return true;
}

/* An integer in [min, max], with an optional K, M or G suffix (powers of
 * 1024) for bytes. */
static bool
parse_int(const struct gostack__option_row *r, const char *v, long long *out)
{
	bool suffixes = r->kind == GOSTACK__OPT_BYTES;
	char *end;
	long long x;

	errno = 0;
	x = strtoll(v, &end, 10);
	if (suffixes && end != v) {
		int shift = *end == 'k' || *end == 'K' ? 10 : *end == 'm' || *end == 'M' ? 20 :
		    *end == 'g' || *end == 'G' ? 30 : 0;

		if (shift != 0) {
			end++;
			if (x > (r->max >> shift) || x < -(r->max >> shift))
				errno = ERANGE;
			else
				x *= 1ll << shift;
		}
	}
	if (end == v || *end != '\0' || errno != 0 || x < r->min || x > r->max) {
		gostack__warn("%s=%s is not an integer in [%lld, %lld]%s; using %s", r->name, v, r->min, r->max,
		    suffixes ? " (K, M, G suffixes allowed)" : "", r->def_text);
		return false;
	}
	*out = x;
	return true;
}

static bool
parse_backend(const struct gostack__option_row *r, const char *v, long long *out)
{
	if (strcmp(v, "mutex") == 0) {
		*out = GOSTACK_BACKEND_MUTEX;
		return true;
	}
#ifdef GOSTACK_HAVE_LOCKFREE
	if (strcmp(v, "lockfree") == 0) {
		*out = GOSTACK_BACKEND_LOCKFREE;
		return true;
	}
	gostack__warn("%s=%s is not mutex or lockfree; using the default", r->name, v);
#else
	gostack__warn("%s=%s is not mutex or lockfree (lockfree not built); using the default", r->name, v);
#endif
	return false;
}

static void
parse(void)
{
	for (int i = 0; i < GOSTACK__OPT_COUNT; i++) {
		const struct gostack__option_row *r = &gostack__option_table[i];
		const char *v = env_lookup(r->name);
		long long x = r->def;

		values[i] = r->def;
#ifndef GOSTACK_TEST_HOOKS
		if (r->test_only)
			continue;
#endif
		if (v == NULL || *v == '\0')
			continue;
		bool ok = r->kind == GOSTACK__OPT_BOOL ? parse_bool(r, v, &x) :
		    r->kind == GOSTACK__OPT_ENUM_BACKEND ? parse_backend(r, v, &x) : parse_int(r, v, &x);

		if (ok)
			values[i] = x;
	}
	atomic_store_explicit(&parsed, true, memory_order_release);
}

void
gostack__options_init(void)
{
	pthread_once(&parse_once, parse);
}

__attribute__((constructor)) static void
options_at_load(void)
{
	gostack__options_init();
}

long long
gostack__opt(enum gostack__opt o)
{
	/* Pairs with the release store at the end of parse(). */
	if (__builtin_expect(!atomic_load_explicit(&parsed, memory_order_acquire), 0))
		gostack__options_init();
	return values[o];
}
