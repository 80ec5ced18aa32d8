/*  idtable.h - a czmq zhashx keyed by positive 64-bit ids stored in the key pointer
    itself: no key allocation, no string formatting, for tables that see an insert
    and a delete per request (client.c's calls, journal.c's open messages). */
#ifndef SLUICE_IDTABLE_H
#define SLUICE_IDTABLE_H

#include <czmq.h>
#include <stdint.h>

/* A table whose items are freed with free() when own_items, else left alone. */
zhashx_t *idtable_new(bool own_items);

/* The key of id (id must not be 0: zhashx refuses NULL keys). */
static inline void *idtable_key(uint64_t id)
{
    return (void *)(uintptr_t)id;
}

#endif
