/*
 * tools.h: what gostack tells AddressSanitizer and Valgrind about stacks.
 *
 * Every place a stack changes hands calls one of these hooks:
 *   gostack__tool_alloc(lo, n)     a stack is handed to the user
 *   gostack__tool_free(lo, n)      the user gave a stack back; its first 16
 *                                  bytes, where the caches and pools keep
 *                                  their links, must stay accessible
 *   gostack__tool_span_free(p, n)  a span's memory goes back to the heap
 * Builds without a sanitizer or the Valgrind option compile them to nothing.
 */
#ifndef GOSTACK_TOOLS_H
#define GOSTACK_TOOLS_H

#include <stddef.h>
#include <stdint.h>

static inline void gostack__tool_alloc(uintptr_t lo, size_t n) { (void)lo; (void)n; }
static inline void gostack__tool_free(uintptr_t lo, size_t n) { (void)lo; (void)n; }
static inline void gostack__tool_span_free(uintptr_t p, size_t n) { (void)p; (void)n; }

#endif /* GOSTACK_TOOLS_H */
