/*
 * libFuzzer target: the input is decoded into a sequence of API calls over
 * several allocators (both backends, cached and no-cache, one in debug
 * mode): allocations of every order and the large path, frees (in any
 * order), flushes, reclaims, stats, and (rarely, in a child process) a
 * misuse that must abort with a "gostack:" line. After every step every
 * live stack must still hold its stamp; stats must balance after flush and
 * reclaim; at the end everything is freed and mapped_bytes must be 0.
 * Any violation calls abort(), which libFuzzer reports as a crash.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gostack.h"

#define NALLOC 7
#define MAXLIVE 128

static gostack_allocator_t *A[NALLOC];
static struct live { gostack_t s; uint64_t tok; int a; } L[MAXLIVE];
static int nlive;
static uint64_t counter;

static const size_t sizes[] = { 1, 2048, 2049, 4096, 6000, 8192, 16384, 16385, 32768, 65536,
    100000, 262144, (size_t)1 << 20, (size_t)8 << 20 };

static void
die(const char *what)
{
	fprintf(stderr, "fuzz_api: %s\n", what);
	abort();
}

static void
stamp(gostack_t s, uint64_t tok)
{
	size_t n = s.hi - s.lo;

	memcpy((void *)s.lo, &tok, 8);
	memcpy((void *)(s.lo + n / 2), &tok, 8);
	memcpy((void *)(s.hi - 8), &tok, 8);
}

static void
verify(struct live *l)
{
	size_t n = l->s.hi - l->s.lo;
	uint64_t a, b, c;

	memcpy(&a, (void *)l->s.lo, 8);
	memcpy(&b, (void *)(l->s.lo + n / 2), 8);
	memcpy(&c, (void *)(l->s.hi - 8), 8);
	if (a != l->tok || b != l->tok || c != l->tok)
		die("a live stack lost its stamp");
}

static void
balance(gostack_allocator_t *a, bool quiet_pools)
{
	gostack_stats_t st;

	gostack_allocator_stats(a, &st);
	if (st.inuse_bytes + st.cached_bytes + st.pooled_bytes != st.mapped_bytes)
		die("stats do not balance");
	if (st.allocs < st.frees)
		die("more frees than allocs");
	(void)quiet_pools;
}

static void
init(void)
{
	gostack_config_t c[NALLOC] = {
		{ GOSTACK_BACKEND_MUTEX, false, false },
		{ GOSTACK_BACKEND_MUTEX, true, false },
		{ GOSTACK_BACKEND_LOCKFREE, false, false },
		{ GOSTACK_BACKEND_LOCKFREE, true, false },
		{ GOSTACK_BACKEND_LOCKFREE, false, true },
		/* guard pages, and a scavenger pass every 10 ms beside the fuzzing */
		{ .backend = GOSTACK_BACKEND_LOCKFREE, .guard_size = 4096, .decay_ms = 1 },
		{ .backend = GOSTACK_BACKEND_MUTEX, .no_cache = true, .guard_size = 8192, .decay_ms = 1 },
	};

	for (int i = 0; i < NALLOC; i++)
		if ((A[i] = gostack_allocator_new(&c[i])) == NULL)
			die("allocator_new");
}

/* A misuse in a child: it must die of SIGABRT after a "gostack:" line. */
static void
misuse(int kind, struct live *l)
{
	int fd[2];

	if (pipe(fd) != 0)
		return;
	pid_t pid = fork();

	if (pid == 0) {
		/* libFuzzer's handlers would catch the abort: the child dies plainly. */
		signal(SIGABRT, SIG_DFL);
		signal(SIGSEGV, SIG_DFL);
		signal(SIGBUS, SIG_DFL);
		dup2(fd[1], 2);
		close(fd[0]);
		gostack_allocator_t *other = A[(l->a + 1) % NALLOC];

		switch (kind % 5) {
		case 0: gostack_allocator_free(other, l->s); break;                                  /* wrong allocator */
		case 1: gostack_allocator_free(A[l->a], (gostack_t){ l->s.lo, l->s.lo + 2 * (l->s.hi - l->s.lo) }); break;   /* wrong size */
		case 2: gostack_allocator_free(A[l->a], (gostack_t){ l->s.lo + 16, l->s.hi + 16 }); break;
		case 3: { static char buf[65536]; gostack_allocator_free(A[l->a], (gostack_t){ (uintptr_t)buf, (uintptr_t)buf + 4096 }); break; }
		case 4: gostack_allocator_free(A[4], gostack_allocator_alloc(A[4], 4096));          /* debug double free */
			{ gostack_t s = gostack_allocator_alloc(A[4], 8192); gostack_allocator_free(A[4], s); gostack_allocator_free(A[4], s); }
			break;
		}
		_exit(0);
	}
	close(fd[1]);
	/* libFuzzer's timers (SIGALRM) interrupt slow calls: retry on EINTR. */
	char buf[512] = { 0 };
	ssize_t r, len = 0;
	int status = 0;

	while (len < (ssize_t)sizeof buf - 1 &&
	    ((r = read(fd[0], buf + len, sizeof buf - 1 - (size_t)len)) > 0 || (r < 0 && errno == EINTR)))
		len += r > 0 ? r : 0;
	r = len;
	close(fd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT || r < 9 || strncmp(buf, "gostack: ", 9) != 0) {
		fprintf(stderr, "fuzz_api: misuse kind %d on [%#lx, %#lx) of allocator %d: status %#x, stderr \"%s\"\n",
		    kind % 5, (unsigned long)l->s.lo, (unsigned long)l->s.hi, l->a, status, buf);
		die("a misuse was not caught with a gostack: line and abort()");
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool inited;
	int misuses = 0;

	if (!inited) {
		init();
		inited = true;
	}
	for (size_t i = 0; i + 1 < size; i += 2) {
		uint8_t op = data[i], arg = data[i + 1];
		int a = op % NALLOC;

		switch ((op >> 3) % 8) {
		case 0: case 1: case 2: {   /* alloc */
			if (nlive == MAXLIVE)
				break;
			size_t sz = sizes[arg % (sizeof sizes / sizeof sizes[0])] + (arg >> 5);
			gostack_t s = gostack_allocator_alloc(A[a], sz);

			if (s.lo == 0)
				die("allocation failed");
			if ((s.hi - s.lo) < sz || (s.lo & 15) != 0)
				die("bad stack");
			L[nlive] = (struct live){ s, ++counter * 0x9e3779b97f4a7c15ull, a };
			stamp(s, L[nlive].tok);
			nlive++;
			break;
		}
		case 3: case 4:             /* free one */
			if (nlive > 0) {
				int k = arg % nlive;

				verify(&L[k]);
				gostack_allocator_free(A[L[k].a], L[k].s);
				L[k] = L[--nlive];
			}
			break;
		case 5:
			gostack_thread_flush();
			for (int k = 0; k < NALLOC; k++)
				balance(A[k], false);
			break;
		case 6:
			gostack_allocator_reclaim(A[a]);
			balance(A[a], false);
			break;
		case 7:
			if (nlive > 0 && misuses++ == 0 && (arg & 7) == 0)
				misuse(arg >> 3, &L[arg % nlive]);
			break;
		}
		for (int k = 0; k < nlive; k++)
			verify(&L[k]);
	}
	/* Everything back: nothing in use, nothing mapped after reclaim. */
	while (nlive > 0) {
		verify(&L[nlive - 1]);
		gostack_allocator_free(A[L[nlive - 1].a], L[nlive - 1].s);
		nlive--;
	}
	gostack_thread_flush();
	/* reclaim (munmap, madvise: slow on a VM) every 32nd input only */
	static unsigned runs;
	bool full = ++runs % 32 == 0;

	for (int k = 0; k < NALLOC; k++) {
		gostack_stats_t st;

		if (full)
			gostack_allocator_reclaim(A[k]);
		gostack_allocator_stats(A[k], &st);
		if (st.inuse_bytes != 0 || st.allocs != st.frees || st.cached_bytes != 0 ||
		    st.inuse_bytes + st.cached_bytes + st.pooled_bytes != st.mapped_bytes)
			die("stats after freeing everything");
		if (full && (st.mapped_bytes != 0 || st.pooled_bytes != 0))
			die("memory left after freeing everything and reclaim");
	}
	return 0;
}
