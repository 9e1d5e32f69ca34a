/*
 * stats.c: statistics (Go's memstats for stacks: StackInuse, and what the
 * caches and pools hold), totals and per class, and their printing.
 *
 * Nothing here is on an alloc or free path: every count is a per-thread
 * counter (struct gostack__tstat) summed under the registry lock, or a
 * backend's own pool count. gostack__decay_lock keeps a scavenger pass from
 * running in the middle, so the numbers balance whenever no alloc or free of
 * the allocator runs: inuse + cached + pooled == mapped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mheap.h"
#include "pools.h"
#include "profile.h"

void
gostack__sum_stats(gostack_allocator_t *a, struct gostack__tstat *sum, size_t cached[GOSTACK_NUM_ORDERS])
{
	memset(sum, 0, sizeof *sum);
	memset(cached, 0, sizeof(size_t) * GOSTACK_NUM_ORDERS);
	gostack__tstat_add(sum, &a->dead);
	gostack__tstat_add(sum, &a->orphan);
	struct gostack__tcache *t;

	LIST_FOREACH(t, &a->tcaches, link) {
		gostack__tstat_add(sum, &t->st);
		for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
			cached[o] += (size_t)atomic_load_explicit(&t->stackcache[o].n, memory_order_relaxed) *
			    gostack__order_size(o);
			if (atomic_load_explicit(&t->prof_clean[o], memory_order_relaxed) != NULL)
				cached[o] += gostack__order_size(o);   /* the profile's reserve */
		}
	}
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

size_t
gostack__inuse_of(const struct gostack__tstat *s)
{
	size_t n = (size_t)(LOAD(s->large_alloc_bytes) - LOAD(s->large_free_bytes));

	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++)
		n += (size_t)(LOAD(s->allocs[o]) - LOAD(s->frees[o])) * gostack__order_size(o);
	return n;
}

void
gostack_allocator_stats_detail(gostack_allocator_t *a, gostack_stats_detail_t *out)
{
	struct gostack__tstat sum;
	size_t cached[GOSTACK_NUM_ORDERS], pooled[GOSTACK_NUM_ORDERS + 1];

	if (out == NULL)
		return;
	memset(out, 0, sizeof *out);
	if (a == NULL)
		return;
	pthread_mutex_lock(&gostack__decay_lock);
	pthread_mutex_lock(&gostack__registry_lock);
	gostack__sum_stats(a, &sum, cached);
	pthread_mutex_unlock(&gostack__registry_lock);
	out->total.pooled_bytes = a->ops->pooled_bytes(a->pools, &sum, pooled);
	out->percpu = a->ops->percpu_bytes != NULL && a->ops->percpu_bytes(a->pools, &out->percpu_bytes);
	out->total.mapped_bytes = LOAD(a->mapped);
	pthread_mutex_unlock(&gostack__decay_lock);

	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		gostack_class_stats_t *c = &out->order[o];

		c->size = gostack__order_size(o);
		c->allocs = LOAD(sum.allocs[o]);
		c->frees = LOAD(sum.frees[o]);
		c->inuse_bytes = (size_t)(c->allocs - c->frees) * c->size;
		c->cached_bytes = cached[o];
		c->pooled_bytes = pooled[o];
	}
	out->large.allocs = LOAD(sum.large_allocs);
	out->large.frees = LOAD(sum.large_frees);
	out->large.inuse_bytes = (size_t)(LOAD(sum.large_alloc_bytes) - LOAD(sum.large_free_bytes));
	out->large.pooled_bytes = pooled[GOSTACK_NUM_ORDERS];
	out->total.allocs = out->large.allocs;
	out->total.frees = out->large.frees;
	out->total.inuse_bytes = out->large.inuse_bytes;
	for (int o = 0; o < GOSTACK_NUM_ORDERS; o++) {
		out->total.allocs += out->order[o].allocs;
		out->total.frees += out->order[o].frees;
		out->total.inuse_bytes += out->order[o].inuse_bytes;
		out->total.cached_bytes += out->order[o].cached_bytes;
	}
	out->heap_dirty_bytes = gostack__heap_dirty();
	out->backend = a->backend;
	out->no_cache = a->no_cache;
	out->guard_size = a->guard;
	out->decay_ms = a->decay_ms;
	out->name = a->name;
	gostack__profile_stats(a, out);
	gostack__heap_totals(&out->heap_reserved_bytes, &out->heap_released_bytes);
}

GOSTACK__DEFAULT_VERSION(gostack_allocator_stats_detail, "GOSTACK_0.2");

void
gostack_allocator_stats(gostack_allocator_t *a, gostack_stats_t *out)
{
	gostack_stats_detail_t d;

	if (out == NULL)
		return;
	gostack_allocator_stats_detail(a, &d);
	*out = d.total;
}

static int
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, buf, len);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += w;
		len -= (size_t)w;
	}
	return 0;
}

int
gostack_allocator_stats_print(gostack_allocator_t *a, int fd)
{
	gostack_stats_detail_t d;
	char buf[6144];   /* 6 lines of counts, at most 20 of profile advice */
	int n;

	if (a == NULL) {
		errno = EINVAL;
		return -1;
	}
	gostack_allocator_stats_detail(a, &d);
	n = snprintf(buf, sizeof buf,
	    "gostack: allocator %p%s%s (%s%s, guard %zu, decay %d ms%s): allocs=%llu frees=%llu "
	    "inuse_bytes=%zu cached_bytes=%zu pooled_bytes=%zu mapped_bytes=%zu heap_dirty_bytes=%zu "
	    "heap_reserved_bytes=%zu heap_released_bytes=%llu\n",
	    (void *)a, d.name[0] != 0 ? " " : "", d.name, d.backend == GOSTACK_BACKEND_MUTEX ? "mutex" : "lockfree", d.no_cache ? ", no cache" : "",
	    d.guard_size, d.decay_ms, a->is_default ? ", default" : "", (unsigned long long)d.total.allocs,
	    (unsigned long long)d.total.frees, d.total.inuse_bytes, d.total.cached_bytes, d.total.pooled_bytes,
	    d.total.mapped_bytes, d.heap_dirty_bytes, d.heap_reserved_bytes,
	    (unsigned long long)d.heap_released_bytes);
	for (int i = 0; i <= GOSTACK_NUM_ORDERS && n > 0 && (size_t)n < sizeof buf; i++) {
		const gostack_class_stats_t *c = i < GOSTACK_NUM_ORDERS ? &d.order[i] : &d.large;
		char name[32];

		if (i < GOSTACK_NUM_ORDERS)
			snprintf(name, sizeof name, "%zu KiB", c->size >> 10);
		else
			snprintf(name, sizeof name, "large");
		n += snprintf(buf + n, sizeof buf - (size_t)n,
		    "gostack:   %-7s allocs=%llu frees=%llu inuse_bytes=%zu cached_bytes=%zu pooled_bytes=%zu\n",
		    name, (unsigned long long)c->allocs, (unsigned long long)c->frees, c->inuse_bytes,
		    c->cached_bytes, c->pooled_bytes);
	}
	if (n < 0)
		return -1;
	if ((size_t)n >= sizeof buf)
		n = (int)sizeof buf - 1;
	n += (int)gostack__profile_print(&d, buf + n, sizeof buf - (size_t)n);
	return write_all(fd, buf, (size_t)n);
}

void
gostack__stats_at_exit(void)
{
	(void)gostack_allocator_stats_print(gostack_default_allocator(), 2);
}
