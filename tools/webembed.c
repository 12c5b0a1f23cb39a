/*
 * webembed.c - the build tool that compiles the dashboard (src/web/) into
 * the koumpa binary (api/dashboard.h).
 *
 *   webembed ROOT FILE...   > web_files.c
 *
 * Writes a C file defining kp_web_files[]: for each FILE (a path under ROOT)
 * its path relative to ROOT, its Content-Type (kp_gen_content_type, the same
 * table the apps origin uses), its bytes, a gzip copy made here with zlib
 * (best compression, mtime 0 so builds are reproducible; left out when it is
 * not smaller), and strong ETags: the BLAKE2b-128 of the bytes in hex, the
 * gzip copy's with "-gz" added. The Makefile runs it whenever a file under
 * src/web/ changes, appears or goes; the output lives in the build directory
 * and is never committed.
 *
 * A file whose type is not known (application/octet-stream) or whose path
 * holds characters other than [A-Za-z0-9._/-] stops the build: a browser
 * would get it wrong, or the path could not be requested.
 */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "core/buf.h"
#include "gen/generator.h"

#define HASH_BYTES 16
#define BYTES_PER_LINE 16

static int read_file(const char *name, kp_buf *out)
{
    FILE *f = fopen(name, "rb");
    char chunk[65536];
    size_t n;
    if (!f)
        return -1;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (kp_buf_append(out, chunk, n) != 0) {
            fclose(f);
            return -1;
        }
    int failed = ferror(f);
    fclose(f);
    return failed ? -1 : 0;
}

/* The gzip member of data (no name, mtime 0), or -1. */
static int gzip_of(const kp_buf *data, kp_buf *out)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    uLong bound = deflateBound(&z, (uLong)data->len);
    int rc = kp_buf_reserve(out, (size_t)bound + 1);
    if (rc == 0) {
        z.next_in = (Bytef *)(data->data ? data->data : "");
        z.avail_in = (uInt)data->len;
        z.next_out = (Bytef *)out->data;
        z.avail_out = (uInt)bound;
        rc = deflate(&z, Z_FINISH) == Z_STREAM_END ? 0 : -1;
        out->len = z.total_out;
    }
    deflateEnd(&z);
    return rc;
}

static void etag_of(const kp_buf *data, char hex[2 * HASH_BYTES + 1])
{
    unsigned char hash[HASH_BYTES];
    crypto_generichash(hash, sizeof hash, (const unsigned char *)(data->data ? data->data : ""), data->len, NULL, 0);
    sodium_bin2hex(hex, 2 * HASH_BYTES + 1, hash, sizeof hash);
}

static int path_ok(const char *p)
{
    if (!*p || *p == '/' || *p == '.')
        return 0;
    for (; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' ||
              *p == '_' || *p == '-' || *p == '/') ||
            (p[0] == '/' && p[1] == '.'))
            return 0;
    return 1;
}

/* static const unsigned char name[] = {bytes..., 0}; (the 0 keeps an empty array legal) */
static void write_array(FILE *out, const char *name, size_t i, const kp_buf *b)
{
    fprintf(out, "static const unsigned char %s%zu[] = {", name, i);
    for (size_t j = 0; j < b->len; j++)
        fprintf(out, "%s0x%02x,", j % BYTES_PER_LINE ? "" : "\n    ", (unsigned char)b->data[j]);
    fprintf(out, "\n    0};\n");
}

typedef struct entry {
    const char *path;
    const char *type;
    size_t len, gzip_len; /* gzip_len 0: no gzip copy */
    char etag[2 * HASH_BYTES + 1];
} entry;

static int embed_one(FILE *out, size_t i, const char *root, const char *file, entry *e)
{
    kp_buf data = KP_BUF_INIT, gz = KP_BUF_INIT;
    size_t rlen = strlen(root);
    int rc = -1;
    e->path = (strncmp(file, root, rlen) == 0 && file[rlen] == '/') ? file + rlen + 1 : file;
    e->type = kp_gen_content_type(e->path);
    if (!path_ok(e->path))
        fprintf(stderr, "webembed: %s: a path of [A-Za-z0-9._/-] without hidden parts is required\n", file);
    else if (strcmp(e->type, "application/octet-stream") == 0)
        fprintf(stderr, "webembed: %s: unknown file type (gen/generator.c content_types)\n", file);
    else if (read_file(file, &data) != 0)
        fprintf(stderr, "webembed: %s: %s\n", file, strerror(errno));
    else if (gzip_of(&data, &gz) != 0)
        fprintf(stderr, "webembed: %s: cannot compress\n", file);
    else
        rc = 0;
    if (rc == 0) {
        etag_of(&data, e->etag);
        e->len = data.len;
        e->gzip_len = gz.len < data.len ? gz.len : 0;
        write_array(out, "data", i, &data);
        if (e->gzip_len)
            write_array(out, "gzip", i, &gz);
    }
    kp_buf_free(&data);
    kp_buf_free(&gz);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: webembed ROOT FILE... > web_files.c\n");
        return 2;
    }
    if (sodium_init() < 0)
        return 1;
    size_t n = (size_t)(argc - 2);
    entry *entries = calloc(n + 1, sizeof *entries);
    if (!entries)
        return 1;
    FILE *out = stdout;
    fprintf(out, "/* Generated by tools/webembed.c from %s/: do not edit (api/dashboard.h). */\n", argv[1]);
    fprintf(out, "#include \"api/dashboard.h\"\n\n");
    for (size_t i = 0; i < n; i++)
        if (embed_one(out, i, argv[1], argv[i + 2], &entries[i]) != 0) {
            free(entries);
            return 1;
        }
    fprintf(out, "\nconst kp_web_file kp_web_files[] = {\n");
    for (size_t i = 0; i < n; i++) {
        const entry *e = &entries[i];
        fprintf(out, "    {\"%s\", \"%s\", data%zu, %zu, ", e->path, e->type, i, e->len);
        if (e->gzip_len)
            fprintf(out, "gzip%zu, %zu, ", i, e->gzip_len);
        else
            fprintf(out, "NULL, 0, ");
        fprintf(out, "\"\\\"%s\\\"\", \"\\\"%s-gz\\\"\"},\n", e->etag, e->etag);
    }
    fprintf(out, "    {NULL, NULL, NULL, 0, NULL, 0, NULL, NULL},\n};\n");
    free(entries);
    return fflush(out) == 0 && !ferror(out) ? 0 : 1;
}
