/* err.c - see err.h. */
#include "core/err.h"

#include <stdio.h>
#include <string.h>

kp_status kp_err_set(kp_err *err, kp_status status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = status;
    }
    return status;
}

void kp_err_clear(kp_err *err)
{
    if (err) {
        err->status = KP_OK;
        err->msg[0] = '\0';
    }
}

const char *kp_status_name(kp_status status)
{
    switch (status) {
    case KP_OK: return "ok";
    case KP_EINVAL: return "invalid_request";
    case KP_EAUTH: return "unauthorized";
    case KP_ECREDITS: return "insufficient_credits";
    case KP_EFORBIDDEN: return "forbidden";
    case KP_ENOTFOUND: return "not_found";
    case KP_ECONFLICT: return "conflict";
    case KP_EDUPLICATE: return "duplicate";
    case KP_ETOOLARGE: return "payload_too_large";
    case KP_ERATE: return "rate_limited";
    case KP_EUNAVAILABLE: return "unavailable";
    case KP_EIO: return "io_error";
    case KP_EDB: return "database_error";
    case KP_ENOMEM: return "out_of_memory";
    case KP_EINTERNAL: return "internal_error";
    }
    return "internal_error";
}

int kp_status_http(kp_status status)
{
    switch (status) {
    case KP_OK: return 200;
    case KP_EINVAL: return 400;
    case KP_EAUTH: return 401;
    case KP_ECREDITS: return 402;
    case KP_EFORBIDDEN: return 403;
    case KP_ENOTFOUND: return 404;
    case KP_ECONFLICT:
    case KP_EDUPLICATE: return 409;
    case KP_ETOOLARGE: return 413;
    case KP_ERATE: return 429;
    case KP_EUNAVAILABLE: return 503;
    default: return 500;
    }
}
