/*
 * tests/test.h: the tiny test harness. TEST(name) defines a test,
 * CHECK(expr) records a failure and goes on, REQUIRE(expr) ends the test.
 * test_skip(why) marks the running test skipped (it counts neither as
 * passed nor failed). Every binary ends with "N passed, N failed, N skipped"
 * and exits non-zero on failure, 77 when every test it ran was skipped
 * (ctest's SKIP_RETURN_CODE: reported as skipped, never as passed).
 * Options every test binary takes:
 *   --backend mutex|lockfree   which global pools the test allocators use
 *   --nocache                  Go's stackNoCache for the test allocators
 *   --debug                    debug mode (config.debug) for the test allocators
 *   --guard BYTES, --decay MS  config.guard_size / config.decay_ms for them
 *   --threads N, --scale N     stress size (defaults are small under sanitizers)
 *   name...                    run only these tests
 */
#ifndef GOSTACK_TEST_H
#define GOSTACK_TEST_H

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gostack.h"

struct test_case { const char *name; void (*fn)(void); };
extern struct test_case test_cases[];
extern int test_ncases;
extern int test_failed_checks;
extern gostack_config_t test_cfg;      /* from --backend / --nocache */
extern int test_threads, test_scale;

#define TEST(name) static void test_##name(void)
#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)

#define CHECK(expr) do { if (!(expr)) { test_failed_checks++; \
	fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #expr); } } while (0)
#define REQUIRE(expr) do { if (!(expr)) { test_failed_checks++; \
	fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #expr); return; } } while (0)
#define CHECK_EQ(a, b) do { uintmax_t va_ = (uintmax_t)(a), vb_ = (uintmax_t)(b); if (va_ != vb_) { \
	test_failed_checks++; fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%ju != %ju)\n", \
	__FILE__, __LINE__, #a, #b, va_, vb_); } } while (0)

/* The running test does not apply here: prints "SKIP: <why>", and the test
 * counts as skipped unless a check failed. The caller returns. */
void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define TEST_SKIP_RC 77

/* Test allocator with the configuration from the command line. */
gostack_allocator_t *test_allocator(void);
/* Stats must balance: inuse + cached + pooled == mapped. */
void test_check_balance(gostack_allocator_t *a, const char *where);
/* Lines in /proc/self/maps; resident set size in bytes. */
long test_maps_lines(void);
long test_rss_bytes(void);
bool test_sanitized(void);

/* Run fn(arg) in a child process (fork), its stderr into buf (NUL-terminated);
 * returns its wait status. test_run_self(argv) as fn: exec this test binary
 * afresh with argv (stdout to /dev/null), e.g. to read the environment anew. */
int test_run_child(void (*fn)(void *), void *arg, char *buf, size_t cap);
void test_run_self(void *argv);

/* Run fn in a child process, which must die of SIGABRT after writing exactly
 * one line to stderr that starts with "gostack: ", names an address (0x...)
 * and contains one of want's '|'-separated alternatives (required). */
void test_expect_abort(const char *name, const char *want, void (*fn)(void));

/* gostack_allocator_stats_detail(a), as a value (for one field of it). */
gostack_stats_detail_t test_detail(gostack_allocator_t *a);
/* gostack_allocator_stats_print(a) into buf (NUL-terminated, at most cap
 * bytes, through a pipe); returns stats_print's result. */
int test_stats_printed(gostack_allocator_t *a, char *buf, size_t cap);
/* Free s on a thread of its own (by lo alone if by_lo), joined. */
void test_free_on_thread(gostack_allocator_t *a, gostack_t s, bool by_lo);

/* Stamps: a token written at both ends and in the middle of a stack. */
void stamp_set(gostack_t s, uint64_t token);
bool stamp_ok(gostack_t s, uint64_t token);

static inline uint64_t
test_rand(uint64_t *s)   /* splitmix64 */
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

#define TEST_MAIN(...) \
	struct test_case test_cases[] = { __VA_ARGS__ }; \
	int test_ncases = (int)(sizeof test_cases / sizeof test_cases[0]);
#define T(name) { #name, test_##name }

#endif
