/*
 * burst.c - see burst.h. Each send is an IORING_OP_SENDMSG with
 * MSG_DONTWAIT: io_uring then completes it while the submitting call runs
 * (with the bytes sent, or -EAGAIN when the socket's buffer is full) instead
 * of waiting for the socket, so io_uring_submit_and_wait returns at once.
 * The ring is made with IORING_SETUP_SUBMIT_ALL (Linux 5.18): a call either
 * takes every queued send or none, so no send is ever left queued with
 * pointers into buffers that change.
 */
#include "host/evhttp/burst.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <liburing.h>

struct kp_burst {
    struct io_uring ring;
    unsigned depth;
    struct msghdr *msgs; /* depth of them */
    struct iovec *iovs;  /* KP_BURST_MAX_IOV for each msg */
};

kp_burst *kp_burst_new(unsigned depth)
{
    kp_burst *b = calloc(1, sizeof *b);
    if (!b || depth == 0)
        goto fail;
    b->depth = depth;
    b->msgs = calloc(depth, sizeof *b->msgs);
    b->iovs = calloc((size_t)depth * KP_BURST_MAX_IOV, sizeof *b->iovs);
    if (!b->msgs || !b->iovs)
        goto fail;
    if (io_uring_queue_init(depth, &b->ring, IORING_SETUP_SUBMIT_ALL) != 0)
        goto fail;
    return b;

fail:
    if (b) {
        free(b->msgs);
        free(b->iovs);
        free(b);
    }
    return NULL;
}

void kp_burst_free(kp_burst *b)
{
    if (!b)
        return;
    io_uring_queue_exit(&b->ring);
    free(b->msgs);
    free(b->iovs);
    free(b);
}

/* Queues a send of the start of item->out as the slot-th send of the call;
 * returns 1 if queued, 0 if there was nothing to send. */
static int queue_send(kp_burst *b, kp_burst_item *item, unsigned slot)
{
    struct iovec *iov = b->iovs + (size_t)slot * KP_BURST_MAX_IOV;
    int nvec = evbuffer_peek(item->out, -1, NULL, iov, KP_BURST_MAX_IOV);
    if (nvec <= 0) {
        item->sent = 0;
        return 0;
    }
    struct msghdr *m = &b->msgs[slot];
    memset(m, 0, sizeof *m);
    m->msg_iov = iov;
    m->msg_iovlen = (size_t)(nvec < KP_BURST_MAX_IOV ? nvec : KP_BURST_MAX_IOV);
    struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring); /* never NULL: at most depth a call */
    io_uring_prep_sendmsg(sqe, item->fd, m, MSG_DONTWAIT | MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, slot);
    return 1;
}

/* Takes the completions of the call: each sets its item's `sent`. */
static void reap(kp_burst *b, kp_burst_item *items, size_t k)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&b->ring, head, cqe)
    {
        uint64_t slot = io_uring_cqe_get_data64(cqe);
        if (slot < k)
            items[slot].sent = cqe->res;
        seen++;
    }
    io_uring_cq_advance(&b->ring, seen);
}

/* One system call for k <= depth items. */
static int send_some(kp_burst *b, kp_burst_item *items, size_t k)
{
    unsigned queued = 0;
    for (size_t i = 0; i < k; i++)
        queued += (unsigned)queue_send(b, &items[i], (unsigned)i);
    if (queued == 0)
        return 0;
    int rc;
    do /* an interrupted wait is waited again: the sends were taken already */
        rc = io_uring_submit_and_wait(&b->ring, queued);
    while (rc == -EINTR);
    reap(b, items, k);
    return rc < 0 ? -1 : 0;
}

int kp_burst_send(kp_burst *b, kp_burst_item *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        items[i].sent = -EAGAIN;
    for (size_t from = 0; from < n; from += b->depth) {
        size_t k = n - from < b->depth ? n - from : b->depth;
        if (send_some(b, items + from, k) != 0)
            return -1;
    }
    return 0;
}
