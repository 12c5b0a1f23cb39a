/*
 * bench/spends.c - durable credit spends per second on SQLite (issue 14,
 * goal 4: 20,000 a second with 64 concurrent clients, exactly once).
 *
 * A spend is what a generation pays: kp_credits_reserve (1 credit, into a
 * reservation with a unique, time-ordered id from kp_id_new, as the
 * server's) then kp_credits_commit, through the domain (domain/credits.c)
 * and the SQLite store, as a request does. The bench migrates a fresh
 * database, makes SPENDS_USERS users (default 1,000) each granted plenty of
 * monthly credits, then runs SPENDS_CLIENTS threads (default 64) for
 * SPENDS_SECONDS (default 10) or SPENDS_COUNT spends in all; each thread
 * opens its own store handle, as each worker thread of `koumpa serve` does,
 * and spends on users picked at random.
 *
 * Then it checks exactly-once: the clients replay concurrently a share of
 * their spends (the same reservation ids, as a retrying client would), which
 * must change nothing; every user's balance equals the sum of their ledger
 * and their grant minus the spends made on them; the ledger holds one row
 * per grant and per spend; every reservation is committed. It prints
 * spends/s beside the goal, p50/p99/max latency of a spend, the synchronous
 * mode and the 1-minute load average; it exits 1 when a check fails, never
 * on a figure.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/id.h"
#include "core/log.h"
#include "domain/credits.h"
#include "store/sqlite/migrations.h"
#include "store/sqlite/sqlite_store.h"

#define GOAL_PER_S 20000
#define GRANT_MONTHLY 1000000000LL
#define REPLAY_EVERY 50 /* a client replays one spend in REPLAY_EVERY */

typedef struct bench {
    char db_path[512];
    int clients;
    int users;
    double seconds;
    long count; /* spends in all, 0: run for `seconds` */
    char (*user_ids)[KP_ID_MAX];
    _Atomic int64_t *spent;  /* spends per user */
    _Atomic long next_spend; /* with count: spends handed out */
    _Atomic int stop;
    _Atomic int failed;
} bench;

typedef struct client {
    bench *b;
    int index;
    long done;
    double *lat_ms;             /* per spend, grown as needed */
    char (*res_ids)[KP_ID_MAX]; /* per spend, its reservation's id (kp_id_new, as the server's) */
    size_t cap;
    int replay_failed;
} client;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return dflt;
    char *end = NULL;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || n < 0) {
        fprintf(stderr, "bench: %s must be a number\n", name);
        exit(2);
    }
    return n;
}

static void load_average(char out[16])
{
    snprintf(out, 16, "?");
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f)
        return;
    if (fscanf(f, "%15s", out) != 1)
        snprintf(out, 16, "?");
    fclose(f);
}

/* The user of client c's spend i: derived, so a replay and the checks find
 * it again (its reservation id is kept, cls[c].res_ids[i]). */
static int spend_user(const bench *b, int c, long i)
{
    uint64_t x = ((uint64_t)c << 40) ^ (uint64_t)i;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (int)(x % (uint64_t)b->users);
}

/* One spend of client cl: reserve 1 credit, then commit. */
static kp_status spend(kp_store *s, const client *cl, long i, kp_err *err)
{
    const char *res = cl->res_ids[i];
    kp_status rc =
        kp_credits_reserve(s, cl->b->user_ids[spend_user(cl->b, cl->index, i)], res, 1, "generation", NULL, err);
    if (rc == KP_OK)
        rc = kp_credits_commit(s, res, err);
    return rc;
}

/* Room for spend cl->done's latency and reservation id. */
static int spend_room(client *cl)
{
    if ((size_t)cl->done < cl->cap)
        return 0;
    size_t cap = cl->cap ? cl->cap * 2 : 4096;
    double *lat = realloc(cl->lat_ms, cap * sizeof *lat);
    if (!lat)
        return -1;
    cl->lat_ms = lat;
    char(*ids)[KP_ID_MAX] = realloc(cl->res_ids, cap * sizeof *ids);
    if (!ids)
        return -1;
    cl->res_ids = ids;
    cl->cap = cap;
    return 0;
}

static int take_spend(client *cl)
{
    bench *b = cl->b;
    if (atomic_load(&b->stop) || atomic_load(&b->failed))
        return 0;
    if (b->count == 0)
        return 1;
    return atomic_fetch_add(&b->next_spend, 1) < b->count;
}

static void *client_run(void *arg)
{
    client *cl = arg;
    bench *b = cl->b;
    kp_store *s = NULL;
    kp_err err = {0};
    if (kp_sqlite_open(b->db_path, &s, &err) != KP_OK) {
        fprintf(stderr, "bench: client %d: %s\n", cl->index, err.msg);
        atomic_store(&b->failed, 1);
        return NULL;
    }
    while (take_spend(cl)) {
        if (spend_room(cl) != 0) {
            atomic_store(&b->failed, 1);
            break;
        }
        kp_id_new("res", cl->res_ids[cl->done], KP_ID_MAX);
        double t0 = now_s();
        if (spend(s, cl, cl->done, &err) != KP_OK) {
            fprintf(stderr, "bench: client %d, spend %ld: %s\n", cl->index, cl->done, err.msg);
            atomic_store(&b->failed, 1);
            break;
        }
        atomic_fetch_add(&b->spent[spend_user(b, cl->index, cl->done)], 1);
        cl->lat_ms[cl->done] = (now_s() - t0) * 1000.0;
        cl->done++;
    }
    s->ops->close(s);
    return NULL;
}

/* Replays one spend in REPLAY_EVERY: the same reservation again must be a no-op. */
static void *client_replay(void *arg)
{
    client *cl = arg;
    kp_store *s = NULL;
    kp_err err = {0};
    if (kp_sqlite_open(cl->b->db_path, &s, &err) != KP_OK) {
        cl->replay_failed = 1;
        return NULL;
    }
    for (long i = 0; i < cl->done; i += REPLAY_EVERY) {
        if (spend(s, cl, i, &err) != KP_OK) {
            fprintf(stderr, "bench: replay %d/%ld: %s\n", cl->index, i, err.msg);
            cl->replay_failed = 1;
            break;
        }
    }
    s->ops->close(s);
    return NULL;
}

static int run_threads(client *cls, int n, void *(*fn)(void *))
{
    pthread_t *t = calloc((size_t)n, sizeof *t);
    int started = 0, rc = 0;
    if (!t)
        return -1;
    for (; started < n; started++)
        if (pthread_create(&t[started], NULL, fn, &cls[started]) != 0) {
            rc = -1;
            break;
        }
    for (int i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    free(t);
    return rc;
}

static kp_status make_users(bench *b, kp_err *err)
{
    kp_store *s = NULL;
    kp_status rc = kp_sqlite_open(b->db_path, &s, err);
    if (rc != KP_OK)
        return rc;
    for (int i = 0; i < b->users && rc == KP_OK; i++) {
        kp_user u = {.plan_id = "free", .created_at = (int64_t)time(NULL), .email_verified = 1};
        kp_id_new("usr", u.id, sizeof u.id);
        snprintf(u.email, sizeof u.email, "spender%d@example.com", i);
        memcpy(b->user_ids[i], u.id, KP_ID_MAX);
        kp_credit_change c = {.user_id = u.id,
                              .delta_monthly = GRANT_MONTHLY,
                              .reason = "admin_grant",
                              .idem_key = u.id,
                              .expected_version = -1};
        rc = s->ops->user_create_credited(s, &u, &c, err);
    }
    s->ops->close(s);
    return rc;
}

/* Every user's balance: its ledger's sum, and the grant minus the spends made
 * on them. *rows receives the ledger's rows over all users. */
static int check_users(bench *b, long *rows)
{
    kp_store *s = NULL;
    kp_err err = {0};
    int bad = 0;
    *rows = 0;
    if (kp_sqlite_open(b->db_path, &s, &err) != KP_OK) {
        fprintf(stderr, "bench: %s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < b->users && bad < 10; i++) {
        kp_balance bal, sum;
        kp_ledger_entry *e = NULL;
        size_t n = 0;
        const char *id = b->user_ids[i];
        if (s->ops->balance_get(s, id, &bal, &err) != KP_OK || s->ops->ledger_sum(s, id, &sum, &err) != KP_OK ||
            s->ops->ledger_list(s, id, 0, SIZE_MAX, &e, &n, &err) != KP_OK) {
            fprintf(stderr, "bench: reading %s: %s\n", id, err.msg);
            bad++;
            continue;
        }
        free(e);
        *rows += (long)n;
        int64_t expect = GRANT_MONTHLY - atomic_load(&b->spent[i]);
        if (bal.daily != sum.daily || bal.monthly != sum.monthly || bal.monthly != expect || bal.daily != 0 ||
            (int64_t)n != 1 + atomic_load(&b->spent[i])) {
            fprintf(stderr,
                    "bench: %s: balance %" PRId64 "+%" PRId64 ", ledger sum %" PRId64 "+%" PRId64 ", %zu rows, "
                    "expected monthly %" PRId64 "\n",
                    id, bal.daily, bal.monthly, sum.daily, sum.monthly, n, expect);
            bad++;
        }
    }
    s->ops->close(s);
    return bad;
}

/* Every spend's reservation is committed (one in REPLAY_EVERY: a sample when there are many). */
static int check_reservations(bench *b, const client *cls)
{
    kp_store *s = NULL;
    kp_err err = {0};
    int bad = 0;
    if (kp_sqlite_open(b->db_path, &s, &err) != KP_OK)
        return 1;
    for (int c = 0; c < b->clients && bad < 10; c++)
        for (long i = 0; i < cls[c].done && bad < 10; i++) {
            const char *id = cls[c].res_ids[i];
            kp_reservation r;
            if (s->ops->reservation_get(s, id, &r, &err) != KP_OK || r.state != KP_RES_COMMITTED ||
                strcmp(r.user_id, b->user_ids[spend_user(b, c, i)]) != 0 || r.monthly != 1) {
                fprintf(stderr, "bench: reservation %s not committed as made\n", id);
                bad++;
            }
        }
    s->ops->close(s);
    return bad;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_figures(const bench *b, const client *cls, long total, double wall, const char *load_before)
{
    double *all = malloc((size_t)(total ? total : 1) * sizeof *all);
    size_t k = 0;
    char load_after[16];
    load_average(load_after);
    for (int c = 0; all && c < b->clients; c++)
        for (long i = 0; i < cls[c].done; i++)
            all[k++] = cls[c].lat_ms[i];
    double rate = wall > 0 ? (double)total / wall : 0;
    printf("spends (reserve + commit), %d clients, %d users, WAL, synchronous=%s for the credit writes "
           "(group commit, WAL fdatasync'ed after the gate before each is reported), %s for the others\n",
           b->clients, b->users, KP_SQLITE_SYNCHRONOUS_CREDITS, KP_SQLITE_SYNCHRONOUS);
    printf("  %ld spends in %.2f s: %.0f spends/s (goal %d/s: %s)\n", total, wall, rate, GOAL_PER_S,
           rate >= GOAL_PER_S ? "met" : "not met");
    if (all && k) {
        qsort(all, k, sizeof *all, cmp_double);
        printf("  latency per spend: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", all[k / 2], all[(k * 99) / 100],
               all[k - 1]);
    }
    printf("  load average (1 min): %s before, %s after\n", load_before, load_after);
    free(all);
}

static int setup(bench *b, char *dir, size_t dir_cap)
{
    b->clients = (int)env_long("SPENDS_CLIENTS", 64);
    b->users = (int)env_long("SPENDS_USERS", 1000);
    b->seconds = (double)env_long("SPENDS_SECONDS", 10);
    b->count = env_long("SPENDS_COUNT", 0);
    if (b->clients < 1 || b->users < 1 || (b->seconds <= 0 && b->count == 0)) {
        fprintf(stderr, "bench: SPENDS_CLIENTS, SPENDS_USERS and SPENDS_SECONDS or SPENDS_COUNT must be > 0\n");
        return 2;
    }
    snprintf(dir, dir_cap, "/tmp/koumpa-spends-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("bench: mkdtemp");
        return 2;
    }
    snprintf(b->db_path, sizeof b->db_path, "%s/koumpa.db", dir);
    b->user_ids = calloc((size_t)b->users, sizeof *b->user_ids);
    b->spent = calloc((size_t)b->users, sizeof *b->spent);
    return b->user_ids && b->spent ? 0 : 2;
}

static void remove_dir(const char *dir)
{
    static const char *const files[] = {"koumpa.db", "koumpa.db-wal", "koumpa.db-shm"};
    char path[600];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

/* The timed run's clock: stops the clients after b->seconds (or when they all failed). */
static void *stop_after(void *arg)
{
    bench *b = arg;
    double end = now_s() + b->seconds;
    while (!atomic_load(&b->stop) && now_s() < end) {
        struct timespec tick = {0, 10 * 1000 * 1000};
        nanosleep(&tick, NULL);
    }
    atomic_store(&b->stop, 1);
    return NULL;
}

static int run(bench *b, client *cls)
{
    kp_err err = {0};
    char load_before[16];
    if (kp_sqlite_migrate(b->db_path, NULL, &err) != KP_OK || make_users(b, &err) != KP_OK) {
        fprintf(stderr, "bench: set-up: %s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < b->clients; i++)
        cls[i] = (client){.b = b, .index = i};
    load_average(load_before);
    double t0 = now_s();
    pthread_t timer;
    int timed = b->count == 0;
    if (timed && pthread_create(&timer, NULL, stop_after, b) != 0)
        return 1;
    int started = run_threads(cls, b->clients, client_run);
    atomic_store(&b->stop, 1);
    if (timed)
        pthread_join(timer, NULL);
    if (started != 0)
        return 1;
    double wall = now_s() - t0;
    long total = 0;
    for (int i = 0; i < b->clients; i++)
        total += cls[i].done;
    if (atomic_load(&b->failed))
        return 1;
    print_figures(b, cls, total, wall, load_before);

    if (run_threads(cls, b->clients, client_replay) != 0)
        return 1;
    long rows = 0, replays = 0;
    for (int i = 0; i < b->clients; i++)
        replays += (cls[i].done + REPLAY_EVERY - 1) / REPLAY_EVERY;
    int bad = check_users(b, &rows) + check_reservations(b, cls);
    for (int i = 0; i < b->clients; i++)
        bad += cls[i].replay_failed;
    if (rows != b->users + total) {
        fprintf(stderr, "bench: %ld ledger rows, expected %ld (a grant per user, a row per spend)\n", rows,
                b->users + total);
        bad++;
    }
    printf("  exactly once: %s (%ld ledger rows = %d grants + %ld spends; %ld replays changed nothing; "
           "every balance = its ledger's sum)\n",
           bad ? "FAILED" : "ok", rows, b->users, total, replays);
    return bad ? 1 : 0;
}

int main(void)
{
    bench b = {0};
    char dir[64];
    int rc = setup(&b, dir, sizeof dir);
    if (rc != 0)
        return rc;
    kp_log_set_level(KP_LOG_WARN);
    client *cls = calloc((size_t)b.clients, sizeof *cls);
    rc = cls ? run(&b, cls) : 1;
    for (int i = 0; cls && i < b.clients; i++) {
        free(cls[i].lat_ms);
        free(cls[i].res_ids);
    }
    free(cls);
    free(b.user_ids);
    free(b.spent);
    remove_dir(dir);
    return rc;
}
