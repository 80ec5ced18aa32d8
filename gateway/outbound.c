/*  outbound.c - the gateway's outbound memory budget and write-progress timeout.
    See outbound.h. */
#include "outbound.h"
#include "clock.h"

#include <linux/tcp.h> /* tcpi_bytes_acked: glibc's netinet/tcp.h lacks it */
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>

/* The janitor looks at the peers' progress this often: a system call per
   connection holding bytes, so not on every tick. */
#define S_SCAN_MS 500

struct outbound_t {
    size_t budget;            /* outbound_budget_bytes */
    int64_t timeout_ms;       /* write_progress_timeout_s */
    size_t total;             /* bytes held by every attached connection */
    outbound_conn_t *holding; /* the connections with bytes > 0 */
    int64_t scanned_ms;       /* the janitor's last look at the peers */
};

outbound_t *outbound_new(size_t budget_bytes, int64_t write_timeout_ms)
{
    outbound_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->budget = budget_bytes;
    self->timeout_ms = write_timeout_ms;
    return self;
}

void outbound_destroy(outbound_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

/* Bytes of ours the peer has acknowledged, ever; 0 when the kernel cannot say
   (not a TCP socket: then only a shrinking queue counts as progress). */
static uint64_t s_acked(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof ti.tcpi_bytes_acked)
        return 0;
    return ti.tcpi_bytes_acked;
}

void outbound_attach(outbound_t *self, outbound_conn_t *oc, int fd, outbound_shed_fn *shed)
{
    *oc = (outbound_conn_t){.owner = self, .shed = shed, .fd = fd};
}

static void s_unlink(outbound_t *self, outbound_conn_t *oc)
{
    if (oc->prev)
        oc->prev->next = oc->next;
    else
        self->holding = oc->next;
    if (oc->next)
        oc->next->prev = oc->prev;
    oc->prev = oc->next = NULL;
}

void outbound_set(outbound_conn_t *oc, size_t bytes)
{
    outbound_t *self = oc->owner;
    if (!self || bytes == oc->bytes)
        return;
    if (oc->bytes == 0) {
        /* the clock starts when there is something to write */
        oc->next = self->holding;
        oc->prev = NULL;
        if (self->holding)
            self->holding->prev = oc;
        self->holding = oc;
        oc->progress_ms = clock_now_ms();
        oc->acked = s_acked(oc->fd);
    } else if (bytes < oc->bytes) {
        oc->progress_ms = clock_now_ms();
    }
    self->total = self->total - oc->bytes + bytes;
    oc->bytes = bytes;
    if (bytes == 0)
        s_unlink(self, oc);
}

void outbound_detach(outbound_conn_t *oc)
{
    if (!oc->owner)
        return;
    outbound_set(oc, 0);
    oc->owner = NULL;
}

bool outbound_reserve(outbound_conn_t *oc, size_t more)
{
    outbound_t *self = oc->owner;
    if (!self)
        return true;
    while (self->total + more > self->budget) {
        /* linear, but only while over the budget, and each pass sheds one */
        outbound_conn_t *big = NULL;
        for (outbound_conn_t *c = self->holding; c; c = c->next)
            if (!c->shed_done && c != oc && (!big || c->bytes > big->bytes))
                big = c;
        if (!big || big->bytes <= oc->bytes + more)
            return false;
        big->shed_done = true;
        big->shed(big, OUTBOUND_BUDGET);
    }
    return true;
}

void outbound_janitor(outbound_t *self, int64_t now_ms)
{
    if (self->timeout_ms <= 0 || now_ms - self->scanned_ms < S_SCAN_MS)
        return;
    self->scanned_ms = now_ms;
    for (outbound_conn_t *c = self->holding, *next; c; c = next) {
        next = c->next;
        if (c->shed_done)
            continue; /* closing already, on libwebsockets' own timeout */
        uint64_t acked = s_acked(c->fd);
        if (acked != c->acked) {
            c->acked = acked;
            c->progress_ms = now_ms;
        } else if (now_ms - c->progress_ms >= self->timeout_ms) {
            c->shed_done = true;
            c->shed(c, OUTBOUND_STALLED);
        }
    }
}

size_t outbound_total(const outbound_t *self)
{
    return self->total;
}

size_t outbound_budget(const outbound_t *self)
{
    return self->budget;
}
