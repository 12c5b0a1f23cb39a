/*
 * id.h - identifiers that sort by creation time: a short type prefix, then
 * 12 hex characters of the creation time in milliseconds since the epoch
 * (48 bits, as in ULID and UUIDv7), then 16 hex characters of randomness (64
 * bits, from libsodium), e.g. "prj_019acf3e5b10a1f4c2e97d3b6a85".
 *
 * Within a process the ids are strictly increasing (whatever their prefix):
 * an id made in the same millisecond as the previous one, or when the clock
 * stepped back, reuses the previous time and adds 1 to the previous random
 * part, as ULID's monotonic mode does. So "newest first" by (time, id) is
 * exact for rows made by one process. Thread-safe.
 */
#ifndef KP_ID_H
#define KP_ID_H

#include <stddef.h>
#include <stdint.h>

#define KP_ID_HEX_LEN 28 /* hex characters after the prefix's "_" */

/* Writes prefix + "_" + 28 hex chars into out (at least strlen(prefix) + 30
 * bytes). ms_out (may be NULL) receives the time the id carries, in
 * milliseconds: use it as the row's created_at so the two orders agree. */
void kp_id_new_at(const char *prefix, char *out, size_t out_size, int64_t *ms_out);

/* kp_id_new_at without the time. */
void kp_id_new(const char *prefix, char *out, size_t out_size);

/* The wall clock in milliseconds since the epoch. */
int64_t kp_time_now_ms(void);

/* Today's UTC date as YYYY-MM-DD into out (11 bytes). */
void kp_date_utc_today(char out[11]);

#endif
