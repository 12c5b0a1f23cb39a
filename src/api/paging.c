/* paging.c - see paging.h. */
#include "api/paging.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

int kp_paging_parse_int(const char *s, int64_t *out)
{
    char *end = NULL;
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !end || *end)
        return -1;
    *out = (int64_t)v;
    return 0;
}

int kp_paging_limit(const kp_req *req, kp_resp *resp, size_t def, size_t max, size_t *out)
{
    const char *v = kp_req_query(req, "limit");
    int64_t n = 0;
    *out = def;
    if (!v)
        return 0;
    if (kp_paging_parse_int(v, &n) != 0 || n < 1 || (uint64_t)n > max) {
        kp_resp_error(resp, 400, "invalid_request", "limit must be a whole number from 1 to %zu", max);
        return -1;
    }
    *out = (size_t)n;
    return 0;
}

void kp_paging_cursor_encode(const char *text, char *out, size_t n)
{
    sodium_bin2base64(out, n, (const unsigned char *)text, strlen(text), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

int kp_paging_bad_cursor(kp_resp *resp)
{
    kp_resp_error(resp, 400, "invalid_request", "cursor is not one this server returned");
    return -1;
}

int kp_paging_cursor_decode(const kp_req *req, kp_resp *resp, char text[KP_CURSOR_MAX + 1])
{
    const char *v = kp_req_query(req, "cursor");
    size_t len = 0;
    text[0] = '\0';
    if (!v || !*v)
        return 0;
    if (sodium_base642bin((unsigned char *)text, KP_CURSOR_MAX, v, strlen(v), NULL, &len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        len == 0 || memchr(text, '\0', len))
        return kp_paging_bad_cursor(resp);
    text[len] = '\0';
    return 0;
}
