/*
 * publish.c - see publish.h. The order of the writes is what makes a crash
 * harmless: files first (a version row never points at missing files), then
 * the ready row, then the commit, then settled.
 */
#include "gen/publish.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "domain/credits.h"
#include "gen/generator.h"

void kp_publish_sha256_hex(const void *data, size_t len, char out[KP_SHA256_HEX_LEN + 1])
{
    unsigned char digest[crypto_hash_sha256_BYTES];
    crypto_hash_sha256(digest, (const unsigned char *)(data ? data : ""), len);
    sodium_bin2hex(out, KP_SHA256_HEX_LEN + 1, digest, sizeof digest);
}

/* A carried-over file's sha256 from the previous manifest, when it has one (versions before it had none). */
static void prev_sha256(json_t *f, char out[KP_SHA256_HEX_LEN + 1])
{
    const char *h = json_string_value(json_object_get(f, "sha256"));
    if (h && strlen(h) == KP_SHA256_HEX_LEN)
        memcpy(out, h, KP_SHA256_HEX_LEN + 1);
}

static int file_cmp(const void *a, const void *b)
{
    return strcmp(((const kp_publish_file *)a)->path, ((const kp_publish_file *)b)->path);
}

static const kp_fileblocks_entry *find_entry(const kp_fileblocks_entry *e, size_t n, const char *path)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(e[i].path, path) == 0)
            return &e[i];
    return NULL;
}

/* Checks the app rules on the files built; fills why when one is broken. */
static int check_app(const kp_publish *p, size_t total, char *why, size_t why_len)
{
    int has_index = 0;
    for (size_t i = 0; i < p->nfiles; i++)
        has_index |= strcmp(p->files[i].path, "index.html") == 0;
    if (!has_index)
        snprintf(why, why_len, "the app has no index.html");
    else if (p->nfiles > KP_PUBLISH_MAX_FILES)
        snprintf(why, why_len, "the app has %zu files; at most %d are allowed", p->nfiles, KP_PUBLISH_MAX_FILES);
    else if (total > KP_PUBLISH_MAX_BYTES)
        snprintf(why, why_len, "the app's files total %zu bytes; at most %d are allowed", total, KP_PUBLISH_MAX_BYTES);
    else
        return 0;
    return -1;
}

int kp_publish_prepare(kp_publish *p, const kp_fileblocks *parser, const char *prev_files_json, char *why,
                       size_t why_len)
{
    size_t nentries = 0, n = 0, total = 0;
    const kp_fileblocks_entry *entries = kp_fileblocks_entries(parser, &nentries);
    p->prev = prev_files_json ? json_loads(prev_files_json, 0, NULL) : json_array();
    size_t nprev = json_is_array(p->prev) ? json_array_size(p->prev) : 0;
    p->files = calloc(nprev + nentries + 1, sizeof *p->files);
    if (!p->files) {
        snprintf(why, why_len, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < nprev; i++) {
        json_t *f = json_array_get(p->prev, i);
        const char *path = json_string_value(json_object_get(f, "path"));
        if (!path || find_entry(entries, nentries, path))
            continue;
        p->files[n].path = path;
        p->files[n].size = (size_t)json_integer_value(json_object_get(f, "size"));
        p->files[n].data = NULL;
        prev_sha256(f, p->files[n].sha256);
        total += p->files[n++].size;
    }
    for (size_t i = 0; i < nentries; i++) {
        if (entries[i].deleted)
            continue;
        p->files[n].path = entries[i].path;
        p->files[n].size = entries[i].len;
        p->files[n].data = entries[i].data;
        p->files[n].fresh = 1;
        total += p->files[n++].size;
    }
    qsort(p->files, n, sizeof *p->files, file_cmp);
    p->nfiles = n;
    return check_app(p, total, why, why_len);
}

/* The key of a version's file: apps/{id}/v{n}/{path} (caller frees), or NULL when out of memory. */
static char *file_key(const char *id, int64_t n, const char *path)
{
    int len = snprintf(NULL, 0, "apps/%s/v%lld/%s", id, (long long)n, path);
    char *key = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (key)
        snprintf(key, (size_t)len + 1, "apps/%s/v%lld/%s", id, (long long)n, path);
    return key;
}

/* The output parsed again as the first parse saw it: up to each resume point, ended and rewound
 * there (what a continuation did), then the rest. The first parse enforced the limits. */
static kp_status reparse(const kp_publish *p, kp_fileblocks **parser, kp_err *err)
{
    kp_fileblocks_opts o;
    kp_fileblocks_default_opts(&o);
    o.max_files = o.max_deletes = (size_t)-1 / 2;
    o.max_total_bytes = (size_t)-1 / 2;
    o.max_message_bytes = 1; /* the message is not needed here */
    kp_status rc = kp_fileblocks_new(&o, NULL, NULL, parser, err);
    size_t at = 0;
    for (size_t i = 0; i <= p->nresumes && rc == KP_OK; i++) {
        size_t end = i < p->nresumes ? p->resumes[i] : p->output_len;
        if (end < at || end > p->output_len)
            return kp_err_set(err, KP_EINTERNAL, "a resume point outside the output");
        rc = kp_fileblocks_feed(*parser, p->output + at, end - at, err);
        if (rc == KP_OK)
            rc = kp_fileblocks_finish(*parser, err);
        if (rc == KP_OK && i < p->nresumes)
            rc = kp_fileblocks_resume(*parser, err);
        at = end;
    }
    return rc;
}

/* The fresh files' contents, from the output parsed again (the live parser kept their sizes only):
 * *parser (the caller frees it) holds them. A file whose size differs from the first parse's is an
 * internal error. */
static kp_status fill_fresh(kp_publish *p, kp_fileblocks **parser, kp_err *err)
{
    size_t missing = 0, n = 0;
    for (size_t i = 0; i < p->nfiles; i++)
        missing += p->files[i].fresh && !p->files[i].data;
    if (missing == 0)
        return KP_OK;
    if (!p->output)
        return kp_err_set(err, KP_EINTERNAL, "no output to read the files from");
    kp_status rc = reparse(p, parser, err);
    if (rc != KP_OK)
        return rc;
    const kp_fileblocks_entry *entries = kp_fileblocks_entries(*parser, &n);
    for (size_t i = 0; i < p->nfiles; i++) {
        kp_publish_file *f = &p->files[i];
        if (!f->fresh || f->data)
            continue;
        const kp_fileblocks_entry *e = find_entry(entries, n, f->path);
        if (!e || e->deleted || e->len != f->size)
            return kp_err_set(err, KP_EINTERNAL, "the output parsed again differs at \"%s\"", f->path);
        f->data = e->data;
    }
    return KP_OK;
}

/* Writes the app's files under apps/{id}/v{n}/, copying carried-over ones,
 * with one kp_blob_put_many (the file store makes them durable with one
 * group sync); the fresh files' contents come from the output parsed again
 * (fill_fresh); fills each file's sha256 on the way (a copy's from its bytes
 * when the previous manifest had none). */
static kp_status store_files(kp_publish *p, kp_err *err)
{
    kp_blob *blob = p->blob;
    const char *id = p->row.project_id;
    size_t n = p->nfiles;
    kp_blob_item *items = calloc(n ? n : 1, sizeof *items);
    kp_buf *copies = calloc(n ? n : 1, sizeof *copies); /* carried-over files' bytes */
    char **keys = calloc(n ? n : 1, sizeof *keys);
    kp_fileblocks *reparsed = NULL; /* holds the fresh files' contents until they are stored */
    kp_status rc = items && copies && keys ? KP_OK : kp_err_set(err, KP_ENOMEM, "out of memory");
    if (rc == KP_OK)
        rc = fill_fresh(p, &reparsed, err);
    for (size_t i = 0; i < n && rc == KP_OK; i++) {
        kp_publish_file *f = &p->files[i];
        if (!(keys[i] = file_key(id, p->row.n, f->path))) {
            rc = kp_err_set(err, KP_ENOMEM, "out of memory");
            break;
        }
        items[i] = (kp_blob_item){keys[i], f->data, f->size, kp_gen_content_type(f->path)};
        if (f->fresh) {
            kp_publish_sha256_hex(f->data, f->size, f->sha256);
            continue;
        }
        char from[KP_BLOB_KEY_MAX + 1];
        snprintf(from, sizeof from, "apps/%s/v%lld/%s", id, (long long)p->prev_n, f->path);
        rc = blob->ops->get(blob, from, &copies[i], NULL, err);
        if (rc == KP_OK && !f->sha256[0])
            kp_publish_sha256_hex(copies[i].data, copies[i].len, f->sha256);
        items[i].data = copies[i].data ? copies[i].data : "";
        items[i].len = copies[i].len;
    }
    if (rc == KP_OK)
        rc = kp_blob_put_many(blob, items, n, err);
    for (size_t i = 0; keys && copies && i < n; i++) {
        free(keys[i]);
        kp_buf_free(&copies[i]);
    }
    free(keys);
    free(copies);
    free(items);
    for (size_t i = 0; i < n; i++) /* they pointed into reparsed */
        if (reparsed && p->files[i].fresh)
            p->files[i].data = NULL;
    kp_fileblocks_free(reparsed);
    return rc;
}

static json_t *manifest_json(const kp_publish *p)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < p->nfiles; i++)
        json_array_append_new(arr, json_pack("{s:s,s:I,s:s,s:s}", "path", p->files[i].path, "size",
                                             (json_int_t)p->files[i].size, "content_type",
                                             kp_gen_content_type(p->files[i].path), "sha256", p->files[i].sha256));
    return arr;
}

char *kp_publish_append_event(const char *events, int64_t id, const char *event, const char *data_text)
{
    kp_buf b = KP_BUF_INIT;
    size_t len = events ? strlen(events) : 0;
    while (len > 0 && events[len - 1] != ']')
        len--;
    int rc = len > 0 ? kp_buf_append(&b, events, len - 1) : kp_buf_puts(&b, "[");
    rc |= kp_buf_printf(&b, "%s{\"id\":%lld,\"event\":\"%s\",\"data\":%s}]", len > 2 ? "," : "", (long long)id, event,
                        data_text);
    if (rc != 0) {
        kp_buf_free(&b);
        return NULL;
    }
    return kp_buf_steal(&b);
}

static void log_failure(const kp_publish *p, const char *what, const kp_err *err)
{
    kp_log_json(KP_LOG_ERROR, what,
                json_pack("{s:s,s:I,s:s}", "project_id", p->row.project_id, "version", (json_int_t)p->row.n, "error",
                          err->msg));
}

/* The done event's data; the balance is read after the reservation took its part. */
static json_t *done_json(kp_publish *p, kp_store *s, json_t *manifest)
{
    kp_err err = {0};
    kp_balance bal = {0};
    char url[1024];
    s->ops->balance_get(s, p->user_id, &bal, &err); /* a reservation does not change it again */
    kp_gen_version_url(p->cfg, p->row.project_id, p->row.n, url, sizeof url);
    return json_pack("{s:I,s:s,s:O,s:{s:I,s:I},s:s,s:I}", "version", (json_int_t)p->row.n, "url", url, "files",
                     manifest, "usage", "input_tokens", (json_int_t)p->row.input_tokens, "output_tokens",
                     (json_int_t)p->row.output_tokens, "message", p->row.message ? p->row.message : "", "credits_left",
                     (json_int_t)(bal.daily + bal.monthly));
}

void kp_publish_store(kp_publish *p, kp_store *s)
{
    kp_err err = {0};
    if (store_files(p, &err) != KP_OK) {
        log_failure(p, "cannot store an app's files", &err);
        p->fail_code = "storage_error";
        p->fail_message = "the app's files could not be stored";
        return;
    }
    json_t *manifest = manifest_json(p);
    p->done = done_json(p, s, manifest);
    char *done_text = p->done ? json_dumps(p->done, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    p->row.status = KP_VER_READY;
    p->row.files_json = json_dumps(manifest, JSON_COMPACT | JSON_PRESERVE_ORDER);
    p->row.events_json = done_text ? kp_publish_append_event(p->events, p->next_event_id, "done", done_text) : NULL;
    json_decref(manifest);
    free(done_text);
    /* the ready row, the commit and settled: one transaction */
    kp_status rc = (p->row.files_json && p->row.events_json)
                       ? kp_credits_end_ready(s, p->row.reservation_id, &p->row, &err)
                       : kp_err_set(&err, KP_ENOMEM, "out of memory");
    if (rc != KP_OK) {
        log_failure(p, "cannot publish a version", &err);
        p->fail_code = "internal_error";
        p->fail_message = "the version could not be saved";
        return;
    }
    p->committed = p->row.reservation_id[0] != 0;
}

void kp_publish_clear(kp_publish *p)
{
    kp_version_clear(&p->row);
    free(p->events);
    free(p->files);
    json_decref(p->prev);
    json_decref(p->done);
    memset(p, 0, sizeof *p);
}
