/* tests/test.c: the shared main() and helpers of every test binary. */
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"
#include "test.h"

int test_failed_checks;
static bool test_skipped;

void
test_skip(const char *fmt, ...)
{
	va_list ap;

	printf("     SKIP: ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	test_skipped = true;
}
gostack_config_t test_cfg = { .backend = GOSTACK_BACKEND_DEFAULT };
int test_threads = 0, test_scale = 0;

bool
test_sanitized(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
	return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
	return true;
#endif
#endif
	return false;
}

gostack_allocator_t *
test_allocator(void)
{
	gostack_allocator_t *a = gostack_allocator_new(&test_cfg);

	if (a == NULL) {
		fprintf(stderr, "gostack_allocator_new: %s\n", strerror(errno));
		exit(2);
	}
	return a;
}

void
test_check_balance(gostack_allocator_t *a, const char *where)
{
	gostack_stats_t st;

	gostack_allocator_stats(a, &st);
	if (st.inuse_bytes + st.cached_bytes + st.pooled_bytes != st.mapped_bytes) {
		test_failed_checks++;
		fprintf(stderr, "%s: stats do not balance: inuse %zu + cached %zu + pooled %zu != mapped %zu\n",
		    where, st.inuse_bytes, st.cached_bytes, st.pooled_bytes, st.mapped_bytes);
	}
}

long
test_maps_lines(void)
{
	return proc_maps_lines();
}

long
test_rss_bytes(void)
{
	return proc_rss_bytes();
}

int
test_run_child(void (*fn)(void *), void *arg, char *buf, size_t cap)
{
	int fd[2];

	if (pipe(fd) != 0)
		abort();
	fflush(stdout);
	pid_t pid = fork();

	if (pid == 0) {
		dup2(fd[1], 2);
		close(fd[0]);
		fn(arg);
		_exit(0);
	}
	close(fd[1]);
	size_t len = 0;
	ssize_t r;

	while (len < cap - 1 && ((r = read(fd[0], buf + len, cap - 1 - len)) > 0 || (r < 0 && errno == EINTR)))
		len += r > 0 ? (size_t)r : 0;
	buf[len] = '\0';
	close(fd[0]);
	int status = 0;

	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return status;
}

static void
call_void(void *fn)
{
	((void (*)(void))fn)();
}

void
test_run_self(void *argv)
{
	int out = open("/dev/null", O_WRONLY);

	if (out >= 0)
		dup2(out, 1);   /* the harness's own lines */
	execv("/proc/self/exe", (char *const *)argv);
	_exit(9);
}

void
test_expect_abort(const char *name, const char *want, void (*fn)(void))
{
	char buf[1024];
	int status = test_run_child(call_void, (void *)fn, buf, sizeof buf);   /* exit 0: not caught */
	size_t len = strlen(buf);
	bool found = false;
	char alts[256];

	if (want == NULL || *want == '\0') {   /* every misuse test names what it expects */
		test_failed_checks++;
		fprintf(stderr, "%s: test_expect_abort without an expected message\n", name);
		return;
	}
	snprintf(alts, sizeof alts, "%s", want);
	for (char *save = NULL, *w = strtok_r(alts, "|", &save); w != NULL; w = strtok_r(NULL, "|", &save))
		found |= strstr(buf, w) != NULL;
	bool aborted = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
	bool one_line = strncmp(buf, "gostack: ", 9) == 0 && len > 0 && strchr(buf, '\n') == buf + len - 1;
	bool names_addr = strstr(buf, "0x") != NULL;

	printf("     %-34s %s", name, buf[0] ? buf : "(no message)\n");
	if (!aborted || !one_line || !names_addr || !found) {
		test_failed_checks++;
		fprintf(stderr, "%s: aborted=%d one_line=%d names_addr=%d message_ok=%d (want \"%s\")\n", name,
		    aborted, one_line, names_addr, found, want != NULL ? want : "");
	}
}

void
stamp_set(gostack_t s, uint64_t token)
{
	size_t n = s.hi - s.lo;
	uint64_t w[2] = { token, n };

	memcpy((void *)s.lo, w, sizeof w);
	memcpy((void *)(s.lo + n / 2), w, sizeof w);
	memcpy((void *)(s.hi - sizeof w), w, sizeof w);
}

bool
stamp_ok(gostack_t s, uint64_t token)
{
	size_t n = s.hi - s.lo;
	uint64_t w[3][2];

	memcpy(w[0], (void *)s.lo, sizeof w[0]);
	memcpy(w[1], (void *)(s.lo + n / 2), sizeof w[1]);
	memcpy(w[2], (void *)(s.hi - sizeof w[2]), sizeof w[2]);
	for (int i = 0; i < 3; i++)
		if (w[i][0] != token || w[i][1] != n)
			return false;
	return true;
}

int
main(int argc, char **argv)
{
	const char *only[64];
	int nonly = 0, passed = 0, failed = 0, skipped = 0;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--backend") == 0 && i + 1 < argc) {
			const char *b = argv[++i];

			test_cfg.backend = strcmp(b, "mutex") == 0 ? GOSTACK_BACKEND_MUTEX :
			    strcmp(b, "lockfree") == 0 ? GOSTACK_BACKEND_LOCKFREE : GOSTACK_BACKEND_DEFAULT;
		} else if (strcmp(argv[i], "--nocache") == 0) {
			test_cfg.no_cache = true;
		} else if (strcmp(argv[i], "--debug") == 0) {
			test_cfg.debug = true;
		} else if (strcmp(argv[i], "--guard") == 0 && i + 1 < argc) {
			test_cfg.guard_size = (size_t)atol(argv[++i]);
		} else if (strcmp(argv[i], "--decay") == 0 && i + 1 < argc) {
			test_cfg.decay_ms = atoi(argv[++i]);
		} else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
			test_threads = atoi(argv[++i]);
		} else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc) {
			test_scale = atoi(argv[++i]);
		} else if (nonly < 64) {
			only[nonly++] = argv[i];
		}
	}
	if (test_threads <= 0)
		test_threads = test_sanitized() ? 16 : 64;
	if (test_scale <= 0)
		test_scale = test_sanitized() ? 1 : 4;
	setvbuf(stdout, NULL, _IONBF, 0);
	for (int i = 0; i < test_ncases; i++) {
		bool run = nonly == 0;

		for (int j = 0; j < nonly; j++)
			run |= strcmp(only[j], test_cases[i].name) == 0;
		if (!run)
			continue;
		int before = test_failed_checks;

		test_skipped = false;
		test_cases[i].fn();
		if (test_failed_checks != before) {
			failed++;
			printf("FAIL %s\n", test_cases[i].name);
		} else if (test_skipped) {
			skipped++;
			printf("skip %s\n", test_cases[i].name);
		} else {
			passed++;
			printf("ok   %s\n", test_cases[i].name);
		}
	}
	printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	if (failed != 0)
		return 1;
	if (passed == 0 && skipped > 0)
		return TEST_SKIP_RC;
	return passed > 0 ? 0 : 1;
}

gostack_stats_detail_t
test_detail(gostack_allocator_t *a)
{
	gostack_stats_detail_t d;

	gostack_allocator_stats_detail(a, &d);
	return d;
}

int
test_stats_printed(gostack_allocator_t *a, char *buf, size_t cap)
{
	int fds[2], r;
	ssize_t n;

	if (pipe(fds) != 0) {
		buf[0] = 0;
		return -1;
	}
	r = gostack_allocator_stats_print(a, fds[1]);   /* < 64 KiB: fits the pipe */
	close(fds[1]);
	n = read(fds[0], buf, cap - 1);
	close(fds[0]);
	buf[n > 0 ? n : 0] = 0;
	return r;
}

struct free_arg {
	gostack_allocator_t *a;
	gostack_t s;
	bool by_lo;
};

static void *
free_thread(void *p)
{
	struct free_arg *f = p;

	if (f->by_lo)
		gostack_allocator_free_lo(f->a, f->s.lo);
	else
		gostack_allocator_free(f->a, f->s);
	return NULL;
}

void
test_free_on_thread(gostack_allocator_t *a, gostack_t s, bool by_lo)
{
	struct free_arg f = { a, s, by_lo };
	pthread_t th;

	if (pthread_create(&th, NULL, free_thread, &f) != 0)
		abort();
	pthread_join(th, NULL);
}
