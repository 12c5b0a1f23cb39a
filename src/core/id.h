/*
 * id.h - random identifiers: a short type prefix and 24 hex characters of
 * randomness (96 bits, from libsodium), e.g. "usr_5f0c0e4b9d2a7c1e8f3b6a21".
 * Sortable ids are not needed: lists order by time columns.
 */
#ifndef KP_ID_H
#define KP_ID_H

#include <stddef.h>

/* Writes prefix + "_" + 24 hex chars into out (at least strlen(prefix) + 26 bytes). */
void kp_id_new(const char *prefix, char *out, size_t out_size);

/* Today's UTC date as YYYY-MM-DD into out (11 bytes). */
void kp_date_utc_today(char out[11]);

#endif
