/*
 * gostack-http-demo: a multithreaded HTTP/1.1 keep-alive server with one
 * coroutine per connection, each on a gostack stack.
 *
 *   gostack-http-demo [--addr A] [--port P] [--threads N] [--stack-size S]
 *                     [--stacks gostack|malloc|mmap]
 *
 * Threads. Each worker thread runs one epoll loop over its own SO_REUSEPORT
 * listening socket (the kernel spreads connections over them) and an eventfd
 * that the main thread uses to stop it. The main thread only waits for
 * SIGTERM/SIGINT on a signalfd (the signals are blocked in every thread: no
 * signal handler ever runs, least of all on a coroutine stack).
 *
 * Coroutines. A connection is served by one coroutine (ucontext makecontext /
 * swapcontext) that reads requests, parses enough of HTTP/1.1 for keep-alive
 * and pipelined GETs, writes the responses and, on EAGAIN, switches back to
 * the loop; the loop resumes it on the next epoll event for its socket
 * (edge-triggered), or from its run queue after it gave up the CPU on its own.
 *
 * Descriptors are reused with their stacks the way Go reuses a G (proc.go
 * gfget/gfput/newproc1, see shared/reference/go-stack.md 2.11):
 *  - gfput (connection done): a stack whose size is not the standard size
 *    (--stack-size) is freed with gostack_free, as Go frees a grown stack; the
 *    descriptor goes on the thread's free list, keeping a standard stack.
 *    When the list reaches 64, descriptors are freed (stack and all) until it
 *    holds 31: there is no global descriptor list, gostack's own pools are the
 *    global level for the stacks.
 *  - gfget (new connection): pop a descriptor (or calloc one); a stack of
 *    another size than the standard one is freed, a missing one allocated.
 *  - Stack growth: a request whose query asks for a bigger stack
 *    (GET /?stack=65536) cannot have its C frames copied the way Go copies a
 *    goroutine stack, so its coroutine stops before consuming the request;
 *    the loop allocates a stack of that size (rounded up to a power of two,
 *    at most 1 MiB), frees the old one and restarts the coroutine, which finds
 *    the request still in the descriptor's buffer and serves it, touching half
 *    of the new stack. The connection keeps the bigger stack until it closes;
 *    gfput then frees it.
 *
 * SIGTERM (or SIGINT) drains: every worker stops accepting, closes every
 * connection (each coroutine sees its wait fail and returns), frees every
 * descriptor and its stack, calls gostack_thread_flush() and exits; the main
 * thread joins them, flushes, calls gostack_allocator_reclaim() and prints
 * exactly one line to stdout:
 *   gostack: allocs=A frees=F inuse_bytes=I cached_bytes=C pooled_bytes=P mapped_bytes=M
 * (with --stacks malloc or mmap: "malloc: allocs=A frees=F inuse_bytes=I",
 * resp. "mmap: ..."), then exits 0. Everything else goes to stderr.
 *
 * Coroutine stacks have no guard page (neither do the malloc'd ones; the
 * mmap'd ones are separate mappings). The coroutine code calls no stdio and
 * keeps its buffers in the descriptor, so its deepest frame is small; a
 * canary at the bottom of every stack is checked after every switch back to
 * the loop. Under AddressSanitizer and ThreadSanitizer every switch is
 * annotated (__sanitizer_start/finish_switch_fiber, __tsan_switch_to_fiber).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <ucontext.h>
#include <unistd.h>

#include <gostack.h>

/* ---- sanitizer fiber annotations --------------------------------------- */

#if defined(__SANITIZE_ADDRESS__)
#define DEMO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DEMO_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define DEMO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define DEMO_TSAN 1
#endif
#endif
#ifdef DEMO_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#ifdef DEMO_TSAN
#include <sanitizer/tsan_interface.h>
#endif

/* ---- limits ------------------------------------------------------------ */

#define IN_CAP          8192          /* request head (and body) must fit: else 431 / 413 */
#define OUT_CAP         8192          /* pipelined responses are batched up to this */
#define GFREE_MAX       64            /* Go's gfput: move Gs off the P at 64 ... */
#define GFREE_KEEP      32            /* ... until fewer than 32 remain */
#define MAX_CO_STACK    ((size_t)1 << 20)   /* largest ?stack= honoured */
#define BURST           64            /* requests served before a voluntary yield */
#define ACCEPT_BURST    64
#define MAX_EVENTS      256
#define CANARY          UINT64_C(0x676f737461636b21)   /* "gostack!" */

/* ---- options ----------------------------------------------------------- */

enum stacks_kind { STACKS_GOSTACK, STACKS_MALLOC, STACKS_MMAP };
static const char *const stacks_name[] = {"gostack", "malloc", "mmap"};

static struct {
	const char *addr;
	int port;
	int threads;
	size_t stack_size;             /* the standard size, rounded like gostack */
	enum stacks_kind stacks;
} opt = {"127.0.0.1", 8080, 0, 8192, STACKS_GOSTACK};

/* ---- stacks: gostack, malloc or mmap ----------------------------------- */

static gostack_allocator_t *gs_alloc;
static atomic_uint_fast64_t os_allocs, os_frees, os_inuse;   /* malloc/mmap modes */

static size_t
round2(size_t n)
{
	size_t r = GOSTACK_MIN_SIZE;
	while (r < n)
		r <<= 1;
	return r;
}

static gostack_t
stack_get(size_t size)
{
	gostack_t s = {0, 0};
	void *p;

	switch (opt.stacks) {
	case STACKS_GOSTACK:
		return gostack_allocator_alloc(gs_alloc, size);
	case STACKS_MALLOC:
		p = malloc(size);
		if (p == NULL)
			return s;
		break;
	default:
		p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			return s;
		break;
	}
	atomic_fetch_add_explicit(&os_allocs, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&os_inuse, size, memory_order_relaxed);
	s.lo = (uintptr_t)p;
	s.hi = s.lo + size;
	return s;
}

static void
stack_put(gostack_t s)
{
	if (s.lo == 0)
		return;
	switch (opt.stacks) {
	case STACKS_GOSTACK:
		gostack_allocator_free(gs_alloc, s);
		return;
	case STACKS_MALLOC:
		free((void *)s.lo);
		break;
	default:
		munmap((void *)s.lo, s.hi - s.lo);
		break;
	}
	atomic_fetch_add_explicit(&os_frees, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&os_inuse, s.hi - s.lo, memory_order_relaxed);
}

/* ---- coroutine descriptors and workers -------------------------------- */

enum co_state { CO_FREE, CO_LIVE, CO_RESTACK, CO_DEAD };

struct worker;

struct co {
	ucontext_t ctx;
	gostack_t stk;             /* kept across reuse, like a G's stack */
	struct worker *w;
	struct co *next;           /* free list, dead list */
	struct co *lprev, *lnext;  /* the worker's live list */
	struct co *rnext;          /* the worker's run queue */
	int in_runq;
	int fd;
	enum co_state state;
	size_t want_stack;         /* CO_RESTACK: the size asked for */
	size_t in_off, in_len;     /* unparsed input is in[in_off, in_len) */
	size_t out_len;
	uint64_t nreq;             /* requests served on this connection */
#ifdef DEMO_ASAN
	void *fake_stack;
#endif
#ifdef DEMO_TSAN
	void *tsan_fiber;
#endif
	char in[IN_CAP];
	char out[OUT_CAP];
};

struct counters {
	uint64_t accepted, requests, restacks, desc_new, desc_freed,
	    stack_freed_gfput, stack_freed_gfget, stack_new;
};

struct worker {
	int id;
	pthread_t tid;
	int epfd, lfd, efd;
	ucontext_t loop_ctx;
	struct co *cur;            /* the coroutine running, or NULL */
	struct co *gfree;          /* Go's p.gFree */
	unsigned ngfree;
	struct co *dead;           /* ended in this batch; gfput after it */
	struct co *live;           /* every coroutine not yet ended */
	struct co *runq;           /* gave up the CPU with work left */
	unsigned nlive;
	int draining;
	int spare_fd;              /* closed to accept and drop a connection on EMFILE */
	struct counters n;         /* reported on stderr at exit */
#ifdef DEMO_ASAN
	void *loop_fake_stack;
	const void *loop_bottom;
	size_t loop_size;
#endif
#ifdef DEMO_TSAN
	void *loop_fiber;
#endif
};

static _Thread_local struct worker *this_worker;

static void
die(const char *what)
{
	fprintf(stderr, "gostack-http-demo: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* ---- switching --------------------------------------------------------- */

static void co_main(void);

static void
co_check_canary(struct co *co)
{
	if (*(volatile uint64_t *)co->stk.lo != CANARY) {
		fprintf(stderr, "gostack-http-demo: coroutine stack overflow "
				"(stack [%#" PRIxPTR ", %#" PRIxPTR "), %zu bytes)\n",
		    co->stk.lo, co->stk.hi, (size_t)(co->stk.hi - co->stk.lo));
		abort();
	}
}

/* Make the coroutine start at co_main on its stack (fresh or reused). */
static void
co_prepare(struct co *co)
{
#ifdef DEMO_ASAN
	/* Reused stack memory keeps the poison of the frames that were on it
	 * when the last coroutine left it for good. */
	ASAN_UNPOISON_MEMORY_REGION((void *)co->stk.lo, co->stk.hi - co->stk.lo);
#endif
	*(volatile uint64_t *)co->stk.lo = CANARY;
	if (getcontext(&co->ctx) != 0)
		die("getcontext");
	co->ctx.uc_stack.ss_sp = (void *)co->stk.lo;
	co->ctx.uc_stack.ss_size = co->stk.hi - co->stk.lo;
	co->ctx.uc_link = NULL;
	makecontext(&co->ctx, co_main, 0);
#ifdef DEMO_TSAN
	if (co->tsan_fiber == NULL)
		co->tsan_fiber = __tsan_create_fiber(0);
#endif
}

/* Loop -> coroutine, until it waits, yields or ends. */
static void
co_switch_in(struct worker *w, struct co *co)
{
	w->cur = co;
#ifdef DEMO_ASAN
	__sanitizer_start_switch_fiber(&w->loop_fake_stack, (void *)co->stk.lo,
	    co->stk.hi - co->stk.lo);
#endif
#ifdef DEMO_TSAN
	__tsan_switch_to_fiber(co->tsan_fiber, 0);
#endif
	if (swapcontext(&w->loop_ctx, &co->ctx) != 0)
		die("swapcontext");
#ifdef DEMO_ASAN
	__sanitizer_finish_switch_fiber(w->loop_fake_stack, NULL, NULL);
#endif
	w->cur = NULL;
	co_check_canary(co);
}

/* Coroutine -> loop. 0, or -1 when the worker drains (the caller gives up). */
static int
co_switch_out(struct co *co)
{
	struct worker *w = co->w;

	if (w->draining)
		return -1;
#ifdef DEMO_ASAN
	__sanitizer_start_switch_fiber(&co->fake_stack, w->loop_bottom, w->loop_size);
#endif
#ifdef DEMO_TSAN
	__tsan_switch_to_fiber(w->loop_fiber, 0);
#endif
	swapcontext(&co->ctx, &w->loop_ctx);
#ifdef DEMO_ASAN
	__sanitizer_finish_switch_fiber(co->fake_stack, &w->loop_bottom, &w->loop_size);
#endif
	return w->draining ? -1 : 0;
}

/* Give up the CPU with work left: the loop resumes us after this batch. */
static int
co_yield(struct co *co)
{
	struct worker *w = co->w;

	if (!co->in_runq) {
		co->in_runq = 1;
		co->rnext = w->runq;
		w->runq = co;
	}
	return co_switch_out(co);
}

/* ---- Go's gfget / gfput ------------------------------------------------ */

static void
desc_free(struct worker *w, struct co *co)
{
	stack_put(co->stk);
#ifdef DEMO_TSAN
	if (co->tsan_fiber != NULL)
		__tsan_destroy_fiber(co->tsan_fiber);
#endif
	free(co);
	w->n.desc_freed++;
}

static void
gfput(struct worker *w, struct co *co)
{
	if (co->stk.lo != 0 && co->stk.hi - co->stk.lo != opt.stack_size) {
		stack_put(co->stk);      /* grown (or stale-sized) stack: free it */
		co->stk.lo = co->stk.hi = 0;
		w->n.stack_freed_gfput++;
	}
	co->state = CO_FREE;
	co->next = w->gfree;
	w->gfree = co;
	if (++w->ngfree >= GFREE_MAX) {
		while (w->ngfree >= GFREE_KEEP) {
			struct co *x = w->gfree;
			w->gfree = x->next;
			w->ngfree--;
			desc_free(w, x);
		}
	}
}

static struct co *
gfget(struct worker *w)
{
	struct co *co = w->gfree;

	if (co != NULL) {
		w->gfree = co->next;
		w->ngfree--;
	} else {
		co = calloc(1, sizeof(*co));
		if (co == NULL)
			return NULL;
		co->w = w;
		w->n.desc_new++;
	}
	if (co->stk.lo != 0 && co->stk.hi - co->stk.lo != opt.stack_size) {
		stack_put(co->stk);      /* the standard size changed since gfput */
		co->stk.lo = co->stk.hi = 0;
		w->n.stack_freed_gfget++;
	}
	if (co->stk.lo == 0) {
		co->stk = stack_get(opt.stack_size);
		if (co->stk.lo == 0) {
			co->next = w->gfree;   /* keep the descriptor, stackless */
			w->gfree = co;
			w->ngfree++;
			return NULL;
		}
		w->n.stack_new++;
	}
	return co;
}

/* ---- I/O on the coroutine ---------------------------------------------- */

/* Write out[0, out_len). 0, or -1 when the connection is gone. */
static int
co_flush(struct co *co)
{
	size_t off = 0;

	while (off < co->out_len) {
		ssize_t n = send(co->fd, co->out + off, co->out_len - off, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (co_switch_out(co) != 0)
				return -1;
		} else {
			return -1;     /* EPIPE, ECONNRESET, ... */
		}
	}
	co->out_len = 0;
	return 0;
}

/* Read more input. 1 read something, 0 peer closed or error, -1 draining. */
static int
co_read(struct co *co)
{
	if (co->in_len == IN_CAP)   /* cannot happen: parse_request answers 431/413 first */
		return 0;
	for (;;) {
		ssize_t n = recv(co->fd, co->in + co->in_len, IN_CAP - co->in_len, 0);
		if (n > 0) {
			co->in_len += (size_t)n;
			return 1;
		}
		if (n == 0)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			if (co_switch_out(co) != 0)
				return -1;
			continue;
		}
		return 0;              /* ECONNRESET, ... */
	}
}

/* ---- HTTP -------------------------------------------------------------- */

struct request {
	size_t len;                /* head + body */
	int head;                  /* HEAD: no body in the response */
	int get_or_head;
	int close;                 /* close after the response */
	int status;                /* 0, or an error status to answer and close */
	size_t stack;              /* ?stack=N, rounded, 0 if absent */
};

static size_t
put_str(char *p, const char *s)
{
	size_t n = strlen(s);
	memcpy(p, s, n);
	return n;
}

static size_t
put_u64(char *p, uint64_t v)
{
	char tmp[20];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

static int
token_in(const char *v, size_t vlen, const char *tok)
{
	size_t tlen = strlen(tok);

	for (size_t i = 0; i + tlen <= vlen; i++)
		if (strncasecmp(v + i, tok, tlen) == 0)
			return 1;
	return 0;
}

/*
 * Parse the request at in[in_off, in_len). 1 complete (r filled), 0 need more
 * input, and 1 with r->status set for a request to refuse (then close).
 */
static int
parse_request(struct co *co, struct request *r)
{
	const char *p = co->in + co->in_off;
	size_t avail = co->in_len - co->in_off;
	const char *end = memmem(p, avail, "\r\n\r\n", 4);
	const char *line, *eol, *sp1, *sp2;
	size_t head_len, clen = 0;
	int http10, keep_alive = 0, close_hdr = 0;

	memset(r, 0, sizeof(*r));
	if (end == NULL) {
		if (co->in_off == 0 && co->in_len == IN_CAP) {
			r->status = 431;   /* head larger than the buffer */
			r->close = 1;
			return 1;
		}
		return 0;
	}
	head_len = (size_t)(end - p) + 4;

	/* request line: METHOD SP TARGET SP HTTP/1.x */
	eol = memchr(p, '\r', head_len);
	sp1 = memchr(p, ' ', (size_t)(eol - p));
	sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
	if (sp1 == NULL || sp2 == NULL || eol - sp2 - 1 != 8 ||
	    memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
	    (sp2[8] != '0' && sp2[8] != '1')) {
		r->status = 400;
		r->close = 1;
		return 1;
	}
	http10 = sp2[8] == '0';
	if (sp1 - p == 3 && memcmp(p, "GET", 3) == 0) {
		r->get_or_head = 1;
	} else if (sp1 - p == 4 && memcmp(p, "HEAD", 4) == 0) {
		r->get_or_head = 1;
		r->head = 1;
	}

	/* ?stack=N */
	{
		const char *q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
		while (q != NULL && q < sp2) {
			q++;
			if (sp2 - q > 6 && memcmp(q, "stack=", 6) == 0) {
				size_t n = 0;
				for (q += 6; q < sp2 && *q >= '0' && *q <= '9'; q++)
					n = n < MAX_CO_STACK ? n * 10 + (size_t)(*q - '0') : n;
				if (n > MAX_CO_STACK)
					n = MAX_CO_STACK;
				r->stack = round2(n);
				break;
			}
			q = memchr(q, '&', (size_t)(sp2 - q));
		}
	}

	/* headers */
	for (line = eol + 2; line < end + 2; line = eol + 2) {
		const char *colon, *v;
		size_t nlen, vlen;

		eol = memchr(line, '\r', (size_t)(end + 2 - line));
		if (eol == NULL || eol == line)
			break;
		colon = memchr(line, ':', (size_t)(eol - line));
		if (colon == NULL)
			continue;
		nlen = (size_t)(colon - line);
		v = colon + 1;
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		vlen = (size_t)(eol - v);
		while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		if (nlen == 10 && strncasecmp(line, "connection", 10) == 0) {
			close_hdr |= token_in(v, vlen, "close");
			keep_alive |= token_in(v, vlen, "keep-alive");
		} else if (nlen == 14 && strncasecmp(line, "content-length", 14) == 0) {
			clen = 0;
			for (const char *d = v; d < v + vlen; d++) {
				if (*d < '0' || *d > '9' || clen > IN_CAP) {
					clen = IN_CAP + 1;
					break;
				}
				clen = clen * 10 + (size_t)(*d - '0');
			}
		} else if (nlen == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
			r->status = 501;   /* no chunked request bodies here */
			r->close = 1;
			return 1;
		}
	}
	if (head_len + clen > IN_CAP) {
		r->status = 413;
		r->close = 1;
		return 1;
	}
	if (avail < head_len + clen)
		return 0;          /* the body is still coming */
	r->len = head_len + clen;
	r->close = close_hdr || (http10 && !keep_alive);
	if (!r->get_or_head)
		r->status = 405;   /* answered, and the connection stays open */
	return 1;
}

static const char hello[] = "Hello from a coroutine on a gostack stack\n";

/* Touch n bytes of this coroutine's stack: the grown stack is really there. */
__attribute__((noinline)) static unsigned
touch_stack(size_t n)
{
	volatile unsigned char buf[n];
	unsigned sum = 0;

	for (size_t i = 0; i < n; i += 256)
		buf[i] = (unsigned char)i;
	for (size_t i = 0; i < n; i += 256)
		sum += buf[i];
	return sum;
}

/* Append the response to r; the caller made room (at most 512 bytes). */
static void
respond(struct co *co, const struct request *r)
{
	char *p = co->out + co->out_len;
	char body[160];
	size_t blen;
	const char *reason;

	switch (r->status) {
	case 0:   reason = "200 OK"; break;
	case 400: reason = "400 Bad Request"; break;
	case 405: reason = "405 Method Not Allowed"; break;
	case 413: reason = "413 Content Too Large"; break;
	case 431: reason = "431 Request Header Fields Too Large"; break;
	default:  reason = "501 Not Implemented"; break;
	}
	if (r->status != 0) {
		blen = put_str(body, reason);
		body[blen++] = '\n';
	} else if (r->stack != 0) {
		size_t size = co->stk.hi - co->stk.lo;
		touch_stack(size / 2);
		blen = put_str(body, "Hello from a coroutine on a ");
		blen += put_u64(body + blen, size);
		blen += put_str(body + blen, "-byte stack\n");
	} else {
		blen = sizeof(hello) - 1;
		memcpy(body, hello, blen);
	}

	p += put_str(p, "HTTP/1.1 ");
	p += put_str(p, reason);
	p += put_str(p, "\r\nServer: gostack-http-demo\r\nContent-Type: text/plain\r\n");
	if (r->status == 405)
		p += put_str(p, "Allow: GET, HEAD\r\n");
	if (r->close)
		p += put_str(p, "Connection: close\r\n");
	else
		p += put_str(p, "Connection: keep-alive\r\n");
	p += put_str(p, "Content-Length: ");
	p += put_u64(p, blen);
	p += put_str(p, "\r\n\r\n");
	if (!r->head) {
		memcpy(p, body, blen);
		p += blen;
	}
	co->out_len = (size_t)(p - co->out);
}

/* The connection: 0 to close it, 1 to restart on a stack of co->want_stack. */
static int
serve(struct co *co)
{
	struct worker *w = co->w;
	unsigned burst = 0;

	for (;;) {
		struct request r;

		if (w->draining)   /* a client that keeps sending cannot hold up the drain */
			return 0;
		while (parse_request(co, &r) == 1) {
			if (r.status == 0 && r.stack > co->stk.hi - co->stk.lo) {
				co->want_stack = r.stack;   /* request stays buffered */
				return 1;
			}
			if (OUT_CAP - co->out_len < 512 && co_flush(co) != 0)
				return 0;
			respond(co, &r);
			co->nreq++;
			w->n.requests++;
			co->in_off += r.len;
			if (r.close) {
				co_flush(co);
				return 0;
			}
			if (++burst == BURST) {    /* let the other connections run */
				burst = 0;
				if (co_flush(co) != 0 || co_yield(co) != 0)
					return 0;
			}
		}
		if (co->out_len != 0 && co_flush(co) != 0)
			return 0;
		if (co->in_off != 0) {         /* compact the unparsed input */
			memmove(co->in, co->in + co->in_off, co->in_len - co->in_off);
			co->in_len -= co->in_off;
			co->in_off = 0;
		}
		if (co_read(co) != 1)
			return 0;
	}
}

static void
co_main(void)
{
	struct worker *w = this_worker;
	struct co *co = w->cur;

#ifdef DEMO_ASAN
	__sanitizer_finish_switch_fiber(NULL, &w->loop_bottom, &w->loop_size);
#endif
	if (serve(co) == 1 && !w->draining) {
		co->state = CO_RESTACK;
	} else {
		close(co->fd);
		co->fd = -1;
		co->state = CO_DEAD;
	}
	/* This stack is left for good: the fake stack goes (NULL). */
#ifdef DEMO_ASAN
	__sanitizer_start_switch_fiber(NULL, w->loop_bottom, w->loop_size);
#endif
#ifdef DEMO_TSAN
	__tsan_switch_to_fiber(w->loop_fiber, 0);
#endif
	setcontext(&w->loop_ctx);
	abort();
}

/* ---- the loop ---------------------------------------------------------- */

static void
live_link(struct worker *w, struct co *co)
{
	co->lprev = NULL;
	co->lnext = w->live;
	if (w->live != NULL)
		w->live->lprev = co;
	w->live = co;
	w->nlive++;
}

static void
live_unlink(struct worker *w, struct co *co)
{
	if (co->lprev != NULL)
		co->lprev->lnext = co->lnext;
	else
		w->live = co->lnext;
	if (co->lnext != NULL)
		co->lnext->lprev = co->lprev;
	co->lprev = co->lnext = NULL;
	w->nlive--;
}

/* Run co until it waits; handle its end or its request for a bigger stack. */
static void
resume(struct worker *w, struct co *co)
{
	for (;;) {
		co_switch_in(w, co);
		if (co->state != CO_RESTACK)
			break;
		/* Go's copystack: a new stack of the asked size, then the old
		 * one freed; the frames are not copied but rebuilt (restart). */
		gostack_t s = stack_get(co->want_stack);
		if (s.lo == 0) {
			close(co->fd);
			co->fd = -1;
			co->state = CO_DEAD;
			break;
		}
		stack_put(co->stk);
		co->stk = s;
		w->n.restacks++;
		co->state = CO_LIVE;
		co_prepare(co);
	}
	if (co->state == CO_DEAD) {
		live_unlink(w, co);
		co->next = w->dead;
		w->dead = co;
	}
}

static void
accept_some(struct worker *w)
{
	for (int i = 0; i < ACCEPT_BURST; i++) {
		int fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if ((errno == EMFILE || errno == ENFILE) && w->spare_fd >= 0) {
				/* out of descriptors: accept and drop one */
				close(w->spare_fd);
				fd = accept(w->lfd, NULL, NULL);
				if (fd >= 0)
					close(fd);
				w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
				continue;
			}
			fprintf(stderr, "gostack-http-demo: accept: %s\n", strerror(errno));
			return;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct co *co = gfget(w);
		if (co == NULL) {
			close(fd);     /* no memory for a descriptor or a stack */
			continue;
		}
		w->n.accepted++;
		co->fd = fd;
		co->in_off = co->in_len = co->out_len = 0;
		co->nreq = 0;
		co->in_runq = 0;
		co->state = CO_LIVE;
		co_prepare(co);
		struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
		    .data.ptr = co};
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
			close(fd);
			gfput(w, co);
			continue;
		}
		live_link(w, co);
		resume(w, co);
	}
}

static void
run_queue(struct worker *w)
{
	struct co *q = w->runq;

	w->runq = NULL;
	while (q != NULL) {
		struct co *co = q;
		q = co->rnext;
		co->in_runq = 0;
		if (co->state == CO_LIVE)
			resume(w, co);
	}
}

static void
reap_dead(struct worker *w)
{
	while (w->dead != NULL) {
		struct co *co = w->dead;
		w->dead = co->next;
		gfput(w, co);
	}
}

static void
drain(struct worker *w)
{
	w->draining = 1;
	epoll_ctl(w->epfd, EPOLL_CTL_DEL, w->lfd, NULL);
	close(w->lfd);
	w->lfd = -1;
	/* Every coroutine's wait now fails: it closes its connection and ends. */
	while (w->live != NULL)
		resume(w, w->live);
	w->runq = NULL;
	reap_dead(w);
	while (w->gfree != NULL) {
		struct co *co = w->gfree;
		w->gfree = co->next;
		w->ngfree--;
		desc_free(w, co);
	}
}

static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[MAX_EVENTS];
	static char lfd_tag, efd_tag;

	this_worker = w;
#ifdef DEMO_TSAN
	w->loop_fiber = __tsan_get_current_fiber();
#endif
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0)
		die("epoll_create1");
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &lfd_tag};
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->lfd, &ev) != 0)
		die("epoll_ctl");
	ev.data.ptr = &efd_tag;
	if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->efd, &ev) != 0)
		die("epoll_ctl");

	while (!w->draining) {
		int n = epoll_wait(w->epfd, evs, MAX_EVENTS, w->runq != NULL ? 0 : -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n && !w->draining; i++) {
			void *p = evs[i].data.ptr;
			if (p == &lfd_tag) {
				accept_some(w);
			} else if (p == &efd_tag) {
				/* Read it: the main thread's write happens before our
				 * close(efd) (and TSan sees the hand-over). */
				uint64_t v;
				while (read(w->efd, &v, sizeof(v)) < 0 && errno == EINTR)
					;
				drain(w);
			} else {
				struct co *co = p;
				if (co->state == CO_LIVE)   /* not ended in this batch */
					resume(w, co);
			}
		}
		if (!w->draining)
			run_queue(w);
		reap_dead(w);
	}

	close(w->efd);
	close(w->epfd);
	if (w->spare_fd >= 0)
		close(w->spare_fd);
	/* This thread's cached stacks back to the global pools. */
	gostack_thread_flush();
	return NULL;
}

/* ---- setup ------------------------------------------------------------- */

static int
listen_socket(struct sockaddr_in *sa)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;

	if (fd < 0)
		die("socket");
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
		die("setsockopt");
	if (bind(fd, (struct sockaddr *)sa, sizeof(*sa)) != 0)
		die("bind");
	if (listen(fd, SOMAXCONN) != 0)
		die("listen");
	if (sa->sin_port == 0) {      /* --port 0: the kernel's choice, for all */
		socklen_t len = sizeof(*sa);
		if (getsockname(fd, (struct sockaddr *)sa, &len) != 0)
			die("getsockname");
	}
	return fd;
}

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: gostack-http-demo [--addr A] [--port P] [--threads N]\n"
	    "                         [--stack-size S] [--stacks gostack|malloc|mmap]\n"
	    "  --addr A        IPv4 address to listen on (default 127.0.0.1)\n"
	    "  --port P        TCP port (default 8080; 0: any free port, printed on stderr)\n"
	    "  --threads N     worker threads, one epoll loop each (default: online CPUs)\n"
	    "  --stack-size S  standard coroutine stack size (default 8192; rounded up\n"
	    "                  to a power of two, 4096 .. 1048576)\n"
	    "  --stacks K      where stacks come from: gostack (default), malloc, or\n"
	    "                  mmap (MAP_STACK|MAP_NORESERVE), for comparison\n"
	    "SIGTERM or SIGINT: drain, print one stats line on stdout, exit 0.\n"
	    "GOSTACK_PROFILE=N (one stack in N sampled): at SIGTERM the depth profile,\n"
	    "with one advice line per stack size, on stderr.\n");
}

static long
parse_num(const char *s, const char *what, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
		fprintf(stderr, "gostack-http-demo: bad %s '%s' (%ld .. %ld)\n", what, s,
		    min, max);
		exit(2);
	}
	return v;
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"addr", required_argument, NULL, 'a'},
		{"port", required_argument, NULL, 'p'},
		{"threads", required_argument, NULL, 't'},
		{"stack-size", required_argument, NULL, 's'},
		{"stacks", required_argument, NULL, 'k'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	int c;

	while ((c = getopt_long(argc, argv, "a:p:t:s:k:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'a': opt.addr = optarg; break;
		case 'p': opt.port = (int)parse_num(optarg, "port", 0, 65535); break;
		case 't': opt.threads = (int)parse_num(optarg, "thread count", 1, 1024); break;
		case 's':
			opt.stack_size = round2((size_t)parse_num(optarg, "stack size", 4096,
			    (long)MAX_CO_STACK));
			break;
		case 'k':
			if (strcmp(optarg, "gostack") == 0)
				opt.stacks = STACKS_GOSTACK;
			else if (strcmp(optarg, "malloc") == 0)
				opt.stacks = STACKS_MALLOC;
			else if (strcmp(optarg, "mmap") == 0)
				opt.stacks = STACKS_MMAP;
			else {
				fprintf(stderr, "gostack-http-demo: --stacks gostack|malloc|mmap\n");
				return 2;
			}
			break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	if (opt.threads == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		opt.threads = n > 0 ? (int)n : 1;
	}
	gs_alloc = gostack_default_allocator();

	/* Many hundreds of connections: raise the descriptor limit. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}

	/* SIGTERM/SIGINT only through the signalfd; SIGPIPE never (MSG_NOSIGNAL too).
	 * Blocked before any thread starts, so in every thread. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
		die("pthread_sigmask");
	signal(SIGPIPE, SIG_IGN);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0)
		die("signalfd");

	struct sockaddr_in sa;
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)opt.port);
	if (inet_pton(AF_INET, opt.addr, &sa.sin_addr) != 1) {
		fprintf(stderr, "gostack-http-demo: bad IPv4 address '%s'\n", opt.addr);
		return 2;
	}

	struct worker *ws = calloc((size_t)opt.threads, sizeof(*ws));
	if (ws == NULL)
		die("calloc");
	for (int i = 0; i < opt.threads; i++) {
		ws[i].id = i;
		ws[i].lfd = listen_socket(&sa);   /* the first fixes the port */
		ws[i].efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		ws[i].spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (ws[i].efd < 0)
			die("eventfd");
	}
	for (int i = 0; i < opt.threads; i++) {
		int err = pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]);
		if (err != 0) {
			errno = err;
			die("pthread_create");
		}
	}
	fprintf(stderr,
	    "gostack-http-demo: listening on http://%s:%d/ (threads=%d, stacks=%s, "
	    "stack-size=%zu, pid=%ld)\n",
	    opt.addr, ntohs(sa.sin_port), opt.threads, stacks_name[opt.stacks],
	    opt.stack_size, (long)getpid());

	for (;;) {
		struct signalfd_siginfo si;
		ssize_t n = read(sfd, &si, sizeof(si));
		if (n == (ssize_t)sizeof(si))
			break;
		if (n < 0 && errno != EINTR)
			die("read signalfd");
	}
	close(sfd);

	uint64_t one = 1;
	for (int i = 0; i < opt.threads; i++)
		if (write(ws[i].efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
			die("write eventfd");
	struct counters sum = {0};
	for (int i = 0; i < opt.threads; i++) {
		pthread_join(ws[i].tid, NULL);
		sum.accepted += ws[i].n.accepted;
		sum.requests += ws[i].n.requests;
		sum.restacks += ws[i].n.restacks;
		sum.desc_new += ws[i].n.desc_new;
		sum.desc_freed += ws[i].n.desc_freed;
		sum.stack_new += ws[i].n.stack_new;
		sum.stack_freed_gfput += ws[i].n.stack_freed_gfput;
		sum.stack_freed_gfget += ws[i].n.stack_freed_gfget;
	}
	free(ws);
	fprintf(stderr,
	    "gostack-http-demo: drained: connections=%" PRIu64 " requests=%" PRIu64
	    " descriptors=%" PRIu64 " (freed %" PRIu64 ") standard stacks allocated=%"
	    PRIu64 " restacks=%" PRIu64 " stacks freed by gfput=%" PRIu64
	    " by gfget=%" PRIu64 "\n",
	    sum.accepted, sum.requests, sum.desc_new, sum.desc_freed, sum.stack_new,
	    sum.restacks, sum.stack_freed_gfput, sum.stack_freed_gfget);

	if (opt.stacks == STACKS_GOSTACK) {
		gostack_stats_t st;
		gostack_stats_detail_t d;

		/* GOSTACK_PROFILE=N: the depth profile, with its advice per
		 * stack size, on stderr (stdout keeps its one line). */
		gostack_allocator_stats_detail(gs_alloc, &d);
		if (d.profile != 0)
			(void)gostack_allocator_stats_print(gs_alloc, 2);
		gostack_thread_flush();
		gostack_allocator_reclaim(gs_alloc);
		gostack_allocator_stats(gs_alloc, &st);
		printf("gostack: allocs=%" PRIu64 " frees=%" PRIu64 " inuse_bytes=%zu "
		       "cached_bytes=%zu pooled_bytes=%zu mapped_bytes=%zu\n",
		    st.allocs, st.frees, st.inuse_bytes, st.cached_bytes,
		    st.pooled_bytes, st.mapped_bytes);
	} else {
		printf("%s: allocs=%" PRIu64 " frees=%" PRIu64 " inuse_bytes=%" PRIu64 "\n",
		    stacks_name[opt.stacks], (uint64_t)atomic_load(&os_allocs),
		    (uint64_t)atomic_load(&os_frees), (uint64_t)atomic_load(&os_inuse));
	}
	fflush(stdout);
	return 0;
}
