/*  throttle.c - request rates per address and per token, connections and
    unfinished requests per address. See throttle.h. */
#include "throttle.h"
#include "clock.h"
#include "metrics.h"
#include "ratelimit.h"
#include "slog.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/socket.h>

/* An address with open connections: lives while it has one. */
struct throttle_peer_t {
    char key[INET6_ADDRSTRLEN + 8]; /* "1.2.3.4" or "2001:db8:1:2::/64" */
    size_t connections;
    size_t pending; /* of those, with a request not yet whole */
};

struct throttle_t {
    gw_t *gw;
    ratelimit_t *by_address; /* NULL: no address rate */
    ratelimit_t *by_token;   /* NULL: no token rate */
    size_t max_connections;  /* per address; 0: none */
    size_t max_pending;      /* unfinished requests per address; 0: none */
    zhashx_t *peers;         /* key -> throttle_peer_t (owned by their connections) */
};

/* The rate tables cfg asks for (NULL where a rate is 0); -1 on a bad value or
   out of memory, with nothing made. */
static int s_tables(const gw_config_t *cfg, ratelimit_t **by_address, ratelimit_t **by_token)
{
    *by_address = *by_token = NULL;
    if (cfg->address_rate > 0)
        *by_address = ratelimit_new((double)cfg->address_rate, (double)cfg->address_burst,
                                    cfg->ratelimit_max_entries);
    if (cfg->token_rate > 0)
        *by_token = ratelimit_new((double)cfg->token_rate, (double)cfg->token_burst,
                                  cfg->ratelimit_max_entries);
    if ((cfg->address_rate > 0 && !*by_address) || (cfg->token_rate > 0 && !*by_token)) {
        ratelimit_destroy(by_address);
        ratelimit_destroy(by_token);
        return -1;
    }
    return 0;
}

throttle_t *throttle_new(gw_t *gw)
{
    const gw_config_t *cfg = &gw->cfg;
    throttle_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->gw = gw;
    self->max_connections = cfg->address_max_connections;
    self->max_pending = cfg->address_max_pending;
    if (s_tables(cfg, &self->by_address, &self->by_token) != 0) {
        slog_error("throttle: bad rate limit settings");
        throttle_destroy(&self);
        return NULL;
    }
    self->peers = zhashx_new();
    zhashx_set_key_duplicator(self->peers, NULL); /* keys live in the peers */
    zhashx_set_key_destructor(self->peers, NULL);
    return self;
}

int throttle_reconfigure(throttle_t *self, const gw_config_t *cfg)
{
    ratelimit_t *by_address, *by_token;
    if (s_tables(cfg, &by_address, &by_token) != 0)
        return -1;
    ratelimit_destroy(&self->by_address);
    ratelimit_destroy(&self->by_token);
    self->by_address = by_address;
    self->by_token = by_token;
    self->max_connections = cfg->address_max_connections;
    self->max_pending = cfg->address_max_pending;
    return 0;
}

void throttle_destroy(throttle_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    throttle_t *self = *self_p;
    ratelimit_destroy(&self->by_address);
    ratelimit_destroy(&self->by_token);
    if (self->peers) {
        /* connections still open at exit: theirs to free, but they are gone now */
        for (throttle_peer_t *p = zhashx_first(self->peers); p; p = zhashx_next(self->peers))
            free(p);
        zhashx_destroy(&self->peers);
    }
    free(self);
    *self_p = NULL;
}

bool throttle_address_key(int fd, char *key, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
        return false;
    if (ss.ss_family == AF_INET) {
        return inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, key, (socklen_t)size) !=
               NULL;
    }
    if (ss.ss_family != AF_INET6)
        return false;
    struct in6_addr a = ((struct sockaddr_in6 *)&ss)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a))
        return inet_ntop(AF_INET, &a.s6_addr[12], key, (socklen_t)size) != NULL;
    memset(&a.s6_addr[8], 0, 8); /* the /64 */
    char text[INET6_ADDRSTRLEN];
    if (!inet_ntop(AF_INET6, &a, text, sizeof text))
        return false;
    snprintf(key, size, "%s/64", text);
    return true;
}

throttle_peer_t *throttle_connect(throttle_t *self, int fd, throttle_admit_t *refused)
{
    *refused = THROTTLE_ADMITTED;
    if (!self->by_address && !self->max_connections && !self->max_pending)
        return NULL;
    char key[sizeof((throttle_peer_t *)0)->key];
    if (!throttle_address_key(fd, key, sizeof key))
        return NULL;
    throttle_peer_t *p = zhashx_lookup(self->peers, key);
    if (p && self->max_connections && p->connections >= self->max_connections) {
        *refused = THROTTLE_CONNECTIONS;
        metrics_count(self->gw->metrics, "rate_limited_connections");
        return NULL;
    }
    if (p && self->max_pending && p->pending >= self->max_pending) {
        *refused = THROTTLE_PENDING;
        metrics_count(self->gw->metrics, "rate_limited_pending");
        return NULL;
    }
    if (!p) {
        p = calloc(1, sizeof *p);
        memcpy(p->key, key, sizeof key);
        zhashx_insert(self->peers, p->key, p);
    }
    p->connections++;
    p->pending++; /* its head */
    return p;
}

void throttle_pending_begin(throttle_t *self, throttle_peer_t *peer)
{
    (void)self;
    if (peer)
        peer->pending++;
}

void throttle_pending_end(throttle_t *self, throttle_peer_t *peer)
{
    (void)self;
    if (peer && peer->pending)
        peer->pending--;
}

void throttle_disconnect(throttle_t *self, throttle_peer_t **peer_p)
{
    if (!peer_p || !*peer_p)
        return;
    throttle_peer_t *p = *peer_p;
    *peer_p = NULL;
    if (--p->connections == 0) {
        zhashx_delete(self->peers, p->key);
        free(p);
    }
}

/* Takes one from key's bucket in rl; counts refusals and evictions (a full
   table: a flood of distinct keys, worth seeing in /metrics). */
static int s_take(throttle_t *self, ratelimit_t *rl, const char *key, const char *refused,
                  const char *evicted)
{
    uint64_t before = ratelimit_evicted(rl);
    int wait = ratelimit_take(rl, key, clock_now_ms());
    if (wait)
        metrics_count(self->gw->metrics, refused);
    if (ratelimit_evicted(rl) != before)
        metrics_count(self->gw->metrics, evicted);
    return wait;
}

int throttle_request(throttle_t *self, const throttle_peer_t *peer)
{
    if (!self->by_address || !peer)
        return 0;
    return s_take(self, self->by_address, peer->key, "rate_limited_address",
                  "rate_limit_evicted_address");
}

int throttle_token(throttle_t *self, const char *token, size_t len)
{
    if (!self->by_token)
        return 0;
    unsigned char hash[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(hash, (const unsigned char *)token, len);
    char key[33];
    sodium_bin2hex(key, sizeof key, hash, 16);
    return s_take(self, self->by_token, key, "rate_limited_token", "rate_limit_evicted_token");
}

void throttle_janitor(throttle_t *self, int64_t now_ms)
{
    if (self->by_address)
        ratelimit_expire(self->by_address, now_ms);
    if (self->by_token)
        ratelimit_expire(self->by_token, now_ms);
}

size_t throttle_entries(const throttle_t *self)
{
    return zhashx_size(self->peers) + (self->by_address ? ratelimit_size(self->by_address) : 0) +
           (self->by_token ? ratelimit_size(self->by_token) : 0);
}
