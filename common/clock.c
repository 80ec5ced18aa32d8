/*  clock.c - monotonic and wall time. See clock.h. */
#include "clock.h"

#include <stdio.h>
#include <time.h>

static int64_t s_read(clockid_t id, int64_t div)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * (1000000000 / div) + ts.tv_nsec / div;
}

int64_t clock_now_ms(void)
{
    return s_read(CLOCK_MONOTONIC, 1000000);
}

int64_t clock_now_us(void)
{
    return s_read(CLOCK_MONOTONIC, 1000);
}

int64_t clock_wall_ms(void)
{
    return s_read(CLOCK_REALTIME, 1000000);
}

void clock_format_rfc3339(int64_t wall_ms, char out[CLOCK_RFC3339_SIZE])
{
    time_t secs = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    /* strftime handles the date; years past 9999 are not a concern of this code */
    size_t n = strftime(out, CLOCK_RFC3339_SIZE, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, CLOCK_RFC3339_SIZE - n, ".%03dZ", (int)(wall_ms % 1000));
}
