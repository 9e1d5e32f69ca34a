/*
 * options.h: every knob of gostack in one place (mimalloc's options.c is
 * the model). Two kinds of row, both in core/options.c's tables:
 *   - environment variables, read once from `environ` (never getenv: a host
 *     may interpose it) at library load and at the first gostack__init(),
 *     never from an allocation; a bad value prints one
 *     "gostack: warning: NAME=value ..." line and the default is used;
 *   - compile-time tunables, the macros below, listed with their values so
 *     that the table documents every knob.
 * README.md's "Environment" section lists the same rows; tests/test_env.c
 * holds the two against each other.
 */
#ifndef GOSTACK_OPTIONS_H
#define GOSTACK_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>

/* ---- compile-time tunables --------------------------------------------- */

/* Freed span memory the heap keeps committed, process-wide, before it
 * scavenges all of it (Go's heap keeps freed pages until its scavenger runs). */
#define GOSTACK__HEAP_RETAIN ((size_t)16 << 20)
/* How many bytes stackLarge keeps per allocator before frees go to the heap. */
#define GOSTACK__LARGE_KEEP ((size_t)64 << 20)
/* A lock-free order's pool spans past which carving a new span first sweeps
 * (and 2x what the last sweep left, so sweeps stay rare). */
#define GOSTACK__LF_SWEEP_MIN ((size_t)8 << 20)
/* config.decay_ms 0 (and GOSTACK_DECAY_MS unset or 0) means this. */
#define GOSTACK__DECAY_DEFAULT_MS 1000
/* The scavenger's period bounds: a pass every max(MIN, min(MAX, decay / 2)). */
#define GOSTACK__SCAV_PERIOD_MIN_MS 10
#define GOSTACK__SCAV_PERIOD_MAX_MS 1000
/* The lock-free per-CPU tier (lockfree/percpu.c): bytes of free stacks one
 * CPU's bin of one order holds at most, and the slots of a bin. */
#define GOSTACK__PCPU_BIN_BYTES ((size_t)512 << 10)
#define GOSTACK__PCPU_SLOTS 64
/* Transfer batches (lockfree/transfer.c): stacks a full bin sends to the
 * global pool in one batch, and batch descriptors per CPU (all orders). */
#define GOSTACK__PCPU_XFER 16
#define GOSTACK__PCPU_XFER_BATCHES 16
/* ... and for large stacks (32 KiB .. 1 MiB, one bin per log2 class):
 * bytes a bin holds at most (but always one span), and its slots. */
#define GOSTACK__PCPU_LARGE_BYTES ((size_t)512 << 10)
#define GOSTACK__PCPU_LARGE_SLOTS 4
/* At exit, how long the destructor waits for the scavenger to finish a pass
 * and be joined. */
#define GOSTACK__SCAV_EXIT_WAIT_MS 1000

/* ---- environment variables ---------------------------------------------- */

enum gostack__opt {
	GOSTACK__OPT_NOCACHE,     /* bool: the default allocator's no_cache */
	GOSTACK__OPT_BACKEND,     /* gostack_backend_t: the default allocator's pools */
	GOSTACK__OPT_GUARD,       /* bytes: the default allocator's guard_size */
	GOSTACK__OPT_DECAY_MS,    /* int: the default allocator's decay_ms */
	GOSTACK__OPT_STATS,       /* bool: print the default allocator's stats at exit */
	GOSTACK__OPT_DEBUG,       /* bool: debug mode in every allocator */
	GOSTACK__OPT_THP,         /* bool: leave stack memory to transparent huge pages */
	GOSTACK__OPT_PROFILE,     /* int: depth profile, one stack in N, for every allocator leaving it 0 */
	GOSTACK__OPT_PERCPU,      /* bool: the lock-free per-CPU tier (0: off in every allocator) */
	GOSTACK__OPT_TEST_YIELD,  /* int, test builds only: lfstack.c's yield injection */
	GOSTACK__OPT_COUNT
};

enum gostack__opt_kind { GOSTACK__OPT_BOOL, GOSTACK__OPT_INT, GOSTACK__OPT_BYTES, GOSTACK__OPT_ENUM_BACKEND };

struct gostack__option_row {
	const char *name;          /* the environment variable */
	enum gostack__opt_kind kind;
	long long def, min, max;   /* default value and bounds (ints, bytes) */
	const char *def_text;      /* the default as README.md shows it */
	const char *values;        /* what is accepted, as README.md shows it */
	const char *meaning;
	bool test_only;            /* honoured only in GOSTACK_TEST_HOOKS builds; not in README's table */
};

struct gostack__tunable_row {
	const char *name;          /* the macro */
	long long value;
	const char *value_text;    /* as README.md shows it */
	const char *meaning;
};

extern const struct gostack__option_row gostack__option_table[GOSTACK__OPT_COUNT]
    __attribute__((visibility("hidden")));
extern const struct gostack__tunable_row gostack__tunable_table[]
    __attribute__((visibility("hidden")));
extern const int gostack__tunable_count __attribute__((visibility("hidden")));

/* Parse the environment (once; later calls return at once). */
__attribute__((visibility("hidden"))) void gostack__options_init(void);
/* An option's value: from the environment if it was given and valid, else
 * its default. Parses first if nothing did yet. */
__attribute__((visibility("hidden"))) long long gostack__opt(enum gostack__opt o);

#endif /* GOSTACK_OPTIONS_H */
