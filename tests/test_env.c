/*
 * tests/test_env.c: the options table (core/options.c) against the world.
 *
 *   readme_matches_table  README.md's "Environment" tables list exactly the
 *                         table's environment variables (test-only rows
 *                         aside) and tunables, with the same defaults and
 *                         values (GOSTACK_README: its path, from CMake)
 *   no_getenv             this program interposes getenv and dies if gostack
 *                         calls it for a GOSTACK_ name; with GOSTACK_THP=1 and
 *                         GOSTACK_DECAY_MS=100 in the environment (ctest sets
 *                         them), the default allocator works and has decay 100
 *
 * Linked against the test-hooks library (a static archive: the hidden
 * tables are reachable).
 */
#include "../core/options.h"
#include "test.h"

#include <unistd.h>

extern char **environ;

static char *
env_of(const char *name)
{
	size_t n = strlen(name);

	for (char **e = environ; e != NULL && *e != NULL; e++)
		if (strncmp(*e, name, n) == 0 && (*e)[n] == '=')
			return *e + n + 1;
	return NULL;
}

/* libco-style interposition: gostack must never ask. */
char *
getenv(const char *name)
{
	if (strncmp(name, "GOSTACK_", 8) == 0) {
		static const char msg[] = "test_env: gostack called getenv for a GOSTACK_ variable\n";

		(void)!write(2, msg, sizeof msg - 1);
		abort();
	}
	return env_of(name);
}

static const char *readme_path = GOSTACK_README;

/* The i-th `|`-separated cell of a table row (0: the first after the
 * leading `|`), trimmed and without backticks, into out. */
static void
cell(const char *line, int i, char *out, size_t cap)
{
	const char *p = line + 1;
	size_t n = 0;

	for (; i > 0 && *p != '\0'; p++)
		if (*p == '|')
			i--;
	while (*p == ' ')
		p++;
	for (; *p != '\0' && *p != '|' && *p != '\n' && n + 1 < cap; p++)
		if (*p != '`')
			out[n++] = *p;
	while (n > 0 && out[n - 1] == ' ')
		n--;
	out[n] = '\0';
}

TEST(readme_matches_table)
{
	FILE *f;
	char line[1024], name[128], a[512], b[512];
	bool in_env = false, seen_opt[GOSTACK__OPT_COUNT] = { false }, seen_tun[32] = { false };
	int rows = 0;

	REQUIRE((f = fopen(readme_path, "r")) != NULL);
	while (fgets(line, sizeof line, f) != NULL) {
		if (strncmp(line, "### ", 4) == 0)
			in_env = strncmp(line, "### Environment", 15) == 0;
		if (!in_env || strncmp(line, "| `GOSTACK_", 11) != 0)
			continue;
		cell(line, 0, name, sizeof name);
		rows++;
		int o, t;

		for (o = 0; o < GOSTACK__OPT_COUNT && strcmp(gostack__option_table[o].name, name) != 0; o++)
			;
		for (t = 0; t < gostack__tunable_count && strcmp(gostack__tunable_table[t].name, name) != 0; t++)
			;
		if (o < GOSTACK__OPT_COUNT) {
			const struct gostack__option_row *r = &gostack__option_table[o];

			CHECK(!r->test_only);
			CHECK(!seen_opt[o]);
			seen_opt[o] = true;
			cell(line, 1, a, sizeof a);
			snprintf(b, sizeof b, "%s", r->values);
			for (char *p = b, *q = b;; p++)   /* drop the table's backticks */
				if (*p != '`' && (*q++ = *p) == '\0')
					break;
			if (strcmp(a, b) != 0) {
				fprintf(stderr, "%s: README values \"%s\", table \"%s\"\n", name, a, b);
				CHECK(!"values differ");
			}
			cell(line, 2, a, sizeof a);
			if (strcmp(a, r->def_text) != 0) {
				fprintf(stderr, "%s: README default \"%s\", table \"%s\"\n", name, a, r->def_text);
				CHECK(!"defaults differ");
			}
		} else if (t < gostack__tunable_count) {
			CHECK(!seen_tun[t]);
			seen_tun[t] = true;
			cell(line, 1, a, sizeof a);
			if (strcmp(a, gostack__tunable_table[t].value_text) != 0) {
				fprintf(stderr, "%s: README value \"%s\", table \"%s\"\n", name, a,
				    gostack__tunable_table[t].value_text);
				CHECK(!"tunable values differ");
			}
		} else {
			fprintf(stderr, "README lists %s, which is not in core/options.c's tables\n", name);
			CHECK(!"README row not in the table");
		}
	}
	fclose(f);
	for (int o = 0; o < GOSTACK__OPT_COUNT; o++)
		if (!gostack__option_table[o].test_only && !seen_opt[o]) {
			fprintf(stderr, "%s is in the table but not in README.md\n", gostack__option_table[o].name);
			CHECK(!"table row not in README");
		}
	for (int t = 0; t < gostack__tunable_count; t++)
		if (!seen_tun[t]) {
			fprintf(stderr, "%s is in the table but not in README.md\n", gostack__tunable_table[t].name);
			CHECK(!"tunable not in README");
		}
	printf("     %d README rows, %d options, %d tunables\n", rows, GOSTACK__OPT_COUNT, gostack__tunable_count);
}

TEST(no_getenv)
{
	gostack_stats_detail_t d;
	const char *decay = env_of("GOSTACK_DECAY_MS");

	gostack_t s = gostack_alloc(8192);   /* creates the default allocator, maps an arena */

	REQUIRE(s.lo != 0);
	memset((void *)(s.hi - 1024), 1, 1024);
	gostack_free(s);
	s = gostack_alloc(1 << 20);
	REQUIRE(s.lo != 0);
	gostack_free(s);
	gostack_allocator_stats_detail(gostack_default_allocator(), &d);
	printf("     default allocator: decay_ms %d, GOSTACK_DECAY_MS=%s, GOSTACK_THP=%s\n", d.decay_ms,
	    decay != NULL ? decay : "(unset)", env_of("GOSTACK_THP") != NULL ? env_of("GOSTACK_THP") : "(unset)");
	if (decay != NULL)
		CHECK_EQ(d.decay_ms, atoi(decay) == 0 ? 1000 : atoi(decay));
	if (env_of("GOSTACK_THP") != NULL && strcmp(env_of("GOSTACK_THP"), "1") == 0)
		CHECK_EQ(gostack__opt(GOSTACK__OPT_THP), 1);
}

TEST_MAIN(T(readme_matches_table), T(no_getenv))
