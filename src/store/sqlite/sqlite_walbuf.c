/*
 * sqlite_walbuf.c - the batch connection's VFS (see sqlite_walbuf.h): the
 * default VFS with a gathering WAL file.
 *
 * Invariants:
 *   - gathered bytes are one contiguous run of the WAL file (off, len): a
 *     write that continues it is appended, one inside it (SQLite rewriting a
 *     frame of the same transaction) overwrites it in place, any other first
 *     writes the run out;
 *   - the run is written out before anything that could see the file: a
 *     read, its size, a truncation, a file control, a sync, the close. SQLite
 *     syncs the WAL at the end of every commit with synchronous=FULL (which
 *     the batch connection uses), before it publishes the commit's frames in
 *     the WAL index: so no other connection reads a frame from the file
 *     before it is there. With synchronous=NORMAL, SQLite does not sync at
 *     commit: the VFS is not for that;
 *   - only the WAL file is wrapped; the database file is the default VFS's
 *     own (locks and shared memory as every other connection's).
 */
#include "store/sqlite/sqlite_walbuf.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BUF_FIRST (1 << 20) /* bytes gathered before the buffer grows */
#define BUF_MAX (16 << 20)  /* beyond, the run is written out */
/* bytes per write of the default VFS: the unix VFS writes at most 128 KiB - 1
 * per call (os_unix.c seekAndWriteFd) and takes a short write for a full disk */
#define WRITE_MAX ((size_t)64 << 10)

typedef struct walbuf_file {
    sqlite3_file base;  /* pMethods: walbuf_methods */
    sqlite3_file *real; /* the default VFS's file, in the bytes after this struct */
    unsigned char *buf; /* the gathered run: len bytes of the file from off */
    size_t len;
    size_t cap;
    sqlite3_int64 off;
    int defer_sync; /* sq_walbuf_defer_sync */
} walbuf_file;

/* the real file after the struct, aligned as SQLite aligns its files */
#define REAL_OFFSET ((sizeof(walbuf_file) + 7) & ~(size_t)7)

static sqlite3_vfs *real_vfs;
static sqlite3_vfs walbuf_vfs;
static int register_rc = SQLITE_ERROR;

/* Writes the gathered run out, WRITE_MAX bytes per call. */
static int run_write(walbuf_file *f)
{
    int rc = SQLITE_OK;
    for (size_t done = 0; done < f->len && rc == SQLITE_OK; done += WRITE_MAX) {
        size_t n = f->len - done < WRITE_MAX ? f->len - done : WRITE_MAX;
        rc = f->real->pMethods->xWrite(f->real, f->buf + done, (int)n, f->off + (sqlite3_int64)done);
    }
    f->len = 0;
    return rc;
}

/* Room for amt more bytes in the buffer; 0 when it would pass BUF_MAX. */
static int buf_room(walbuf_file *f, size_t amt)
{
    if (f->len + amt <= f->cap)
        return 1;
    size_t cap = f->cap ? f->cap : BUF_FIRST;
    while (cap < f->len + amt && cap < BUF_MAX)
        cap *= 2;
    if (cap < f->len + amt)
        return 0;
    unsigned char *grown = realloc(f->buf, cap);
    if (!grown)
        return 0;
    f->buf = grown;
    f->cap = cap;
    return 1;
}

static int wb_write(sqlite3_file *file, const void *data, int amt, sqlite3_int64 off)
{
    walbuf_file *f = (walbuf_file *)file;
    sqlite3_int64 end = f->off + (sqlite3_int64)f->len;
    if (f->len && off >= f->off && off + amt <= end) { /* a frame of this run written again */
        memcpy(f->buf + (off - f->off), data, (size_t)amt);
        return SQLITE_OK;
    }
    if (f->len && off != end) {
        int rc = run_write(f);
        if (rc != SQLITE_OK)
            return rc;
    }
    if (!buf_room(f, (size_t)amt)) {
        int rc = run_write(f);
        if (rc != SQLITE_OK || !buf_room(f, (size_t)amt))
            return rc != SQLITE_OK ? rc : f->real->pMethods->xWrite(f->real, data, amt, off);
    }
    if (f->len == 0)
        f->off = off;
    memcpy(f->buf + f->len, data, (size_t)amt);
    f->len += (size_t)amt;
    return SQLITE_OK;
}

static int wb_read(sqlite3_file *file, void *data, int amt, sqlite3_int64 off)
{
    walbuf_file *f = (walbuf_file *)file;
    int rc = run_write(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xRead(f->real, data, amt, off);
}

static int wb_truncate(sqlite3_file *file, sqlite3_int64 size)
{
    walbuf_file *f = (walbuf_file *)file;
    int rc = run_write(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int wb_sync(sqlite3_file *file, int flags)
{
    walbuf_file *f = (walbuf_file *)file;
    int rc = run_write(f);
    if (rc != SQLITE_OK || f->defer_sync)
        return rc;
    return f->real->pMethods->xSync(f->real, flags);
}

static int wb_file_size(sqlite3_file *file, sqlite3_int64 *size)
{
    walbuf_file *f = (walbuf_file *)file;
    int rc = run_write(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int wb_lock(sqlite3_file *file, int level)
{
    walbuf_file *f = (walbuf_file *)file;
    return f->real->pMethods->xLock(f->real, level);
}

static int wb_unlock(sqlite3_file *file, int level)
{
    walbuf_file *f = (walbuf_file *)file;
    return f->real->pMethods->xUnlock(f->real, level);
}

static int wb_check_reserved(sqlite3_file *file, int *out)
{
    walbuf_file *f = (walbuf_file *)file;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int wb_file_control(sqlite3_file *file, int op, void *arg)
{
    walbuf_file *f = (walbuf_file *)file;
    int rc = run_write(f);
    return rc != SQLITE_OK ? rc : f->real->pMethods->xFileControl(f->real, op, arg);
}

static int wb_sector_size(sqlite3_file *file)
{
    walbuf_file *f = (walbuf_file *)file;
    return f->real->pMethods->xSectorSize(f->real);
}

static int wb_device(sqlite3_file *file)
{
    walbuf_file *f = (walbuf_file *)file;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}

static int wb_close(sqlite3_file *file)
{
    walbuf_file *f = (walbuf_file *)file;
    int rc = run_write(f);
    int closed = f->real->pMethods->xClose(f->real);
    free(f->buf);
    f->buf = NULL;
    f->cap = 0;
    return rc != SQLITE_OK ? rc : closed;
}

/* Version 1: a WAL file has no shared memory and is never memory-mapped. */
static const sqlite3_io_methods walbuf_methods = {
    .iVersion = 1,
    .xClose = wb_close,
    .xRead = wb_read,
    .xWrite = wb_write,
    .xTruncate = wb_truncate,
    .xSync = wb_sync,
    .xFileSize = wb_file_size,
    .xLock = wb_lock,
    .xUnlock = wb_unlock,
    .xCheckReservedLock = wb_check_reserved,
    .xFileControl = wb_file_control,
    .xSectorSize = wb_sector_size,
    .xDeviceCharacteristics = wb_device,
};

static int wb_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags, int *out_flags)
{
    (void)vfs;
    if (!(flags & SQLITE_OPEN_WAL))
        return real_vfs->xOpen(real_vfs, name, file, flags, out_flags);
    walbuf_file *f = (walbuf_file *)file;
    memset(f, 0, sizeof *f);
    f->real = (sqlite3_file *)((char *)file + REAL_OFFSET);
    int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        if (f->real->pMethods)
            f->real->pMethods->xClose(f->real);
        return rc; /* base.pMethods stays NULL: SQLite does not close it */
    }
    f->base.pMethods = &walbuf_methods;
    return SQLITE_OK;
}

static void register_once(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    if (!real_vfs)
        return;
    walbuf_vfs = *real_vfs; /* its other methods, as they are */
    walbuf_vfs.pNext = NULL;
    walbuf_vfs.zName = SQ_WALBUF_VFS;
    walbuf_vfs.szOsFile = (int)REAL_OFFSET + real_vfs->szOsFile;
    walbuf_vfs.xOpen = wb_open;
    register_rc = sqlite3_vfs_register(&walbuf_vfs, 0);
}

int sq_walbuf_register(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_once);
    return register_rc;
}

int sq_walbuf_defer_sync(sqlite3 *db, int on)
{
    sqlite3_file *file = NULL;
    if (sqlite3_file_control(db, "main", SQLITE_FCNTL_JOURNAL_POINTER, &file) != SQLITE_OK || !file ||
        file->pMethods != &walbuf_methods)
        return 0;
    ((walbuf_file *)file)->defer_sync = on;
    return 1;
}
