/*
 * mailer.c - see mailer.h. One message = one libcurl SMTP transfer: the
 * message (RFC 5322 headers, CRLF line ends, then the body) is uploaded
 * through CURLOPT_READFUNCTION; curl does the SMTP dialogue and the
 * dot-stuffing. Queueing is a kp_pool of one thread.
 */
#include "mail/mailer.h"

#include <curl/curl.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/curl_defaults.h"
#include "core/log.h"
#include "core/pool.h"

#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_CONNECT_TIMEOUT_S 10

struct kp_mailer {
    char *url;
    char *from;
    long timeout_s;
    long connect_timeout_s;
    kp_pool *pool;
    atomic_int stopping;
};

typedef struct message {
    kp_mailer *m;
    char *to;
    char *subject;
    char *body;
} message;

typedef struct upload {
    const char *data;
    size_t len, sent;
} upload;

static int has_line_break(const char *s)
{
    return strpbrk(s, "\r\n") != NULL;
}

static int header_safe(const char *s)
{
    return s && *s && !has_line_break(s) && !strpbrk(s, "<>");
}

static size_t on_read(char *buf, size_t size, size_t nmemb, void *arg)
{
    upload *u = arg;
    size_t n = size * nmemb, left = u->len - u->sent;
    if (n > left)
        n = left;
    memcpy(buf, u->data + u->sent, n);
    u->sent += n;
    return n;
}

static int on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
    kp_mailer *m = arg;
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return atomic_load(&m->stopping) ? 1 : 0;
}

/* The whole message: headers, a blank line, the body with CRLF line ends. */
static int compose(const kp_mailer *m, const char *to, const char *subject, const char *body, kp_buf *out)
{
    char date[64], id[33];
    unsigned char raw[16];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S +0000", &tm);
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(id, sizeof id, raw, sizeof raw);
    const char *domain = strchr(m->from, '@');
    int rc = kp_buf_printf(out,
                           "Date: %s\r\nFrom: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s%s>\r\n"
                           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
                           "Content-Transfer-Encoding: 8bit\r\n\r\n",
                           date, m->from, to, subject, id, domain ? domain : "@koumpa");
    for (const char *p = body; rc == 0 && *p; p++) {
        if (*p == '\n' && (p == body || p[-1] != '\r'))
            rc = kp_buf_puts(out, "\r\n");
        else
            rc = kp_buf_append(out, p, 1);
    }
    return rc;
}

kp_status kp_mailer_send_now(kp_mailer *m, const char *to, const char *subject, const char *body, kp_err *err)
{
    kp_buf msg = KP_BUF_INIT, from = KP_BUF_INIT, rcpt_addr = KP_BUF_INIT;
    char curl_msg[CURL_ERROR_SIZE] = "";
    struct curl_slist *rcpt = NULL;
    CURL *curl = NULL;
    kp_status st = KP_OK;

    if (!header_safe(to) || !subject || has_line_break(subject))
        return kp_err_set(err, KP_EINVAL, "invalid recipient or subject");
    if (compose(m, to, subject, body ? body : "", &msg) != 0 || kp_buf_printf(&from, "<%s>", m->from) != 0 ||
        kp_buf_printf(&rcpt_addr, "<%s>", to) != 0 || !(rcpt = curl_slist_append(NULL, rcpt_addr.data)) ||
        !(curl = kp_curl_defaults(curl_easy_init()))) {
        st = kp_err_set(err, KP_ENOMEM, "out of memory");
        goto cleanup;
    }
    upload up = {msg.data, msg.len, 0};
    curl_easy_setopt(curl, CURLOPT_URL, m->url);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    if (strncmp(m->url, "smtp://", 7) == 0)
        curl_easy_setopt(curl, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY); /* STARTTLS when offered */
    curl_easy_setopt(curl, CURLOPT_MAIL_FROM, from.data);
    curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(curl, CURLOPT_READDATA, &up);
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, m->connect_timeout_s);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, m->timeout_s);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, m);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_msg);
    CURLcode rc = curl_easy_perform(curl);
    if (rc != CURLE_OK)
        st = kp_err_set(err, KP_EIO, "sending mail failed: %s", curl_msg[0] ? curl_msg : curl_easy_strerror(rc));

cleanup:
    curl_easy_cleanup(curl);
    curl_slist_free_all(rcpt);
    kp_buf_free(&msg);
    kp_buf_free(&from);
    kp_buf_free(&rcpt_addr);
    return st;
}

static void free_message(message *msg)
{
    free(msg->to);
    free(msg->subject);
    free(msg->body);
    free(msg);
}

static void send_job(void *arg)
{
    message *msg = arg;
    kp_mailer *m = msg->m;
    kp_err err = {0};
    if (atomic_load(&m->stopping)) {
        kp_log_json(KP_LOG_WARN, "mail dropped at shutdown", json_pack("{s:s}", "to", msg->to));
    } else if (kp_mailer_send_now(m, msg->to, msg->subject, msg->body, &err) == KP_OK) {
        kp_log_json(KP_LOG_INFO, "mail sent", json_pack("{s:s,s:s}", "to", msg->to, "subject", msg->subject));
    } else {
        kp_log_json(KP_LOG_WARN, "mail not sent", json_pack("{s:s,s:s}", "to", msg->to, "error", err.msg));
    }
    free_message(msg);
}

int kp_mailer_send(kp_mailer *m, const char *to, const char *subject, const char *body)
{
    message *msg = calloc(1, sizeof *msg);
    if (!msg)
        return -1;
    msg->m = m;
    msg->to = strdup(to);
    msg->subject = strdup(subject);
    msg->body = strdup(body);
    if (!msg->to || !msg->subject || !msg->body || atomic_load(&m->stopping) ||
        kp_pool_submit(m->pool, send_job, msg) != 0) {
        free_message(msg);
        return -1;
    }
    return 0;
}

static int supported_url(const char *url)
{
    return url && (strncmp(url, "smtp://", 7) == 0 || strncmp(url, "smtps://", 8) == 0) && !has_line_break(url);
}

kp_status kp_mailer_new(const kp_mailer_options *opt, kp_mailer **out, kp_err *err)
{
    *out = NULL;
    if (!supported_url(opt->url))
        return kp_err_set(err, KP_EINVAL, "the SMTP URL must start with smtp:// or smtps://");
    if (!header_safe(opt->from) || !strchr(opt->from, '@'))
        return kp_err_set(err, KP_EINVAL, "the sender must be an address like koumpa@example.com");
    kp_mailer *m = calloc(1, sizeof *m);
    if (!m)
        return kp_err_set(err, KP_ENOMEM, "out of memory");
    m->url = strdup(opt->url);
    m->from = strdup(opt->from);
    m->timeout_s = opt->timeout_s > 0 ? opt->timeout_s : DEFAULT_TIMEOUT_S;
    m->connect_timeout_s = opt->connect_timeout_s > 0 ? opt->connect_timeout_s : DEFAULT_CONNECT_TIMEOUT_S;
    curl_global_init(CURL_GLOBAL_DEFAULT); /* reference-counted; thread-safe in libcurl >= 7.84 */
    kp_status st = m->url && m->from ? kp_pool_new("mail", 1, opt->queue, &m->pool, err)
                                     : kp_err_set(err, KP_ENOMEM, "out of memory");
    if (st != KP_OK) {
        kp_mailer_free(m);
        return st;
    }
    *out = m;
    return KP_OK;
}

void kp_mailer_free(kp_mailer *m)
{
    if (!m)
        return;
    atomic_store(&m->stopping, 1);
    kp_pool_free(m->pool); /* queued jobs see stopping and drop their message */
    free(m->url);
    free(m->from);
    free(m);
    curl_global_cleanup();
}
