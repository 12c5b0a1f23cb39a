/*
 * blob_fs.c - see blob_fs.h for the layout and guarantees.
 *
 * The handle holds the root path and the sync group, so it is safe to share
 * between threads; concurrency is the file system's (rename is atomic). A
 * deletion may remove a directory just as a put is about to create its
 * temporary file there; put then recreates the directory and tries again.
 *
 * Durability (group sync): a put writes its files, renames them into place
 * and makes its directories without syncing any of them, then asks for one
 * syncfs(2) of the store's file system that starts after its writes. Threads
 * that ask while a sync runs share the next one, so a burst of publishes pays
 * a sync per round, not one per file and directory (six per new version
 * before). syncfs writes back every dirty file and directory of that file
 * system, the store's and any other's: the price is a data directory shared
 * with heavy unrelated writers. A failed sync fails its puts and every later
 * one (what the failed writeback lost is unknown), as the SQLite writer does.
 */
#include "blob/blob_fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOB_SUFFIX '~'
#define TMP_NAME "~tmp.XXXXXX"
#define DEFAULT_CT "application/octet-stream"
#define PUT_ATTEMPTS 50 /* a put whose directory a racing deletion keeps removing tries again */

typedef struct fs_blob {
    kp_blob base;
    char *root;
    int root_fd; /* the root directory, for syncfs */
    /* the sync group (sync_puts), under sync_mu */
    pthread_mutex_t sync_mu;
    pthread_cond_t sync_cv;
    uint64_t sync_started; /* rounds begun */
    uint64_t sync_done;    /* rounds ended */
    int syncing;           /* a round runs */
    int sync_errno;        /* sticky: a round failed with it */
} fs_blob;

static const char *root_of(kp_blob *b)
{
    return ((fs_blob *)b->impl)->root;
}

static kp_status io_error(kp_err *err, const char *what, const char *key, int e)
{
    if (e == ENAMETOOLONG)
        return kp_err_set(err, KP_EINVAL, "blob key \"%s\": a segment is too long for this store", key);
    return kp_err_set(err, KP_EIO, "blob store: %s \"%s\": %s", what, key, strerror(e));
}

static kp_status nomem(kp_err *err)
{
    return kp_err_set(err, KP_ENOMEM, "out of memory");
}

/* The file of a blob: root/key~. */
static int blob_path(kp_blob *b, const char *key, kp_buf *out)
{
    kp_buf_reset(out);
    return kp_buf_printf(out, "%s/%s%c", root_of(b), key, BLOB_SUFFIX);
}

static int content_type_valid(const char *ct)
{
    size_t n = strlen(ct);
    if (n == 0 || n >= KP_BLOB_CT_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (ct[i] < 0x20 || ct[i] > 0x7E)
            return 0;
    return 1;
}

/* ---- directories ---- */

/* Creates every directory of path (a file path) below root. Not synced: the put's group sync makes
 * the new entries durable with its files. */
static int make_parents(const char *root, char *path)
{
    size_t skip = strlen(root) + 1;
    for (char *p = path + skip; (p = strchr(p, '/')) != NULL; p++) {
        *p = '\0';
        int rc = mkdir(path, 0700);
        int e = errno;
        *p = '/';
        if (rc != 0 && e != EEXIST) {
            errno = e;
            return -1;
        }
    }
    return 0;
}

/* Removes the directories of path (a file path) that are empty, deepest first, up to root. */
static void remove_empty_parents(const char *root, char *path)
{
    size_t keep = strlen(root);
    char *slash;
    while ((slash = strrchr(path, '/')) != NULL && (size_t)(slash - path) > keep) {
        *slash = '\0';
        if (rmdir(path) != 0)
            break;
    }
}

/* ---- put ---- */

static int write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Creates a temporary file next to path; its name goes to tmp. Its directories are made only when missing:
 * most puts go to a directory that exists (a version's second file), and a mkdir per level costs a syscall. */
static int create_temp(const char *root, char *path, kp_buf *tmp)
{
    char *slash = strrchr(path, '/');
    for (int attempt = 1; attempt <= PUT_ATTEMPTS; attempt++) {
        kp_buf_reset(tmp);
        if (kp_buf_append(tmp, path, (size_t)(slash - path) + 1) != 0 || kp_buf_puts(tmp, TMP_NAME) != 0) {
            errno = ENOMEM;
            return -1;
        }
        int fd = mkstemp(tmp->data);
        if (fd >= 0 || errno != ENOENT) /* ENOENT: a directory is missing (new, or a deletion removed it) */
            return fd;
        if (attempt == PUT_ATTEMPTS)
            return -1;
        if (make_parents(root, path) != 0 && errno != ENOENT) /* ENOENT: a deletion took a parent meanwhile */
            return -1;
    }
    return -1;
}

static int write_blob_file(int fd, const char *ct, const void *data, size_t len)
{
    if (write_all(fd, ct, strlen(ct)) != 0 || write_all(fd, "\n", 1) != 0 || write_all(fd, data, len) != 0)
        return -1;
    return 0;
}

/* Writes the blob to a temporary file and renames it into place; path gets the blob's path. Nothing
 * is synced yet: the caller does that (sync_puts, one for all its puts). */
static kp_status put_unsynced(kp_blob *b, const char *key, const void *data, size_t len, const char *content_type,
                              kp_buf *path, kp_err *err)
{
    kp_buf tmp = KP_BUF_INIT;
    kp_status st = KP_OK;
    int fd = -1;
    const char *ct = content_type ? content_type : DEFAULT_CT;

    kp_buf_reset(path);
    if (!kp_blob_key_valid(key))
        return kp_err_set(err, KP_EINVAL, "invalid blob key");
    if (!content_type_valid(ct))
        return kp_err_set(err, KP_EINVAL, "invalid content type for blob \"%s\"", key);
    if (blob_path(b, key, path) != 0) {
        st = nomem(err);
        goto cleanup;
    }
    if ((fd = create_temp(root_of(b), path->data, &tmp)) < 0) {
        st = io_error(err, "cannot create a file for", key, errno);
        kp_buf_reset(&tmp); /* no file to remove */
        goto cleanup;
    }
    if (write_blob_file(fd, ct, data, len) != 0) {
        st = io_error(err, "cannot write", key, errno);
        goto cleanup;
    }
    int rc = close(fd);
    fd = -1;
    if (rc != 0 || rename(tmp.data, path->data) != 0) {
        st = io_error(err, "cannot store", key, errno);
        goto cleanup;
    }
    kp_buf_reset(&tmp); /* renamed: nothing to remove */
cleanup:
    if (fd >= 0)
        close(fd);
    if (tmp.len)
        unlink(tmp.data);
    kp_buf_free(&tmp);
    return st;
}

/* Makes what the caller wrote before the call durable: a syncfs of the store's file system that
 * begins after the call, shared with the threads that ask meanwhile (see the top of this file).
 * 0, or -1 with errno when that round, or an earlier one, failed. */
static int sync_puts(fs_blob *fb)
{
    pthread_mutex_lock(&fb->sync_mu);
    uint64_t need = fb->sync_started + 1; /* a running round may have begun before the caller's writes */
    while (fb->sync_done < need && !fb->sync_errno) {
        if (fb->syncing) {
            pthread_cond_wait(&fb->sync_cv, &fb->sync_mu);
            continue;
        }
        fb->syncing = 1;
        uint64_t round = ++fb->sync_started;
        pthread_mutex_unlock(&fb->sync_mu);
        int rc = syncfs(fb->root_fd);
        int e = errno;
        pthread_mutex_lock(&fb->sync_mu);
        fb->syncing = 0;
        fb->sync_done = round;
        if (rc != 0)
            fb->sync_errno = e ? e : EIO;
        pthread_cond_broadcast(&fb->sync_cv);
    }
    int e = fb->sync_errno;
    pthread_mutex_unlock(&fb->sync_mu);
    if (e) {
        errno = e;
        return -1;
    }
    return 0;
}

/* The puts, then one group sync for all of them. The first failure stops the puts; the blobs stored
 * before it are still synced. */
static kp_status fs_put_many(kp_blob *b, const kp_blob_item *items, size_t n, kp_err *err)
{
    kp_buf path = KP_BUF_INIT;
    kp_status st = KP_OK;
    size_t done = 0;
    for (; done < n && st == KP_OK; done++)
        st = put_unsynced(b, items[done].key, items[done].data, items[done].len, items[done].content_type, &path, err);
    kp_buf_free(&path);
    if (st != KP_OK)
        done--; /* the failed one left no file */
    if (done > 0 && sync_puts(b->impl) != 0 && st == KP_OK)
        st = io_error(err, "cannot sync", items[0].key, errno);
    return st;
}

static kp_status fs_put(kp_blob *b, const char *key, const void *data, size_t len, const char *content_type,
                        kp_err *err)
{
    kp_blob_item item = {.key = key, .data = data, .len = len, .content_type = content_type};
    return fs_put_many(b, &item, 1, err);
}

/* ---- get ---- */

static int read_all(int fd, kp_buf *out)
{
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        if (kp_buf_append(out, chunk, (size_t)n) != 0) {
            errno = ENOMEM;
            return -1;
        }
    }
}

/* Splits the file read into out: the content type line goes to ct, out keeps the bytes. */
static kp_status split_header(kp_buf *out, char ct[KP_BLOB_CT_MAX], const char *key, kp_err *err)
{
    const char *nl = out->len ? memchr(out->data, '\n', out->len < KP_BLOB_CT_MAX ? out->len : KP_BLOB_CT_MAX) : NULL;
    if (!nl)
        return kp_err_set(err, KP_EIO, "blob store: \"%s\" is not a blob file", key);
    size_t n = (size_t)(nl - out->data);
    if (ct) {
        memcpy(ct, out->data, n);
        ct[n] = '\0';
    }
    kp_buf_consume(out, n + 1);
    return KP_OK;
}

/* Opens the blob's file for reading into *fd (-1 on failure). */
static kp_status open_blob(kp_blob *b, const char *key, int *fd, kp_err *err)
{
    kp_buf path = KP_BUF_INIT;
    kp_status st = KP_OK;
    *fd = -1;
    if (!kp_blob_key_valid(key))
        return kp_err_set(err, KP_EINVAL, "invalid blob key");
    if (blob_path(b, key, &path) != 0)
        return nomem(err);
    if ((*fd = open(path.data, O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            st = kp_err_set(err, KP_ENOTFOUND, "no blob \"%s\"", key);
        else
            st = io_error(err, "cannot open", key, errno);
    }
    kp_buf_free(&path);
    return st;
}

static kp_status fs_get(kp_blob *b, const char *key, kp_buf *out, char content_type[KP_BLOB_CT_MAX], kp_err *err)
{
    int fd = -1;
    kp_buf_reset(out);
    kp_status st = open_blob(b, key, &fd, err);
    if (st != KP_OK)
        return st;
    if (read_all(fd, out) != 0)
        st = errno == ENOMEM ? nomem(err) : io_error(err, "cannot read", key, errno);
    else
        st = split_header(out, content_type, key, err);
    close(fd);
    if (st != KP_OK)
        kp_buf_reset(out);
    return st;
}

/* The offset of the bytes in a blob file: just past its content type line. */
static int data_offset(int fd, int64_t *offset)
{
    char head[KP_BLOB_CT_MAX];
    ssize_t n;
    do
        n = pread(fd, head, sizeof head, 0);
    while (n < 0 && errno == EINTR);
    const char *nl = n > 0 ? memchr(head, '\n', (size_t)n) : NULL;
    if (!nl)
        return -1;
    *offset = (int64_t)(nl - head) + 1;
    return 0;
}

static kp_status fs_open_read(kp_blob *b, const char *key, int *fd_out, int64_t *offset, int64_t *len, kp_err *err)
{
    struct stat sb;
    int fd = -1;
    *fd_out = -1;
    kp_status st = open_blob(b, key, &fd, err);
    if (st != KP_OK)
        return st;
    if (fstat(fd, &sb) != 0)
        st = io_error(err, "cannot stat", key, errno);
    else if (data_offset(fd, offset) != 0)
        st = kp_err_set(err, KP_EIO, "blob store: \"%s\" is not a blob file", key);
    if (st != KP_OK) {
        close(fd);
        return st;
    }
    *len = (int64_t)sb.st_size - *offset;
    *fd_out = fd;
    return KP_OK;
}

/* ---- delete ---- */

static kp_status fs_delete(kp_blob *b, const char *key, kp_err *err)
{
    kp_buf path = KP_BUF_INIT;
    kp_status st = KP_OK;
    if (!kp_blob_key_valid(key))
        return kp_err_set(err, KP_EINVAL, "invalid blob key");
    if (blob_path(b, key, &path) != 0)
        return nomem(err);
    if (unlink(path.data) == 0)
        remove_empty_parents(root_of(b), path.data);
    else if (errno != ENOENT && errno != ENOTDIR)
        st = io_error(err, "cannot delete", key, errno);
    kp_buf_free(&path);
    return st;
}

/* ---- list ---- */

typedef struct key_list {
    char **keys;
    size_t n, cap;
} key_list;

static void key_list_free(key_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->keys[i]);
    free(l->keys);
}

static int key_list_add(key_list *l, const char *key, size_t len)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **k = realloc(l->keys, cap * sizeof *k);
        if (!k)
            return -1;
        l->keys = k;
        l->cap = cap;
    }
    if (!(l->keys[l->n] = strndup(key, len)))
        return -1;
    l->n++;
    return 0;
}

static int compare_keys(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Blob files are "{segment}~" with no other '~'; directories have no '~' at all. */
static int is_blob_name(const char *name, size_t len)
{
    return len > 1 && name[len - 1] == BLOB_SUFFIX && memchr(name, BLOB_SUFFIX, len - 1) == NULL;
}

static int is_dir_name(const char *name)
{
    return strchr(name, BLOB_SUFFIX) == NULL && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

typedef struct walk {
    const char *prefix;
    size_t prefix_len;
    kp_buf path; /* root/ + key so far */
    size_t root_len;
    key_list found;
} walk;

/* Could keys below the key-so-far (ending with '/', at path[root_len..]) start with the prefix? */
static int may_match(const walk *w, size_t key_len)
{
    const char *key = w->path.data + w->root_len;
    size_t n = key_len < w->prefix_len ? key_len : w->prefix_len;
    return memcmp(key, w->prefix, n) == 0;
}

static int walk_dir(walk *w)
{
    DIR *d = opendir(w->path.data);
    if (!d)
        return errno == ENOENT || errno == ENOTDIR ? 0 : -1;
    size_t base = w->path.len;
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        struct stat sb;
        w->path.len = base;
        if (kp_buf_append(&w->path, de->d_name, len) != 0) {
            errno = ENOMEM;
            rc = -1;
            break;
        }
        if (lstat(w->path.data, &sb) != 0)
            continue; /* gone meanwhile */
        size_t key_len = w->path.len - w->root_len;
        if (S_ISREG(sb.st_mode) && is_blob_name(de->d_name, len)) {
            if (key_len - 1 >= w->prefix_len && may_match(w, key_len - 1) &&
                key_list_add(&w->found, w->path.data + w->root_len, key_len - 1) != 0) {
                errno = ENOMEM;
                rc = -1;
            }
        } else if (S_ISDIR(sb.st_mode) && is_dir_name(de->d_name)) {
            if (kp_buf_append(&w->path, "/", 1) != 0) {
                errno = ENOMEM;
                rc = -1;
            } else if (may_match(w, key_len + 1)) {
                rc = walk_dir(w);
            }
        }
    }
    closedir(d);
    w->path.len = base;
    w->path.data[base] = '\0';
    return rc;
}

/* Every key starting with prefix, sorted. */
static kp_status collect_keys(kp_blob *b, const char *prefix, key_list *out, kp_err *err)
{
    walk w = {prefix, strlen(prefix), KP_BUF_INIT, 0, {NULL, 0, 0}};
    kp_status st = KP_OK;
    const char *slash = strrchr(prefix, '/');
    size_t dir_len = slash ? (size_t)(slash - prefix) + 1 : 0; /* start in the prefix's deepest directory */
    if (kp_buf_printf(&w.path, "%s/", root_of(b)) != 0) {
        st = nomem(err);
        goto cleanup;
    }
    w.root_len = w.path.len;
    if (kp_buf_append(&w.path, prefix, dir_len) != 0) {
        st = nomem(err);
        goto cleanup;
    }
    if (walk_dir(&w) != 0) {
        st = errno == ENOMEM ? nomem(err) : io_error(err, "cannot list", prefix, errno);
        goto cleanup;
    }
    if (w.found.n > 1)
        qsort(w.found.keys, w.found.n, sizeof *w.found.keys, compare_keys);
    *out = w.found;
    w.found = (key_list){NULL, 0, 0};
cleanup:
    key_list_free(&w.found);
    kp_buf_free(&w.path);
    return st;
}

static kp_status fs_list(kp_blob *b, const char *prefix, kp_blob_list_fn fn, void *ud, kp_err *err)
{
    key_list keys = {NULL, 0, 0};
    if (!kp_blob_prefix_valid(prefix))
        return kp_err_set(err, KP_EINVAL, "invalid blob key prefix");
    kp_status st = collect_keys(b, prefix, &keys, err);
    for (size_t i = 0; st == KP_OK && i < keys.n; i++)
        st = fn(ud, keys.keys[i], err);
    key_list_free(&keys);
    return st;
}

static kp_status fs_delete_prefix(kp_blob *b, const char *prefix, kp_err *err)
{
    key_list keys = {NULL, 0, 0};
    if (!kp_blob_prefix_valid(prefix) || !*prefix)
        return kp_err_set(err, KP_EINVAL, "invalid blob key prefix");
    kp_status st = collect_keys(b, prefix, &keys, err);
    for (size_t i = 0; st == KP_OK && i < keys.n; i++)
        st = fs_delete(b, keys.keys[i], err);
    key_list_free(&keys);
    return st;
}

/* ---- handle ---- */

static void fs_close(kp_blob *b)
{
    if (!b)
        return;
    fs_blob *fb = b->impl;
    close(fb->root_fd);
    pthread_cond_destroy(&fb->sync_cv);
    pthread_mutex_destroy(&fb->sync_mu);
    free(fb->root);
    free(fb);
}

unsigned long kp_blob_fs_syncs(kp_blob *b)
{
    fs_blob *fb = b->impl;
    pthread_mutex_lock(&fb->sync_mu);
    unsigned long n = (unsigned long)fb->sync_done;
    pthread_mutex_unlock(&fb->sync_mu);
    return n;
}

static const kp_blob_ops FS_OPS = {fs_put,   fs_get,       fs_delete, fs_delete_prefix, fs_list,
                                   fs_close, fs_open_read, NULL,      fs_put_many};

/* mkdir -p root. */
static int make_root(const char *root)
{
    char *p = strdup(root);
    if (!p)
        return -1;
    int rc = 0;
    for (char *s = p + 1; rc == 0; s++) {
        char *slash = strchr(s, '/');
        if (slash)
            *slash = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            rc = -1;
        if (!slash)
            break;
        *slash = '/';
        s = slash;
    }
    free(p);
    return rc;
}

kp_status kp_blob_fs_open(const char *root, kp_blob **out, kp_err *err)
{
    struct stat sb;
    if (!root || !*root)
        return kp_err_set(err, KP_EINVAL, "blob store: no root directory");
    if (make_root(root) != 0 || stat(root, &sb) != 0)
        return kp_err_set(err, KP_EIO, "blob store: cannot create \"%s\": %s", root, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return kp_err_set(err, KP_EIO, "blob store: \"%s\" is not a directory", root);
    fs_blob *fb = calloc(1, sizeof *fb);
    if (!fb || !(fb->root = strdup(root))) {
        free(fb);
        return nomem(err);
    }
    if ((fb->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        int e = errno;
        free(fb->root);
        free(fb);
        return kp_err_set(err, KP_EIO, "blob store: cannot open \"%s\": %s", root, strerror(e));
    }
    pthread_mutex_init(&fb->sync_mu, NULL);
    pthread_cond_init(&fb->sync_cv, NULL);
    size_t n = strlen(fb->root);
    while (n > 1 && fb->root[n - 1] == '/') /* "data/blobs/" -> "data/blobs" */
        fb->root[--n] = '\0';
    fb->base.ops = &FS_OPS;
    fb->base.impl = fb;
    *out = &fb->base;
    return KP_OK;
}
