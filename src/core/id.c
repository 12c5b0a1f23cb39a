/* id.c - see id.h. */
#include "core/id.h"

#include <sodium.h>
#include <stdio.h>
#include <time.h>

void kp_id_new(const char *prefix, char *out, size_t out_size)
{
    unsigned char raw[12];
    char hex[25];
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(hex, sizeof hex, raw, sizeof raw);
    snprintf(out, out_size, "%s_%s", prefix, hex);
}

void kp_date_utc_today(char out[11])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}
