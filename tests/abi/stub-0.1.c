/*
 * A link-time stand-in for libgostack.so.0 as 0.1 released it: the same
 * SONAME, the same functions, the same version script (stub-0.1.map). A
 * program linked against it records what a binary built in 0.1's day
 * records (needs GOSTACK_0) and runs against today's library, found through
 * LD_LIBRARY_PATH (tests/CMakeLists.txt). Nothing here ever runs.
 */
#include <stdlib.h>

#include "gostack.h"   /* tests/abi/0.1/gostack.h */

#define NOT_RUN abort()
unsigned gostack_version(void) { NOT_RUN; }
size_t gostack_good_size(size_t size) { (void)size; NOT_RUN; }
gostack_t gostack_alloc(size_t size) { (void)size; NOT_RUN; }
void gostack_free(gostack_t stk) { (void)stk; NOT_RUN; }
gostack_allocator_t *gostack_default_allocator(void) { NOT_RUN; }
gostack_allocator_t *gostack_allocator_new(const gostack_config_t *cfg) { (void)cfg; NOT_RUN; }
int gostack_allocator_delete(gostack_allocator_t *a) { (void)a; NOT_RUN; }
gostack_t gostack_allocator_alloc(gostack_allocator_t *a, size_t size) { (void)a; (void)size; NOT_RUN; }
void gostack_allocator_free(gostack_allocator_t *a, gostack_t stk) { (void)a; (void)stk; NOT_RUN; }
void gostack_thread_flush(void) { NOT_RUN; }
size_t gostack_allocator_reclaim(gostack_allocator_t *a) { (void)a; NOT_RUN; }
void gostack_allocator_stats(gostack_allocator_t *a, gostack_stats_t *out) { (void)a; (void)out; NOT_RUN; }
void gostack_allocator_stats_detail(gostack_allocator_t *a, gostack_stats_detail_t *out) { (void)a; (void)out; NOT_RUN; }
int gostack_allocator_stats_print(gostack_allocator_t *a, int fd) { (void)a; (void)fd; NOT_RUN; }
