/* system_routes.c - the server's own endpoints: health, metrics (the dashboard at /: dashboard_routes.c). */
#include <string.h>
#include <time.h>

#include "api/handlers.h"
#include "core/metrics.h"

void kp_h_healthz(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_err err = {0};
    (void)req;
    if (ctx->store->ops->ping(ctx->store, &err) != KP_OK) {
        kp_resp_error(resp, 503, "unavailable", "the database does not answer");
        return;
    }
    kp_resp_json(resp, 200, json_pack("{s:s}", "status", "ok"));
}

void kp_h_metrics(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    (void)req;
    kp_buf out = KP_BUF_INIT;
    kp_metrics_render(ctx->app->metrics, &out);
    kp_resp_text(resp, 200, "text/plain; version=0.0.4; charset=utf-8", kp_buf_cstr(&out), out.len);
    kp_buf_free(&out);
}

/* The proleptic Gregorian date of a day counted from 1970-01-01 (the
 * days-to-civil algorithm of H. Hinnant's "chrono-Compatible Low-Level Date
 * Algorithms"). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);                          /* [0, 146096] */
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* [0, 365] */
    unsigned mp = (5 * doy + 2) / 153;                                    /* March is 0 */
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static char *two_digits(char *p, unsigned v)
{
    p[0] = (char)('0' + v / 10);
    p[1] = (char)('0' + v % 10);
    return p + 2;
}

/* "YYYY-MM-DDTHH:MM:SSZ". Without gmtime_r and strftime: a GET /v1/me formats
 * one, and gmtime_r takes glibc's time-zone lock each time. Years outside
 * 0000-9999 go through them. */
void kp_h_time_text(int64_t t, char out[KP_H_TIME_MAX])
{
    int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
    unsigned secs = (unsigned)(t - days * 86400);
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 0 || y > 9999) {
        struct tm tm;
        time_t tt = (time_t)t;
        if (!gmtime_r(&tt, &tm) || strftime(out, KP_H_TIME_MAX, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
            out[0] = '\0';
        return;
    }
    char *p = two_digits(two_digits(out, (unsigned)(y / 100)), (unsigned)(y % 100));
    *p++ = '-';
    p = two_digits(p, m);
    *p++ = '-';
    p = two_digits(p, d);
    *p++ = 'T';
    p = two_digits(p, secs / 3600);
    *p++ = ':';
    p = two_digits(p, secs / 60 % 60);
    *p++ = ':';
    p = two_digits(p, secs % 60);
    *p++ = 'Z';
    *p = '\0';
}

json_t *kp_h_time_json(int64_t t)
{
    char text[KP_H_TIME_MAX];
    kp_h_time_text(t, text);
    return json_string(text);
}
