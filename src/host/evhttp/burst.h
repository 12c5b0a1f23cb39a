/*
 * burst.h - sends a loop turn's responses, one buffer per socket, in one
 * system call: an io_uring (Debian's liburing) where the kernel allows one,
 * each socket's send with MSG_DONTWAIT so that none waits.
 *
 * Why one call: on a machine whose cores the clients share (a proxy, a load
 * generator), each send wakes a client, and a woken client takes the core
 * from the worker at its next return to user space. Sent one call each, a
 * turn's responses hand the core over once per response; sent in one call,
 * about once per turn (respond.c has the figures).
 *
 * Where io_uring is not available (kernel.io_uring_disabled, a seccomp
 * filter, a kernel before 5.18), kp_burst_new returns NULL and the caller
 * writes each buffer itself.
 *
 * Threads: a kp_burst belongs to one thread (its worker's).
 * Ownership: the caller owns the buffers and sockets; kp_burst_send drains
 * nothing (the caller drains what was sent).
 */
#ifndef KP_BURST_H
#define KP_BURST_H

#include <stddef.h>
#include <sys/types.h>

#include <event2/buffer.h>

typedef struct kp_burst kp_burst;

typedef struct kp_burst_item {
    struct evbuffer *out; /* memory only (no file segments): what to send */
    int fd;               /* a non-blocking stream socket */
    ssize_t sent;         /* out: bytes sent (from out's start), or -errno (-EAGAIN: the socket took none) */
} kp_burst_item;

/* A ring for up to `depth` sends a call; NULL when io_uring is not available. */
kp_burst *kp_burst_new(unsigned depth);
void kp_burst_free(kp_burst *b);

/* Sends the start of each items[i].out on items[i].fd, as much as the socket
 * takes at once (at most KP_BURST_MAX_IOV of out's chains), in one system
 * call per `depth` items, and sets items[i].sent. Never waits for a socket.
 * Returns 0, or -1 when the ring failed: items still marked -EAGAIN were not
 * sent, the caller writes them itself, and b is only good for kp_burst_free. */
int kp_burst_send(kp_burst *b, kp_burst_item *items, size_t n);

#define KP_BURST_MAX_IOV 16
#endif
