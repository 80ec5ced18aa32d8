/*  clock.h - time: monotonic for deadlines and latencies, wall clock only for
    timestamps shown to people (RFC 3339 UTC with milliseconds). */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

#include <stddef.h>
#include <stdint.h>

int64_t clock_now_ms(void); /* monotonic */
int64_t clock_now_us(void); /* monotonic */
int64_t clock_wall_ms(void);

#define CLOCK_RFC3339_SIZE 32
/* 2026-11-23T10:00:00.123Z */
void clock_format_rfc3339(int64_t wall_ms, char out[CLOCK_RFC3339_SIZE]);

#endif
