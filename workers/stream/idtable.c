/*  idtable.c - zhashx keyed by integer ids. See idtable.h. */
#include "idtable.h"

#include <stdlib.h>

static size_t s_hash(const void *key)
{
    uint64_t x = (uint64_t)(uintptr_t)key; /* a finaliser: sequential ids spread out */
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static int s_compare(const void *a, const void *b)
{
    return a == b ? 0 : (uintptr_t)a < (uintptr_t)b ? -1 : 1;
}

static void s_free_item(void **item_p)
{
    free(*item_p);
    *item_p = NULL;
}

zhashx_t *idtable_new(bool own_items)
{
    zhashx_t *t = zhashx_new();
    if (!t)
        return NULL;
    zhashx_set_key_hasher(t, s_hash);
    zhashx_set_key_comparator(t, s_compare);
    zhashx_set_key_duplicator(t, NULL);
    zhashx_set_key_destructor(t, NULL);
    if (own_items)
        zhashx_set_destructor(t, s_free_item);
    return t;
}
