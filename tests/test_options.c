/*
 * tests/test_options.c: memory that goes back by itself (config.decay_ms,
 * GOSTACK_DECAY_MS), statistics, and the environment variables.
 */
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#if defined(__SANITIZE_THREAD__)
static const bool tsan = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
static const bool tsan = true;
#else
static const bool tsan = false;
#endif
#else
static const bool tsan = false;
#endif

static gostack_allocator_t *
with_decay(int decay_ms)
{
	gostack_config_t c = test_cfg;

	c.decay_ms = decay_ms;
	return gostack_allocator_new(&c);
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t
mapped(gostack_allocator_t *a)
{
	gostack_stats_t st;

	gostack_allocator_stats(a, &st);
	return st.mapped_bytes;
}

enum { NLARGE = 512, NSMALL = 2048 };
static gostack_t large[NLARGE], small[NSMALL];

/* 32 MiB of 64 KiB stacks and 16 MiB of 8 KiB ones, every page touched. */
static void
fill(gostack_allocator_t *a)
{
	for (int i = 0; i < NLARGE; i++) {
		large[i] = gostack_allocator_alloc(a, 65536);
		REQUIRE(large[i].lo != 0);
		memset((void *)large[i].lo, 1, 65536);
	}
	for (int i = 0; i < NSMALL; i++) {
		small[i] = gostack_allocator_alloc(a, 8192);
		REQUIRE(small[i].lo != 0);
		memset((void *)small[i].lo, 1, 8192);
	}
}

static void
drain(gostack_allocator_t *a)
{
	for (int i = 0; i < NLARGE; i++)
		gostack_allocator_free(a, large[i]);
	for (int i = 0; i < NSMALL; i++)
		gostack_allocator_free(a, small[i]);
	gostack_thread_flush();
}

/* Idle memory goes back without reclaim, not before decay_ms, and RSS falls. */
TEST(decay_returns_memory)
{
	const int decay = 1000;
	gostack_allocator_t *a = with_decay(decay);

	REQUIRE(a != NULL);
	long rss0 = test_rss_bytes();
	fill(a);
	long rss_full = test_rss_bytes();
	drain(a);
	double t0 = now_s();
	long rss_freed = test_rss_bytes();
	size_t m_freed = mapped(a);

	test_check_balance(a, "freed, before decay");
	usleep(100 * 1000);
	size_t m_early = mapped(a);
	double t_early = now_s() - t0;
	while (mapped(a) != 0 && now_s() - t0 < 10)
		usleep(20 * 1000);
	double t_back = now_s() - t0;
	long rss_after;

	/* Retired lock-free spans are unmapped by the RCU worker after a grace period. */
	while ((rss_after = test_rss_bytes()) - rss0 >= 8l << 20 && !tsan && now_s() - t0 < t_back + 5)
		usleep(20 * 1000);

	printf("     decay_ms %d: RSS %.1f MiB -> in use %.1f -> freed %.1f -> after decay %.1f MiB; "
	    "mapped %.1f MiB at free, %.1f MiB after %.0f ms, 0 after %.0f ms\n", decay,
	    rss0 / 1048576.0, rss_full / 1048576.0, rss_freed / 1048576.0, rss_after / 1048576.0,
	    m_freed / 1048576.0, m_early / 1048576.0, t_early * 1000, t_back * 1000);
	CHECK(m_freed >= (size_t)32 << 20);           /* stackLarge keeps the 64 KiB stacks */
	if (t_early < decay / 2000.0)                 /* (a stalled machine proves nothing) */
		CHECK(m_early >= (size_t)32 << 20);     /* not back before decay_ms */
	CHECK_EQ(mapped(a), 0);                       /* back without reclaim */
	CHECK(t_back < 4.0 * decay / 1000 + 1);
	if (!tsan) {   /* ThreadSanitizer's shadow of the touched memory stays in RSS */
		CHECK(rss_full - rss0 >= 40l << 20);
		CHECK(rss_freed - rss0 >= 24l << 20); /* still committed right after free */
		CHECK(rss_after - rss0 < 8l << 20);
	}
	test_check_balance(a, "after decay");
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* decay_ms < 0: nothing goes back until reclaim. */
TEST(decay_never)
{
	gostack_allocator_t *a = with_decay(-1);

	REQUIRE(a != NULL);
	long rss0 = test_rss_bytes();
	fill(a);
	drain(a);
	size_t m = mapped(a);

	usleep(700 * 1000);
	long rss_later = test_rss_bytes();

	printf("     decay_ms -1: mapped %.1f MiB at free, %.1f MiB 700 ms later; RSS +%.1f MiB\n",
	    m / 1048576.0, mapped(a) / 1048576.0, (rss_later - rss0) / 1048576.0);
	CHECK(m >= (size_t)32 << 20);
	CHECK_EQ(mapped(a), m);
	if (!tsan)
		CHECK(rss_later - rss0 >= 24l << 20);
	gostack_allocator_reclaim(a);
	CHECK_EQ(mapped(a), 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* A fork child gets a scavenger of its own. */
TEST(decay_in_fork_child)
{
	if (test_sanitized()) {
		test_skip("sanitized build (threads in a fork child)");
		return;
	}
	gostack_allocator_t *a = with_decay(100);

	REQUIRE(a != NULL);
	gostack_free(gostack_alloc(65536));   /* the scavenger runs in the parent */
	fflush(stdout);
	pid_t pid = fork();

	if (pid == 0) {
		alarm(60);
		gostack_t s = gostack_allocator_alloc(a, 1 << 20);

		if (s.lo == 0)
			_exit(3);
		gostack_allocator_free(a, s);
		for (int i = 0; i < 200 && mapped(a) != 0; i++)
			usleep(20 * 1000);
		_exit(mapped(a) == 0 ? 0 : 4);
	}
	int status = 0;

	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* GOSTACK_DECAY_MS for the default allocator (ctest sets 100). */
TEST(default_allocator_env_decay)
{
	if (getenv("GOSTACK_DECAY_MS") == NULL) {
		test_skip("GOSTACK_DECAY_MS not set");
		return;
	}
	gostack_allocator_t *a = gostack_default_allocator();
	gostack_t s = gostack_alloc(256 << 10);

	REQUIRE(s.lo != 0);
	gostack_free(s);
	gostack_thread_flush();
	double t0 = now_s();

	while (mapped(a) != 0 && now_s() - t0 < 10)
		usleep(10 * 1000);
	printf("     GOSTACK_DECAY_MS=%s: mapped 0 after %.0f ms\n", getenv("GOSTACK_DECAY_MS"), (now_s() - t0) * 1000);
	CHECK_EQ(mapped(a), 0);
}

/* ---- huge pages ---- */

/* The VmFlags line of the mapping holding addr ("" if none). */
static void
vmflags_of(uintptr_t addr, char *out, size_t cap)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool in = false;

	out[0] = '\0';
	if (f == NULL)
		return;
	while (fgets(line, sizeof line, f) != NULL) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = addr >= lo && addr < hi;
		else if (in && strncmp(line, "VmFlags:", 8) == 0) {
			snprintf(out, cap, "%s", line + 8);
			break;
		}
	}
	fclose(f);
}

/* Stack memory is MADV_NOHUGEPAGE ("nh") unless GOSTACK_THP=1. */
TEST(no_huge_pages)
{
	gostack_allocator_t *a = test_allocator();
	gostack_t s = gostack_allocator_alloc(a, 8192), l = gostack_allocator_alloc(a, 1 << 20);
	char f1[512], f2[512];
	bool thp = getenv("GOSTACK_THP") != NULL && strcmp(getenv("GOSTACK_THP"), "1") == 0;

	REQUIRE(s.lo != 0 && l.lo != 0);
	vmflags_of(s.lo, f1, sizeof f1);
	vmflags_of(l.lo, f2, sizeof f2);
	printf("     VmFlags of an 8 KiB stack:%s", f1);
	CHECK(f1[0] != '\0' && f2[0] != '\0');
	CHECK((strstr(f1, " nh") != NULL) == !thp);
	CHECK((strstr(f2, " nh") != NULL) == !thp);
	gostack_allocator_free(a, s);
	gostack_allocator_free(a, l);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* ---- statistics ---- */

TEST(stats_detail)
{
	gostack_allocator_t *a = with_decay(-1);
	static const size_t sz[] = { 2048, 4096, 8192, 16384, 32768, 1 << 20 };
	gostack_t s[6][5];
	gostack_stats_detail_t d;
	gostack_stats_t t;

	REQUIRE(a != NULL);
	for (int i = 0; i < 6; i++)
		for (int j = 0; j < 5; j++)
			REQUIRE((s[i][j] = gostack_allocator_alloc(a, sz[i])).lo != 0);
	for (int i = 0; i < 6; i++)
		gostack_allocator_free(a, s[i][4]);
	gostack_allocator_stats_detail(a, &d);
	gostack_allocator_stats(a, &t);
	CHECK(memcmp(&d.total, &t, sizeof t) == 0);
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		CHECK_EQ(d.order[o].size, (size_t)2048 << o);
		CHECK_EQ(d.order[o].allocs, 5);
		CHECK_EQ(d.order[o].frees, 1);
		CHECK_EQ(d.order[o].inuse_bytes, 4 * d.order[o].size);
	}
	CHECK_EQ(d.large.size, 0);
	CHECK_EQ(d.large.allocs, 10);
	CHECK_EQ(d.large.frees, 2);
	CHECK_EQ(d.large.inuse_bytes, 4 * (32768 + (1 << 20)));
	CHECK_EQ(d.large.pooled_bytes, 32768 + (1 << 20));   /* stackLarge keeps them */
	size_t inuse = d.large.inuse_bytes, cached = 0, pooled = d.large.pooled_bytes;

	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		inuse += d.order[o].inuse_bytes;
		cached += d.order[o].cached_bytes;
		pooled += d.order[o].pooled_bytes;
	}
	CHECK_EQ(inuse, d.total.inuse_bytes);
	CHECK_EQ(cached, d.total.cached_bytes);
	CHECK_EQ(pooled, d.total.pooled_bytes);
	CHECK_EQ(inuse + cached + pooled, d.total.mapped_bytes);
	CHECK_EQ(d.decay_ms, -1);
	CHECK_EQ(d.guard_size, 0);
	CHECK_EQ(d.no_cache, test_cfg.no_cache);

	int fd[2];
	char buf[4096];

	REQUIRE(pipe(fd) == 0);
	CHECK_EQ(gostack_allocator_stats_print(a, fd[1]), 0);
	close(fd[1]);
	ssize_t n = read(fd[0], buf, sizeof buf - 1);

	close(fd[0]);
	REQUIRE(n > 0);
	buf[n] = '\0';
	int lines = 0;

	for (char *p = buf; *p; p = strchr(p, '\n') + 1) {
		CHECK(strncmp(p, "gostack: ", 9) == 0);
		lines++;
		if (strchr(p, '\n') == NULL)
			break;
	}
	CHECK_EQ(lines, 6);
	CHECK(strstr(buf, "inuse_bytes=") != NULL && strstr(buf, "large") != NULL);
	errno = 0;
	CHECK_EQ(gostack_allocator_stats_print(NULL, 2), -1);
	CHECK_EQ(errno, EINVAL);
	for (int i = 0; i < 6; i++)
		for (int j = 0; j < 4; j++)
			gostack_allocator_free(a, s[i][j]);
	CHECK_EQ(gostack_allocator_delete(a), 0);
}

/* GOSTACK_STATS=1: the default allocator's statistics on stderr at exit. */
static void
stats_child(void *argv)
{
	setenv("GOSTACK_STATS", "1", 1);
	test_run_self(argv);
}

TEST(stats_at_exit)
{
	char buf[4096];
	const char *argv[] = { "test_options", "env_probe", NULL };
	int status = test_run_child(stats_child, argv, buf, sizeof buf);

	printf("%s", buf);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(strncmp(buf, "gostack: allocator ", 19) == 0 && strstr(buf, "default") != NULL &&
	    strstr(buf, "allocs=1 frees=1 inuse_bytes=0") != NULL);
}

/* ---- environment variables: a bad value warns and gets the default ---- */

struct env_case { const char *name, *value, *want; };

static const struct env_case env_cases[] = {
	{ "GOSTACK_NOCACHE", "maybe", "GOSTACK_NOCACHE=maybe" },
	{ "GOSTACK_BACKEND", "spinlock", "GOSTACK_BACKEND=spinlock" },
	{ "GOSTACK_GUARD", "4q", "GOSTACK_GUARD=4q" },
	{ "GOSTACK_GUARD", "-4096", "GOSTACK_GUARD=-4096" },
	{ "GOSTACK_GUARD", "2G", "GOSTACK_GUARD=2G" },
	{ "GOSTACK_DECAY_MS", "1.5", "GOSTACK_DECAY_MS=1.5" },
	{ "GOSTACK_DECAY_MS", "99999999999", "GOSTACK_DECAY_MS=99999999999" },
	{ "GOSTACK_STATS", "verbose", "GOSTACK_STATS=verbose" },
	{ "GOSTACK_DEBUG", "on", "GOSTACK_DEBUG=on" },
};

static const struct env_case *env_now;

/* A fresh process: the first use of the default allocator reads the
 * environment (this one's default allocator exists already). */
static void
env_child(void *argv)
{
	setenv(env_now->name, env_now->value, 1);
	test_run_self(argv);
}

/* Run by env_child in a fresh process. */
TEST(env_probe)
{
	gostack_t s = gostack_alloc(8192);

	REQUIRE(s.lo != 0);
	memset((void *)s.lo, 1, 8192);
	gostack_free(s);
}

TEST(env_bad_values_warn)
{
	for (size_t i = 0; i < sizeof env_cases / sizeof env_cases[0]; i++) {
		const struct env_case *c = &env_cases[i];
		char buf[1024];
		const char *argv[] = { "test_options", "env_probe", NULL };
		int status;

		env_now = c;
		status = test_run_child(env_child, argv, buf, sizeof buf);
		bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
		    strncmp(buf, "gostack: warning: ", 18) == 0 && strstr(buf, c->want) != NULL;

		printf("     %s=%-12s %s", c->name, c->value, buf[0] ? buf : "(no warning)\n");
		if (!ok) {
			test_failed_checks++;
			fprintf(stderr, "%s=%s: status %#x\n", c->name, c->value, status);
		}
	}
}

TEST_MAIN(T(decay_returns_memory), T(decay_never), T(decay_in_fork_child), T(default_allocator_env_decay),
    T(no_huge_pages), T(stats_detail), T(stats_at_exit), T(env_probe), T(env_bad_values_warn))
