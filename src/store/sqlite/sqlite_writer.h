/*
 * sqlite_writer.h - the writers of one database file within a process: a
 * write gate and a queue for group commit (sqlite_writer.c). Internal to
 * src/store/sqlite/.
 *
 * Every handle (kp_sqlite_open) on the same file (same device and inode)
 * shares one sq_writer. A thread takes the gate before BEGIN IMMEDIATE and
 * gives it back after COMMIT or ROLLBACK, so the process's writers queue
 * here, woken in turn, instead of sleeping in SQLite's busy handler (which
 * retries with sleeps of up to 100 ms); other processes still meet SQLite's
 * lock and its busy timeout.
 *
 * Group commit: a write that can share a transaction (sq_run_balance_write)
 * is queued as an sq_write_req. The first thread to find the gate free leads:
 * it takes the gate, yields the CPU once (so that threads about to queue a
 * write join this batch), then takes up to SQ_WRITER_BATCH requests (its own
 * and those queued before it, oldest first), runs them in one transaction on
 * the batch connection (below), gives the gate back, syncs the WAL (outside
 * the gate, so that the next batch runs meanwhile), then marks them done.
 * The others sleep until their request is done, or until they can lead the
 * next batch.
 *
 * The writer also keeps the file's batch connection (sq_writer_conn): the
 * leaders run every batch on it, so its page cache stays warm from one batch
 * to the next, where the leaders' own connections would each find theirs out
 * of date after the other threads' commits.
 */
#ifndef KP_SQLITE_WRITER_H
#define KP_SQLITE_WRITER_H

#include <stdatomic.h>

#include "core/err.h"

#define SQ_WRITER_BATCH 64 /* requests in one transaction at most */

typedef struct sq_writer sq_writer;

/* A queued write. The submitter owns it (on its stack) and fills job; the
 * leader that runs it fills what job points to. */
typedef struct sq_write_req {
    void *job;
    int taken; /* in a leader's batch: only that leader marks it done */
    /* What its submitter sleeps on (a futex word): SQ_WRITE_DONE is set once
     * it is done, the rest counts the times the gate was freed while it was
     * first in the queue. */
    atomic_uint turn;
    struct sq_write_req *next;
} sq_write_req;

#define SQ_WRITE_DONE 0x80000000u

/* The writer of the database file at path (which exists), shared with every
 * other handle on it; release with sq_writer_release. KP_EDB when the file
 * cannot be stat'ed, KP_ENOMEM. */
kp_status sq_writer_acquire(const char *path, sq_writer **out, kp_err *err);
void sq_writer_release(sq_writer *w);

/* The gate: waits until no other thread of the process writes this file. */
void sq_writer_enter(sq_writer *w);
void sq_writer_leave(sq_writer *w);

/* Queues r (r->job set; the rest is initialised here): a write for some
 * leader's next batch. r may go once sq_writer_next returned 0. */
void sq_writer_queue(sq_writer *w, sq_write_req *r);

/* Waits for queued r. Returns 0 once r is done (some leader ran it), or 1
 * when the caller now holds the gate and must run *batch (a list through
 * next, oldest first; r may or may not be in it), call sq_writer_leave then
 * sq_writer_done, and call this again. */
int sq_writer_next(sq_writer *w, sq_write_req *r, sq_write_req **batch);

/* The batch connection's slot, only while holding the gate: NULL until a
 * leader stores one there; close_conn (set once, with it) closes it when the
 * last handle releases the writer. */
void **sq_writer_conn(sq_writer *w);
void sq_writer_set_conn_close(sq_writer *w, void (*close_conn)(void *conn));

/* Durability of a batch's commit, outside the gate (the next batch runs
 * meanwhile): runs sync_fn(ctx) (an fdatasync of the WAL file, which covers
 * every frame written before it began). Returns 0, or -1 when it failed or
 * any sync of this file failed before: what a failed fdatasync lost is
 * unknown, so no later write is reported durable (a restart recovers from
 * the WAL). */
int sq_writer_sync(sq_writer *w, int (*sync_fn)(void *ctx), void *ctx);

/* One checkpointer at a time, outside the gate: 1 when the caller may run
 * one now (then sq_writer_checkpoint_end), 0 when another thread is. */
int sq_writer_checkpoint_begin(sq_writer *w);
void sq_writer_checkpoint_end(sq_writer *w);

/* Marks every request of batch done and wakes its submitter, after the
 * leader gave the gate back (sq_writer_leave) and made the batch durable: the
 * next batch runs while this one's WAL frames reach the disk. Takes no lock:
 * each request's memory is left as soon as it is marked done (its submitter
 * may return at once), and the wake-up names only its address. */
void sq_writer_done(sq_writer *w, sq_write_req *batch);

#endif
