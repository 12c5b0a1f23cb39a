/*
 * store_contract.c - the store contract suite (store.h), run on every
 * backend: the same checks against SQLite and against DynamoDB (moto behind
 * the verifying front, driven by tests/integration/store-contract.test.mjs).
 *
 *   store_contract sqlite PATH   CHECK
 *   store_contract dynamodb PREFIX CHECK
 *
 * CHECK is one of:
 *   migrate   create the schema / table and seed the plans (twice: idempotent)
 *   plans     ping, seeded plans ordered by price, plan_put created/replaced, plan_get
 *   users     create, get by id/email/sub, unique email and sub, set admin/plan/verified
 *   verify    verification_create drops earlier unused tokens, consume once, not expired, marks verified
 *   credits   user_create_credited, account_get (no subscription), credits_apply (idempotency, CAS, never negative,
 *             reservation transitions), ledger_list paging, ledger_sum == balance; credits_decide reads the
 *             reservation and balance for its rule and writes what the rule says only
 *   projects  project_create/get/list (newest first, the cursor), version_create's conflicts,
 *             version_get/list/set_settled, version_finish once, delete refused while generating
 *   events    events_append idempotent per id (a retried batch, whole or in part, keeps what was stored),
 *             more than 100 at once; events_append_many over versions, idempotent, nothing on an invalid batch;
 * events_list after an id with a limit; events_last_id bonus     users_bonus_page in 3 segments of pages of 2 walks
 * every user once, as read; credits_apply_many gives each change its outcome (applied, duplicate key, overdraft, no
 * user); bonus_page_grant walks and grants what its rule says, each user's outcome (applied with its ledger row,
 * duplicate key, overdraft, stale version), and again: every key used billing   billing_apply: customer link +
 * subscription + plan + credit in one write; a duplicate event, a stale subscription version (CAS), a customer id of
 * another user, an unknown plan change nothing; the same invoice in two events credits once; account_get shows the
 * linked subscription and a later event's change to it recovery  versions_generating_count follows
 * project_create/version_finish; versions_expired lists generating versions whose lease ran out, oldest first, up to
 * the limit; versions_unsettled lists ended versions until settled; reservations_orphaned lists reserved ones no
 * version names admit     admit within the limit, refused at it (KP_ERATE), short of credits (KP_ECREDITS), with a used
 *             key (KP_EDUPLICATE), on a project being deleted (KP_ENOTFOUND): nothing written; version_end
 *             commits or refunds once with its events, a second end (recovery racing) is KP_ECONFLICT and
 *             changes nothing; its events keep what a batch stored, and 120 of them are stored; follow-ups;
 *             leases_renew renews only the owner's running, unexpired leases; lease_transfer hands such a
 *             lease over once, only from its owner, and recovery sees its new end; version_request_cancel
 *             marks only a generating version, idempotent, and only its owner's renewal returns the mark
 *   admit_race 15 threads admit (8 charged, 7 free) for one user allowed 4 at a time: exactly 4, each
 *             charged admission charged once
 *   race      200 threads spend 1 credit each from 10 at once: exactly 10 succeed; 20 threads
 *             create users with one e-mail: exactly 1 succeeds
 *   missing   prints the first store op the backend lacks ("" when complete)
 *   tables    (dynamodb) prints the table's one definition, as "definition" (for the Terraform's check)
 * Prints one JSON line {"check", "ok", "failures": [...], plus figures}; exit 0 when ok. DynamoDB
 * figures include the AWS requests each checked operation sent (the request budget).
 */
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "store/dynamodb/ddb_store.h"
#include "store/dynamodb/ddb_tables.h"
#include "store/sqlite/sqlite_store.h"

static const char *g_backend;
static const char *g_where;
static json_t *g_failures;
static json_t *g_figures;
static unsigned g_run; /* makes ids unique per run (a DynamoDB table outlives a run) */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_array_append_new(g_failures, json_string(msg));
}

#define EXPECT(cond, ...)                                                                                              \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            fail(__VA_ARGS__);                                                                                         \
    } while (0)

static int is_ddb(void)
{
    return strcmp(g_backend, "dynamodb") == 0;
}

static kp_store *open_store(void)
{
    kp_store *s = NULL;
    kp_err err = {0};
    kp_status rc = is_ddb() ? kp_ddb_store_open(g_where, &s, &err) : kp_sqlite_open(g_where, &s, &err);
    if (rc != KP_OK) {
        fail("open: %s", err.msg);
        return NULL;
    }
    return s;
}

static unsigned long requests(kp_store *s)
{
    return is_ddb() ? kp_ddb_store_requests(s) : 0;
}

static void figure(const char *name, json_int_t v)
{
    json_object_set_new(g_figures, name, json_integer(v));
}

static void make_id(char *out, size_t cap, const char *prefix, int i)
{
    snprintf(out, cap, "%s_%08x%04x%04d", prefix, g_run, (unsigned)(i & 0xffff), i % 10000);
}

static void make_user(kp_user *u, int i, const char *tag)
{
    memset(u, 0, sizeof *u);
    make_id(u->id, sizeof u->id, "usr", i);
    snprintf(u->email, sizeof u->email, "%s-%08x-%d@example.com", tag, g_run, i);
    snprintf(u->password_hash, sizeof u->password_hash, "$argon2id$fake");
    snprintf(u->plan_id, sizeof u->plan_id, "free");
    u->created_at = (int64_t)time(NULL);
}

static void check_migrate(void)
{
    kp_err err = {0};
    for (int i = 0; i < 2; i++) {
        int n = 0;
        kp_status rc = is_ddb() ? kp_ddb_store_migrate(g_where, &n, &err) : kp_sqlite_migrate(g_where, &n, &err);
        EXPECT(rc == KP_OK, "migrate #%d: %s", i + 1, err.msg);
        if (i == 1)
            EXPECT(n == 0, "second migrate did something (%d)", n);
    }
}

static void check_plans(kp_store *s)
{
    kp_err err = {0};
    kp_plan *plans = NULL, p = {0};
    size_t n = 0;
    int created = -1;
    EXPECT(s->ops->ping(s, &err) == KP_OK, "ping: %s", err.msg);
    kp_status rc = s->ops->plan_list(s, 1, &plans, &n, &err);
    EXPECT(rc == KP_OK && n >= 3, "plan_list: %s (%zu)", err.msg, n);
    for (size_t i = 1; rc == KP_OK && i < n; i++)
        EXPECT(plans[i - 1].price_cents <= plans[i].price_cents, "plans not ordered by price");
    EXPECT(rc == KP_OK && n >= 1 && strcmp(plans[0].id, "free") == 0 && plans[0].daily_bonus == 5,
           "first plan is not the seeded free plan");
    free(plans);

    kp_plan np = {.price_cents = 999999,
                  .currency = "EUR",
                  .monthly_credits = 7,
                  .daily_bonus = 2,
                  .max_concurrent_generations = 4,
                  .active = 0,
                  .updated_at = 1};
    snprintf(np.id, sizeof np.id, "c%08x", g_run);
    snprintf(np.name, sizeof np.name, "Contract");
    EXPECT(s->ops->plan_put(s, &np, &created, &err) == KP_OK && created == 1, "plan_put new: %s", err.msg);
    np.monthly_credits = 8;
    EXPECT(s->ops->plan_put(s, &np, &created, &err) == KP_OK && created == 0, "plan_put replace: %s", err.msg);
    EXPECT(s->ops->plan_get(s, np.id, &p, &err) == KP_OK && p.monthly_credits == 8 && !p.active &&
               p.max_concurrent_generations == 4 && strcmp(p.name, "Contract") == 0,
           "plan_get after put: %s", err.msg);
    EXPECT(s->ops->plan_list(s, 1, &plans, &n, &err) == KP_OK, "plan_list: %s", err.msg);
    for (size_t i = 0; i < n; i++)
        EXPECT(strcmp(plans[i].id, np.id) != 0, "inactive plan listed with active_only");
    free(plans);
    EXPECT(s->ops->plan_get(s, "no-such-plan", &p, &err) == KP_ENOTFOUND, "unknown plan not KP_ENOTFOUND");
}

static void check_users(kp_store *s)
{
    kp_err err = {0};
    kp_user u, x, got = {0};
    make_user(&u, 1, "users");
    snprintf(u.external_sub, sizeof u.external_sub, "https://idp.example|%08x", g_run);
    EXPECT(s->ops->user_create(s, &u, &err) == KP_OK, "user_create: %s", err.msg);
    EXPECT(s->ops->user_get(s, u.id, &got, &err) == KP_OK && strcmp(got.email, u.email) == 0 &&
               strcmp(got.plan_id, "free") == 0 && !got.is_admin,
           "user_get: %s", err.msg);
    unsigned long before = requests(s);
    EXPECT(s->ops->user_get_by_email(s, u.email, &got, &err) == KP_OK && strcmp(got.id, u.id) == 0,
           "user_get_by_email: %s", err.msg);
    figure("by_email_requests", (json_int_t)(requests(s) - before));
    EXPECT(s->ops->user_get_by_sub(s, u.external_sub, &got, &err) == KP_OK && strcmp(got.id, u.id) == 0,
           "user_get_by_sub: %s", err.msg);
    EXPECT(s->ops->user_get_by_email(s, "nobody@example.com", &got, &err) == KP_ENOTFOUND, "unknown email found");

    make_user(&x, 2, "users");
    snprintf(x.email, sizeof x.email, "%s", u.email);
    EXPECT(s->ops->user_create(s, &x, &err) == KP_ECONFLICT, "duplicate email not KP_ECONFLICT");
    EXPECT(s->ops->user_get(s, x.id, &got, &err) == KP_ENOTFOUND, "refused user was written");
    make_user(&x, 3, "users");
    snprintf(x.external_sub, sizeof x.external_sub, "%s", u.external_sub);
    EXPECT(s->ops->user_create(s, &x, &err) == KP_ECONFLICT, "duplicate external_sub not KP_ECONFLICT");
    EXPECT(s->ops->user_get_by_email(s, x.email, &got, &err) == KP_ENOTFOUND, "refused user's email claimed");

    EXPECT(s->ops->user_set_admin(s, u.id, 1, &err) == KP_OK, "user_set_admin: %s", err.msg);
    EXPECT(s->ops->user_set_plan(s, u.id, "pro", &err) == KP_OK, "user_set_plan: %s", err.msg);
    EXPECT(s->ops->user_set_plan(s, u.id, "no-such-plan", &err) == KP_ENOTFOUND, "unknown plan set");
    EXPECT(s->ops->user_set_plan(s, "usr_nobody", "pro", &err) == KP_ENOTFOUND, "unknown user's plan set");
    EXPECT(s->ops->user_set_email_verified(s, u.id, &err) == KP_OK, "user_set_email_verified: %s", err.msg);
    EXPECT(s->ops->user_set_admin(s, "usr_nobody", 1, &err) == KP_ENOTFOUND, "unknown user made admin");
    EXPECT(s->ops->user_get(s, u.id, &got, &err) == KP_OK && got.is_admin && got.email_verified &&
               strcmp(got.plan_id, "pro") == 0,
           "user after set_*: %s", err.msg);
}

static void check_verify(kp_store *s)
{
    kp_err err = {0};
    kp_user u, got = {0};
    kp_verification v = {0}, out = {0};
    char h1[64], h2[64], h3[64];
    make_user(&u, 30, "verify");
    EXPECT(s->ops->user_create(s, &u, &err) == KP_OK, "user_create: %s", err.msg);
    snprintf(h1, sizeof h1, "h1-%08x", g_run);
    snprintf(h2, sizeof h2, "h2-%08x", g_run);
    snprintf(h3, sizeof h3, "h3-%08x", g_run);
    snprintf(v.user_id, sizeof v.user_id, "%s", u.id);
    v.created_at = 1000;
    v.expires_at = 2000;
    EXPECT(s->ops->verification_create(s, h1, &v, &err) == KP_OK, "verification_create: %s", err.msg);
    EXPECT(s->ops->verification_create(s, h2, &v, &err) == KP_OK, "second verification_create: %s", err.msg);
    /* the second dropped the first, unused */
    EXPECT(s->ops->verification_consume(s, h1, 1500, &out, &err) == KP_ENOTFOUND, "dropped token still works");
    EXPECT(s->ops->verification_consume(s, h2, 2000, &out, &err) == KP_ECONFLICT, "expired token consumed");
    EXPECT(s->ops->user_get(s, u.id, &got, &err) == KP_OK && !got.email_verified, "verified by an expired token");
    EXPECT(s->ops->verification_consume(s, h2, 1999, &out, &err) == KP_OK && out.used_at == 0 &&
               out.expires_at == 2000 && strcmp(out.user_id, u.id) == 0,
           "verification_consume: %s", err.msg);
    EXPECT(s->ops->user_get(s, u.id, &got, &err) == KP_OK && got.email_verified, "address not verified");
    EXPECT(s->ops->verification_consume(s, h2, 1999, &out, &err) == KP_ECONFLICT && out.used_at == 1999,
           "token consumed twice");
    EXPECT(s->ops->verification_consume(s, "unknown", 1, &out, &err) == KP_ENOTFOUND, "unknown token found");
    snprintf(v.user_id, sizeof v.user_id, "usr_nobody");
    EXPECT(s->ops->verification_create(s, h3, &v, &err) == KP_ENOTFOUND, "token for an unknown user stored");
}

/* A project of user uid created at ms, with its first version (prompt "first"). */
static kp_status new_project(kp_store *s, kp_project *p, const char *uid, int i, int64_t ms, kp_err *err)
{
    kp_version v = {0};
    memset(p, 0, sizeof *p);
    make_id(p->id, sizeof p->id, "prj", i);
    snprintf(p->user_id, sizeof p->user_id, "%s", uid);
    snprintf(p->name, sizeof p->name, "project %d", i);
    p->created_at = ms;
    v.prompt = "first";
    v.lease_until = ms + 60000;
    snprintf(v.owner, sizeof v.owner, "inst_contract");
    return s->ops->project_create(s, p, &v, err);
}

static void check_projects(kp_store *s)
{
    kp_err err = {0};
    kp_user u;
    kp_project p[3], got = {0}, *list = NULL, *more = NULL;
    kp_version v = {0}, *vl = NULL;
    size_t n = 0, m = 0, nv = 0;
    make_user(&u, 40, "projects");
    EXPECT(s->ops->user_create(s, &u, &err) == KP_OK, "user_create: %s", err.msg);
    /* created at 1000, 2000, 2000: newest first, ties broken by id (descending) */
    for (int i = 0; i < 3; i++)
        EXPECT(new_project(s, &p[i], u.id, 41 + i, i ? 2000 : 1000, &err) == KP_OK, "project_create %d: %s", i,
               err.msg);
    EXPECT(new_project(s, &got, u.id, 41, 5000, &err) == KP_ECONFLICT, "duplicate project id not KP_ECONFLICT");
    EXPECT(s->ops->project_get(s, p[0].id, &got, &err) == KP_OK && got.latest_version == 1 && got.latest_ready == 0 &&
               got.created_at == 1000 && strcmp(got.name, "project 41") == 0 && strcmp(got.user_id, u.id) == 0,
           "project_get: %s", err.msg);
    EXPECT(s->ops->project_get(s, "prj_nobody", &got, &err) == KP_ENOTFOUND, "unknown project found");

    unsigned long before = requests(s);
    EXPECT(s->ops->project_list(s, u.id, 0, NULL, 2, &list, &n, &err) == KP_OK, "project_list: %s", err.msg);
    figure("project_list_requests", (json_int_t)(requests(s) - before));
    EXPECT(n == 2 && strcmp(list[0].id, p[2].id) == 0 && strcmp(list[1].id, p[1].id) == 0,
           "project_list page 1: %zu projects, not newest first", n);
    if (n == 2)
        EXPECT(s->ops->project_list(s, u.id, list[1].created_at, list[1].id, 2, &more, &m, &err) == KP_OK && m == 1 &&
                   strcmp(more[0].id, p[0].id) == 0,
               "project_list after the cursor: %zu projects", m);
    free(list);
    free(more);

    EXPECT(s->ops->version_get(s, p[0].id, 1, &v, &err) == KP_OK && v.status == KP_VER_GENERATING && v.n == 1 &&
               strcmp(v.prompt, "first") == 0 && strcmp(v.owner, "inst_contract") == 0 &&
               strcmp(v.events_json, "[]") == 0,
           "version_get: %s", err.msg);
    kp_version_clear(&v);
    EXPECT(s->ops->version_get(s, p[0].id, 2, &v, &err) == KP_ENOTFOUND, "version 2 found before it exists");

    kp_version next = {.n = 2, .prompt = "second"};
    snprintf(next.project_id, sizeof next.project_id, "%s", p[0].id);
    EXPECT(s->ops->version_create(s, &next, &err) == KP_ECONFLICT, "version_create while one generates");
    snprintf(next.project_id, sizeof next.project_id, "prj_nobody");
    EXPECT(s->ops->version_create(s, &next, &err) == KP_ENOTFOUND, "version of an unknown project created");

    /* deleting is refused while version 1 generates */
    EXPECT(s->ops->project_mark_deleting(s, p[0].id, 1, &err) == KP_ECONFLICT, "marked deleting while generating");
    EXPECT(s->ops->project_delete(s, p[0].id, &err) == KP_ECONFLICT, "deleted while generating");
    EXPECT(s->ops->project_delete(s, "prj_nobody", &err) == KP_ENOTFOUND, "unknown project deleted");

    kp_version done = {.n = 1, .status = KP_VER_READY, .message = "built", .files_json = "[]", .output_tokens = 7};
    snprintf(done.project_id, sizeof done.project_id, "%s", p[0].id);
    EXPECT(s->ops->version_finish(s, &done, &err) == KP_OK, "version_finish: %s", err.msg);
    EXPECT(s->ops->version_finish(s, &done, &err) == KP_ECONFLICT, "version finished twice");
    EXPECT(s->ops->version_get(s, p[0].id, 1, &v, &err) == KP_OK && v.status == KP_VER_READY &&
               strcmp(v.message, "built") == 0 && v.output_tokens == 7,
           "finished version: %s", err.msg);
    kp_version_clear(&v);
    EXPECT(s->ops->project_get(s, p[0].id, &got, &err) == KP_OK && got.latest_ready == 1, "latest_ready not 1");
    snprintf(next.project_id, sizeof next.project_id, "%s", p[0].id);
    next.n = 3;
    EXPECT(s->ops->version_create(s, &next, &err) == KP_ECONFLICT, "version 3 created after 1");
    next.n = 2;
    EXPECT(s->ops->version_create(s, &next, &err) == KP_OK, "version_create 2: %s", err.msg);
    EXPECT(s->ops->version_create(s, &next, &err) == KP_ECONFLICT, "version 2 created twice");
    EXPECT(s->ops->project_get(s, p[0].id, &got, &err) == KP_OK && got.latest_version == 2, "latest_version not 2");
    done.n = 2;
    done.status = KP_VER_FAILED;
    snprintf(done.error_code, sizeof done.error_code, "too_long");
    EXPECT(s->ops->version_finish(s, &done, &err) == KP_OK, "version_finish failed: %s", err.msg);
    EXPECT(s->ops->project_get(s, p[0].id, &got, &err) == KP_OK && got.latest_ready == 1,
           "latest_ready moved by a failure");

    EXPECT(s->ops->version_set_settled(s, p[0].id, 1, &err) == KP_OK, "version_set_settled: %s", err.msg);
    EXPECT(s->ops->version_set_settled(s, p[0].id, 9, &err) == KP_ENOTFOUND, "unknown version settled");
    EXPECT(s->ops->version_list(s, p[0].id, &vl, &nv, &err) == KP_OK && nv == 2 && vl[0].n == 1 && vl[0].settled &&
               vl[1].n == 2 && vl[1].status == KP_VER_FAILED && strcmp(vl[1].error_code, "too_long") == 0,
           "version_list: %s (%zu)", err.msg, nv);
    kp_version_free_array(vl, nv);

    /* the mark refuses new versions; cleared, then the project goes with its versions */
    EXPECT(s->ops->project_mark_deleting(s, p[0].id, 1, &err) == KP_OK, "project_mark_deleting: %s", err.msg);
    next.n = 3;
    EXPECT(s->ops->version_create(s, &next, &err) == KP_ENOTFOUND, "version of a project being deleted");
    EXPECT(s->ops->project_mark_deleting(s, p[0].id, 0, &err) == KP_OK, "mark cleared: %s", err.msg);
    EXPECT(s->ops->project_mark_deleting(s, "prj_nobody", 0, &err) == KP_ENOTFOUND, "unknown project marked");
    EXPECT(s->ops->project_delete(s, p[0].id, &err) == KP_OK, "project_delete: %s", err.msg);
    EXPECT(s->ops->project_get(s, p[0].id, &got, &err) == KP_ENOTFOUND, "deleted project found");
    EXPECT(s->ops->version_get(s, p[0].id, 2, &v, &err) == KP_ENOTFOUND, "deleted project's version found");
}

static kp_credit_change change(const char *uid, int64_t dd, int64_t dm, const char *idem)
{
    kp_credit_change c = {.user_id = uid,
                          .delta_daily = dd,
                          .delta_monthly = dm,
                          .reason = "contract",
                          .idem_key = idem,
                          .expected_version = -1};
    return c;
}

/* credits_decide's rule in the contract: reserves 1 daily credit, commits, refuses or does nothing; it
 * keeps what the store read. */
typedef enum decide_mode { DECIDE_RESERVE, DECIDE_COMMIT, DECIDE_REFUSE, DECIDE_NOTHING } decide_mode;

typedef struct decide_arg {
    decide_mode mode;
    const char *user_id;
    const char *res;
    char key[KP_IDEM_MAX];
    kp_credit_state seen;
} decide_arg;

static kp_status decide_rule(const kp_credit_state *st, void *arg, kp_credit_change *c, int *apply, kp_err *err)
{
    decide_arg *a = arg;
    a->seen = *st;
    if (a->mode == DECIDE_REFUSE)
        return kp_err_set(err, KP_ERATE, "refused by the rule");
    if (a->mode == DECIDE_NOTHING)
        return KP_OK;
    int reserve = a->mode == DECIDE_RESERVE;
    *c = change(reserve ? a->user_id : a->seen.res.user_id, reserve ? -1 : 0, 0, a->key);
    c->expected_version = reserve ? st->balance.version : -1;
    c->res_id = a->res;
    c->res_from = reserve ? KP_RES_NONE : KP_RES_RESERVED;
    c->res_to = reserve ? KP_RES_RESERVED : KP_RES_COMMITTED;
    c->res_daily = reserve ? 1 : 0;
    c->record_zero = 1;
    *apply = 1;
    return KP_OK;
}

/* credits_decide on a user holding (3, 2): reserves, a replay, commits through the reservation, a refusal
 * and nothing to do write what the rule says only; the rule sees what exists. */
static void check_credits_decide(kp_store *s, const char *uid)
{
    kp_err err = {0};
    kp_balance b = {0};
    kp_reservation r = {0};
    char res[KP_ID_MAX];
    make_id(res, sizeof res, "res", 11);
    decide_arg a = {.mode = DECIDE_RESERVE, .user_id = uid, .res = res};
    snprintf(a.key, sizeof a.key, "contract:%08x:decide:reserve", g_run);
    EXPECT(s->ops->credits_decide(s, uid, NULL, decide_rule, &a, &b, &err) == KP_OK && b.daily == 2 &&
               a.seen.balance_found && a.seen.balance.daily == 3 && !a.seen.res_found,
           "credits_decide reserve: %s", err.msg);
    EXPECT(s->ops->credits_decide(s, uid, NULL, decide_rule, &a, &b, &err) == KP_EDUPLICATE && b.daily == 2,
           "credits_decide replay not KP_EDUPLICATE: %s", err.msg);
    a.mode = DECIDE_COMMIT;
    snprintf(a.key, sizeof a.key, "contract:%08x:decide:commit", g_run);
    EXPECT(s->ops->credits_decide(s, NULL, res, decide_rule, &a, NULL, &err) == KP_OK && a.seen.res_found &&
               a.seen.res.state == KP_RES_RESERVED && strcmp(a.seen.res.user_id, uid) == 0 && a.seen.balance_found &&
               a.seen.balance.daily == 2,
           "credits_decide commit: %s", err.msg);
    EXPECT(s->ops->reservation_get(s, res, &r, &err) == KP_OK && r.state == KP_RES_COMMITTED,
           "credits_decide: not committed");
    a.mode = DECIDE_REFUSE;
    EXPECT(s->ops->credits_decide(s, NULL, res, decide_rule, &a, NULL, &err) == KP_ERATE,
           "credits_decide: the rule's refusal not returned");
    a.mode = DECIDE_NOTHING;
    EXPECT(s->ops->credits_decide(s, NULL, "res_missing", decide_rule, &a, NULL, &err) == KP_OK && !a.seen.res_found &&
               !a.seen.balance_found,
           "credits_decide, no reservation: %s", err.msg);
    EXPECT(s->ops->credits_decide(s, "usr_missing", NULL, decide_rule, &a, NULL, &err) == KP_OK &&
               !a.seen.balance_found,
           "credits_decide, no user: %s", err.msg);
    kp_balance sum = {0};
    EXPECT(s->ops->balance_get(s, uid, &b, &err) == KP_OK && b.daily == 2 && b.monthly == 2 &&
               s->ops->ledger_sum(s, uid, &sum, &err) == KP_OK && sum.daily == 2,
           "credits_decide: balance %lld, ledger %lld", (long long)b.daily, (long long)sum.daily);
}

static void check_credits(kp_store *s)
{
    kp_err err = {0};
    kp_user u;
    kp_account a = {0};
    kp_balance b = {0};
    char idem[3][KP_IDEM_MAX], res[KP_ID_MAX];
    make_user(&u, 10, "credits");
    for (int i = 0; i < 3; i++)
        snprintf(idem[i], sizeof idem[i], "contract:%08x:%d", g_run, i);
    make_id(res, sizeof res, "res", 10);

    kp_credit_change first = change(u.id, 5, 3, idem[0]);
    first.reason = "signup";
    EXPECT(s->ops->user_create_credited(s, &u, &first, &err) == KP_OK, "user_create_credited: %s", err.msg);
    unsigned long before = requests(s);
    EXPECT(s->ops->account_get(s, u.id, &a, &err) == KP_OK && a.balance.daily == 5 && a.balance.monthly == 3 &&
               strcmp(a.plan.id, "free") == 0 && strcmp(a.user.email, u.email) == 0 && !a.subscription.status[0] &&
               !a.subscription.plan_id[0] && a.subscription.current_period_end == 0,
           "account_get: %s", err.msg);
    figure("account_get_requests", (json_int_t)(requests(s) - before));

    /* the same key again: nothing changes */
    kp_credit_change again = change(u.id, 5, 3, idem[0]);
    EXPECT(s->ops->credits_apply(s, &again, &b, &err) == KP_EDUPLICATE && b.daily == 5,
           "reused idempotency key not KP_EDUPLICATE (%s)", err.msg);
    /* stale CAS, overdraft */
    kp_credit_change stale = change(u.id, -1, 0, idem[1]);
    stale.expected_version = a.balance.version + 7;
    EXPECT(s->ops->credits_apply(s, &stale, &b, &err) == KP_ECONFLICT, "stale expected_version not KP_ECONFLICT");
    kp_credit_change over = change(u.id, -6, 0, idem[1]);
    EXPECT(s->ops->credits_apply(s, &over, &b, &err) == KP_ECREDITS, "overdraft not KP_ECREDITS");
    /* a reservation: none -> reserved (a spend, one transaction), reserved -> committed */
    kp_credit_change spend = change(u.id, -2, -1, idem[1]);
    spend.expected_version = a.balance.version;
    spend.res_id = res;
    spend.res_from = KP_RES_NONE;
    spend.res_to = KP_RES_RESERVED;
    spend.res_daily = 2;
    spend.res_monthly = 1;
    before = requests(s);
    EXPECT(s->ops->credits_apply(s, &spend, &b, &err) == KP_OK && b.daily == 3 && b.monthly == 2, "reserve: %s",
           err.msg);
    figure("spend_requests", (json_int_t)(requests(s) - before));
    kp_reservation r = {0};
    EXPECT(s->ops->reservation_get(s, res, &r, &err) == KP_OK && r.state == KP_RES_RESERVED && r.daily == 2 &&
               r.monthly == 1 && strcmp(r.user_id, u.id) == 0,
           "reservation_get: %s", err.msg);
    kp_credit_change twice = change(u.id, -2, -1, "contract-other");
    twice.res_id = res;
    twice.res_from = KP_RES_NONE;
    twice.res_to = KP_RES_RESERVED;
    EXPECT(s->ops->credits_apply(s, &twice, &b, &err) == KP_ECONFLICT, "reservation created twice");
    kp_credit_change commit = change(u.id, 0, 0, idem[2]);
    commit.res_id = res;
    commit.res_from = KP_RES_RESERVED;
    commit.res_to = KP_RES_COMMITTED;
    commit.record_zero = 1;
    EXPECT(s->ops->credits_apply(s, &commit, &b, &err) == KP_OK, "commit: %s", err.msg);
    EXPECT(s->ops->reservation_get(s, res, &r, &err) == KP_OK && r.state == KP_RES_COMMITTED, "not committed");

    kp_ledger_entry *e = NULL;
    size_t n = 0;
    EXPECT(s->ops->ledger_list(s, u.id, 0, 10, &e, &n, &err) == KP_OK && n == 3, "ledger_list: %s (%zu)", err.msg, n);
    if (n == 3) {
        EXPECT(e[0].seq > e[1].seq && e[1].seq > e[2].seq, "ledger not newest first");
        EXPECT(strcmp(e[1].idem_key, idem[1]) == 0 && e[1].delta_daily == -2 && e[1].balance_daily == 3 &&
                   strcmp(e[1].reservation_id, res) == 0,
               "ledger entry fields");
        int64_t second = e[1].seq;
        free(e);
        e = NULL;
        EXPECT(s->ops->ledger_list(s, u.id, second, 10, &e, &n, &err) == KP_OK && n == 1 &&
                   strcmp(e[0].idem_key, idem[0]) == 0,
               "ledger_list before_seq: %s", err.msg);
    }
    free(e);
    kp_balance sum = {0};
    EXPECT(s->ops->ledger_sum(s, u.id, &sum, &err) == KP_OK && sum.daily == 3 && sum.monthly == 2,
           "ledger_sum: %s (%lld, %lld)", err.msg, (long long)sum.daily, (long long)sum.monthly);
    EXPECT(s->ops->balance_get(s, u.id, &b, &err) == KP_OK && b.daily == 3 && b.monthly == 2, "balance_get: %s",
           err.msg);
    check_credits_decide(s, u.id);
}

/* ---- races: every thread its own handle (store.h) ---- */

/* What account_get shows of user_id's subscription: status ("" none), plan, period end, cancel flag. The
 * number of requests it took into *requests_out (may be NULL). */
static void expect_account_subscription(kp_store *s, const char *user_id, const char *status, const char *plan,
                                        int64_t end, int cancel, json_int_t *requests_out)
{
    kp_err err = {0};
    kp_account a;
    unsigned long before = requests(s);
    kp_status rc = s->ops->account_get(s, user_id, &a, &err);
    if (requests_out)
        *requests_out = (json_int_t)(requests(s) - before);
    EXPECT(rc == KP_OK, "account_get: %s", err.msg);
    if (rc != KP_OK)
        return;
    EXPECT(strcmp(a.subscription.status, status) == 0 && strcmp(a.subscription.plan_id, plan) == 0 &&
               a.subscription.current_period_end == end && a.subscription.cancel_at_period_end == cancel,
           "account_get's subscription: got \"%s\" \"%s\" %lld %d, expected \"%s\" \"%s\" %lld %d",
           a.subscription.status, a.subscription.plan_id, (long long)a.subscription.current_period_end,
           a.subscription.cancel_at_period_end, status, plan, (long long)end, cancel);
}

/* A Stripe event's write: event id evt; NULL parts absent. */
static kp_billing_write bill(const char *evt, const kp_subscription *sub, const kp_billing_customer *c,
                             const char *plan_user, const char *plan, const kp_credit_change *credit)
{
    kp_billing_write w = {.event_id = evt,
                          .event_type = "customer.subscription.updated",
                          .event_created = 1700000000,
                          .subscription = sub,
                          .customer = c,
                          .plan_user_id = plan_user,
                          .plan_id = plan,
                          .credit = credit};
    return w;
}

static void check_billing(kp_store *s)
{
    kp_err err = {0};
    kp_user u, v, got = {0};
    kp_billing_customer c = {0}, found = {0};
    kp_subscription sub = {0}, read = {0};
    kp_balance b = {0};
    char evt[4][KP_STRIPE_ID_MAX], idem[KP_IDEM_MAX];
    int credited = -1;
    make_user(&u, 40, "billing");
    make_user(&v, 41, "billing");
    EXPECT(s->ops->user_create(s, &u, &err) == KP_OK && s->ops->user_create(s, &v, &err) == KP_OK, "users: %s",
           err.msg);
    for (int i = 0; i < 4; i++)
        snprintf(evt[i], sizeof evt[i], "evt_%08x_%d", g_run, i);
    snprintf(idem, sizeof idem, "invoice:in_%08x", g_run);
    snprintf(c.user_id, sizeof c.user_id, "%s", u.id);
    snprintf(c.customer_id, sizeof c.customer_id, "cus_%08x", g_run);
    snprintf(sub.id, sizeof sub.id, "sub_%08x", g_run);
    snprintf(c.subscription_id, sizeof c.subscription_id, "%s", sub.id);
    snprintf(sub.user_id, sizeof sub.user_id, "%s", u.id);
    snprintf(sub.customer_id, sizeof sub.customer_id, "%s", c.customer_id);
    snprintf(sub.status, sizeof sub.status, "active");
    snprintf(sub.plan_id, sizeof sub.plan_id, "pro");
    sub.current_period_end = 1800000000;

    EXPECT(s->ops->billing_customer_get(s, u.id, &found, &err) == KP_ENOTFOUND, "customer before Checkout");
    /* one event: customer link, new subscription, plan, the invoice's credits */
    kp_credit_change credit = change(u.id, 0, 50, idem);
    credit.reason = "subscription";
    kp_billing_write w = bill(evt[0], &sub, &c, u.id, "pro", &credit);
    unsigned long before = requests(s);
    EXPECT(s->ops->billing_apply(s, &w, &credited, &err) == KP_OK && credited == 1, "billing_apply: %s", err.msg);
    figure("billing_apply_requests", (json_int_t)(requests(s) - before));
    EXPECT(s->ops->billing_customer_find(s, c.customer_id, &found, &err) == KP_OK && strcmp(found.user_id, u.id) == 0 &&
               strcmp(found.subscription_id, sub.id) == 0,
           "billing_customer_find: %s", err.msg);
    EXPECT(s->ops->subscription_get(s, sub.id, &read, &err) == KP_OK && read.version == 1 &&
               strcmp(read.status, "active") == 0 && strcmp(read.plan_id, "pro") == 0 &&
               read.current_period_end == 1800000000 && strcmp(read.user_id, u.id) == 0,
           "subscription_get: %s", err.msg);
    EXPECT(s->ops->user_get(s, u.id, &got, &err) == KP_OK && strcmp(got.plan_id, "pro") == 0, "plan not set");
    EXPECT(s->ops->balance_get(s, u.id, &b, &err) == KP_OK && b.monthly == 50, "credit not applied");
    /* the account shows the linked subscription, in the same number of requests as without one */
    json_int_t subscribed = 0;
    expect_account_subscription(s, u.id, "active", "pro", 1800000000, 0, &subscribed);
    figure("account_get_subscribed_requests", subscribed);
    expect_account_subscription(s, v.id, "", "", 0, 0, NULL);

    /* the same event again: KP_EDUPLICATE, nothing changes */
    EXPECT(s->ops->billing_apply(s, &w, &credited, &err) == KP_EDUPLICATE, "duplicate event not KP_EDUPLICATE");
    /* a stale subscription version (0: must not exist; it does): KP_ECONFLICT, and the event stays unprocessed */
    w = bill(evt[1], &sub, NULL, NULL, NULL, NULL);
    EXPECT(s->ops->billing_apply(s, &w, &credited, &err) == KP_ECONFLICT, "stale subscription not KP_ECONFLICT");
    sub = read;
    snprintf(sub.status, sizeof sub.status, "past_due");
    sub.current_period_end = 1800003600;
    sub.cancel_at_period_end = 1;
    EXPECT(s->ops->billing_apply(s, &w, &credited, &err) == KP_OK && credited == 0, "CAS write: %s", err.msg);
    EXPECT(s->ops->subscription_get(s, sub.id, &read, &err) == KP_OK && read.version == 2 &&
               strcmp(read.status, "past_due") == 0,
           "subscription after CAS: %s", err.msg);
    /* an event updating the subscription alone: the account shows the change */
    expect_account_subscription(s, u.id, "past_due", "pro", 1800003600, 1, NULL);

    /* the same invoice in another event: credited once, the rest applies */
    kp_credit_change credit2 = change(u.id, 0, 50, idem);
    w = bill(evt[2], NULL, NULL, u.id, "free", &credit2);
    EXPECT(s->ops->billing_apply(s, &w, &credited, &err) == KP_OK && credited == 0, "same invoice: %s", err.msg);
    EXPECT(s->ops->balance_get(s, u.id, &b, &err) == KP_OK && b.monthly == 50, "same invoice credited twice");
    EXPECT(s->ops->user_get(s, u.id, &got, &err) == KP_OK && strcmp(got.plan_id, "free") == 0, "plan not reset");

    /* the customer belongs to one user; a failed write changes nothing (the unknown plan) */
    kp_billing_customer other = c;
    snprintf(other.user_id, sizeof other.user_id, "%s", v.id);
    w = bill(evt[3], NULL, &other, NULL, NULL, NULL);
    EXPECT(s->ops->billing_apply(s, &w, &credited, &err) == KP_ECONFLICT, "customer linked to a second user");
    EXPECT(s->ops->billing_customer_get(s, v.id, &found, &err) == KP_ENOTFOUND, "refused link written");
    w = bill(evt[3], NULL, NULL, v.id, "no-such-plan", NULL);
    EXPECT(s->ops->billing_apply(s, &w, &credited, &err) == KP_ENOTFOUND, "unknown plan set");
    /* a new customer id for the user: the old one finds nobody */
    kp_billing_customer moved = c;
    snprintf(moved.customer_id, sizeof moved.customer_id, "cus_%08x_b", g_run);
    w = bill(evt[3], NULL, &moved, NULL, NULL, NULL);
    EXPECT(s->ops->billing_apply(s, &w, &credited, &err) == KP_OK, "customer id change: %s", err.msg);
    EXPECT(s->ops->billing_customer_find(s, moved.customer_id, &found, &err) == KP_OK &&
               strcmp(found.user_id, u.id) == 0,
           "new customer id: %s", err.msg);
    EXPECT(s->ops->billing_customer_find(s, c.customer_id, &found, &err) == KP_ENOTFOUND, "old customer id found");
    EXPECT(s->ops->billing_customer_find(s, "cus_nobody", &found, &err) == KP_ENOTFOUND, "unknown customer found");
    EXPECT(s->ops->subscription_get(s, "sub_nobody", &read, &err) == KP_ENOTFOUND, "unknown subscription found");
}

#define BONUS_USERS 5
#define BONUS_SEGMENTS 3

/* Walks segment seg of the users, limit per page; counts in seen[] how often each of ids appeared, and
 * any id twice in the walk so far (dups). */
static void bonus_walk(kp_store *s, unsigned seg, char ids[][KP_ID_MAX], int *seen, int64_t bonus, json_t *all)
{
    kp_err err = {0};
    char token[KP_PAGE_TOKEN_MAX] = "", next[KP_PAGE_TOKEN_MAX];
    for (int page = 0; page < 10000; page++) {
        kp_bonus_candidate *v = NULL;
        size_t n = 0;
        kp_status rc = s->ops->users_bonus_page(s, token, seg, BONUS_SEGMENTS, 2, &v, &n, next, &err);
        EXPECT(rc == KP_OK && n <= 2, "users_bonus_page: %s", err.msg);
        for (size_t i = 0; rc == KP_OK && i < n; i++) {
            EXPECT(!json_object_get(all, v[i].user_id), "user %s walked twice", v[i].user_id);
            json_object_set_new(all, v[i].user_id, json_true());
            for (int k = 0; k < BONUS_USERS; k++)
                if (strcmp(v[i].user_id, ids[k]) == 0) {
                    seen[k]++;
                    EXPECT(v[i].daily_bonus == bonus && v[i].balance.daily == k && v[i].balance.version == 1 &&
                               v[i].verification_required == (k == 0) && !v[i].email_verified,
                           "candidate %s as read", ids[k]);
                }
        }
        free(v);
        if (rc != KP_OK || !next[0])
            return;
        memcpy(token, next, sizeof token);
    }
    fail("segment %u did not end", seg);
}

/* What the rule of check_bonus_grant knows: the users and a key already used. */
typedef struct grant_rule_arg {
    char (*ids)[KP_ID_MAX];
    const char *used_key;
} grant_rule_arg;

/* Users 0..4 of check_bonus: a used key, +1, an overdraft, +5, a stale version; everyone else nothing. */
static int grant_rule(const kp_bonus_candidate *u, void *arg, char *key, kp_credit_change *c)
{
    const grant_rule_arg *a = arg;
    int k = 0;
    while (k < BONUS_USERS && strcmp(a->ids[k], u->user_id) != 0)
        k++;
    if (k == BONUS_USERS)
        return 0;
    static const int64_t delta[BONUS_USERS] = {1, 1, -100, 5, 1};
    snprintf(key, KP_IDEM_MAX, "%s:grant:%d", u->user_id, k);
    *c = change(u->user_id, delta[k], 0, k == 0 ? a->used_key : key);
    c->expected_version = k == 4 ? u->balance.version - 1 : u->balance.version;
    c->record_zero = 1;
    return 1;
}

/* bonus_page_grant over every user, pages of 2; *granted, and each of the users' outcomes into results. */
static void bonus_grant_walk(kp_store *s, grant_rule_arg *a, size_t *granted, kp_status results[BONUS_USERS])
{
    kp_err err = {0};
    char token[KP_PAGE_TOKEN_MAX] = "", next[KP_PAGE_TOKEN_MAX];
    *granted = 0;
    for (int page = 0; page < 100000; page++) {
        kp_bonus_page p;
        kp_status rc = s->ops->bonus_page_grant(s, token, 0, 1, 2, grant_rule, a, &p, next, &err);
        EXPECT(rc == KP_OK && p.n <= 2, "bonus_page_grant: %s", err.msg);
        if (rc != KP_OK)
            return;
        *granted += p.granted;
        for (size_t i = 0; i < p.n; i++)
            for (int k = 0; k < BONUS_USERS; k++)
                if (strcmp(p.users[i].user_id, a->ids[k]) == 0)
                    results[k] = p.results[i];
        free(p.users);
        free(p.results);
        if (!next[0])
            return;
        memcpy(token, next, sizeof token);
    }
    fail("bonus_page_grant's walk did not end");
}

static void check_bonus_grant(kp_store *s, char ids[][KP_ID_MAX], const char *used_key)
{
    kp_err err = {0};
    grant_rule_arg a = {.ids = ids, .used_key = used_key};
    kp_status r[BONUS_USERS] = {0};
    size_t granted = 0;
    bonus_grant_walk(s, &a, &granted, r);
    EXPECT(granted == 2 && r[0] == KP_EDUPLICATE && r[1] == KP_OK && r[2] == KP_ECREDITS && r[3] == KP_OK &&
               r[4] == KP_ECONFLICT,
           "bonus_page_grant: %zu granted, outcomes %d %d %d %d %d", granted, r[0], r[1], r[2], r[3], r[4]);
    static const int64_t want[BONUS_USERS] = {0, 12, 2, 8, 4};
    for (int k = 0; k < BONUS_USERS; k++) {
        kp_balance b = {0}, sum = {0};
        EXPECT(s->ops->balance_get(s, ids[k], &b, &err) == KP_OK && b.daily == want[k], "grant: user %d has %lld", k,
               (long long)b.daily);
        EXPECT(s->ops->ledger_sum(s, ids[k], &sum, &err) == KP_OK && sum.daily == b.daily, "grant: user %d ledger", k);
    }
    kp_ledger_entry *e = NULL;
    size_t n = 0;
    EXPECT(s->ops->ledger_list(s, ids[3], 0, 1, &e, &n, &err) == KP_OK && n == 1 && e[0].delta_daily == 5 &&
               e[0].balance_daily == 8 && e[0].balance_monthly == 0 && strstr(e[0].idem_key, ":grant:3"),
           "grant: ledger row of user 3");
    free(e);
    bonus_grant_walk(s, &a, &granted, r);
    EXPECT(granted == 0 && r[1] == KP_EDUPLICATE && r[3] == KP_EDUPLICATE, "bonus_page_grant again: %zu granted",
           granted);
}

static void check_bonus(kp_store *s)
{
    kp_err err = {0};
    kp_plan free_plan = {0};
    char ids[BONUS_USERS][KP_ID_MAX], idem[BONUS_USERS + 2][KP_IDEM_MAX];
    int seen[BONUS_USERS] = {0};
    EXPECT(s->ops->plan_get(s, "free", &free_plan, &err) == KP_OK, "plan_get: %s", err.msg);
    for (int k = 0; k < BONUS_USERS; k++) {
        kp_user u;
        make_user(&u, 50 + k, "bonus");
        u.verification_required = k == 0;
        snprintf(ids[k], sizeof ids[k], "%s", u.id);
        snprintf(idem[k], sizeof idem[k], "bonus:%08x:%d", g_run, k);
        kp_credit_change c = change(u.id, k, 0, idem[k]);
        EXPECT(s->ops->user_create_credited(s, &u, &c, &err) == KP_OK, "user_create_credited: %s", err.msg);
    }
    json_t *all = json_object();
    for (unsigned seg = 0; seg < BONUS_SEGMENTS; seg++)
        bonus_walk(s, seg, ids, seen, free_plan.daily_bonus, all);
    json_decref(all);
    for (int k = 0; k < BONUS_USERS; k++)
        EXPECT(seen[k] == 1, "user %d seen %d times in the walk", k, seen[k]);
    kp_bonus_candidate *v = NULL;
    size_t n = 0;
    char next[KP_PAGE_TOKEN_MAX];
    EXPECT(s->ops->users_bonus_page(s, "", 3, 3, 2, &v, &n, next, &err) == KP_EINVAL, "segment 3 of 3 walked");

    /* many: one applies, one reuses its key, one overdraws, one for nobody; each on its own */
    snprintf(idem[BONUS_USERS], sizeof idem[BONUS_USERS], "bonus:%08x:many", g_run);
    snprintf(idem[BONUS_USERS + 1], sizeof idem[BONUS_USERS + 1], "bonus:%08x:over", g_run);
    kp_credit_change many[4] = {change(ids[1], 10, 0, idem[BONUS_USERS]), change(ids[2], 10, 0, idem[BONUS_USERS]),
                                change(ids[3], -100, 0, idem[BONUS_USERS + 1]),
                                change("usr_nobody", 1, 0, idem[BONUS_USERS + 1])};
    kp_status results[4] = {KP_EINTERNAL, KP_EINTERNAL, KP_EINTERNAL, KP_EINTERNAL};
    EXPECT(s->ops->credits_apply_many(s, many, 4, results, &err) == KP_OK, "credits_apply_many: %s", err.msg);
    EXPECT(results[0] == KP_OK && results[1] == KP_EDUPLICATE && results[2] == KP_ECREDITS &&
               results[3] == KP_ENOTFOUND,
           "credits_apply_many outcomes %d %d %d %d", results[0], results[1], results[2], results[3]);
    kp_balance b = {0};
    EXPECT(s->ops->balance_get(s, ids[1], &b, &err) == KP_OK && b.daily == 11, "many: first not applied");
    EXPECT(s->ops->balance_get(s, ids[2], &b, &err) == KP_OK && b.daily == 2, "many: duplicate applied");
    EXPECT(s->ops->balance_get(s, ids[3], &b, &err) == KP_OK && b.daily == 3, "many: overdraft applied");
    check_bonus_grant(s, ids, idem[BONUS_USERS]);
}

static kp_event event(int64_t id, const char *type, const char *data)
{
    kp_event e = {.id = id, .data = (char *)data};
    snprintf(e.type, sizeof e.type, "%s", type);
    return e;
}

static void check_events(kp_store *s)
{
    kp_err err = {0};
    char pid[KP_ID_MAX];
    kp_event *out = NULL;
    size_t n = 0;
    int64_t last = -1;
    make_id(pid, sizeof pid, "prj", 60);
    kp_event batch[] = {event(1, "project", "{\"a\":1}"), event(2, "delta", "{\"text\":\"x\"}")};
    kp_event retried[] = {event(2, "delta", "{\"text\":\"other\"}"), event(3, "delta", "{\"text\":\"z\"}")};
    EXPECT(s->ops->events_append(s, pid, 1, batch, 2, &err) == KP_OK, "events_append: %s", err.msg);
    unsigned long before = requests(s);
    EXPECT(s->ops->events_append(s, pid, 1, batch, 2, &err) == KP_OK, "batch retried whole: %s", err.msg);
    EXPECT(s->ops->events_append(s, pid, 1, retried, 2, &err) == KP_OK, "batch retried in part: %s", err.msg);
    figure("events_retry_requests", (json_int_t)(requests(s) - before));
    EXPECT(s->ops->events_list(s, pid, 1, 0, 100, &out, &n, &err) == KP_OK && n == 3 && out[0].id == 1 &&
               strcmp(out[0].type, "project") == 0 && strcmp(out[1].data, "{\"text\":\"x\"}") == 0 && out[2].id == 3,
           "events_list after retries: %s", err.msg);
    kp_event_free_array(out, n);
    EXPECT(s->ops->events_list(s, pid, 1, 1, 1, &out, &n, &err) == KP_OK && n == 1 && out[0].id == 2,
           "events_list after 1, limit 1: %s", err.msg);
    kp_event_free_array(out, n);
    EXPECT(s->ops->events_last_id(s, pid, 1, &last, &err) == KP_OK && last == 3, "events_last_id: %s", err.msg);
    EXPECT(s->ops->events_last_id(s, pid, 2, &last, &err) == KP_OK && last == 0, "other version has events");

    /* more than one transaction's worth in one call */
    enum { MANY = 120 };
    kp_event many[MANY];
    for (int i = 0; i < MANY; i++)
        many[i] = event(i + 1, "delta", "{}");
    before = requests(s);
    EXPECT(s->ops->events_append(s, pid, 2, many, MANY, &err) == KP_OK, "120 events: %s", err.msg);
    figure("events_120_requests", (json_int_t)(requests(s) - before));
    EXPECT(s->ops->events_last_id(s, pid, 2, &last, &err) == KP_OK && last == MANY, "last of 120: %lld",
           (long long)last);
    EXPECT(s->ops->events_list(s, pid, 2, 100, 100, &out, &n, &err) == KP_OK && n == 20 && out[0].id == 101,
           "events after 100: %s", err.msg);
    kp_event_free_array(out, n);
    kp_event bad[] = {event(0, "delta", "{}")};
    EXPECT(s->ops->events_append(s, pid, 1, bad, 1, &err) == KP_EINVAL, "event id 0 stored");

    /* several versions at once: each keeps what was stored (idempotent); one invalid batch writes nothing */
    kp_event v1[] = {event(3, "delta", "{\"text\":\"changed\"}"), event(4, "file", "{}")};
    kp_event v3[] = {event(1, "project", "{}")};
    kp_event_batch two[] = {{pid, 1, v1, 2}, {pid, 3, v3, 1}};
    EXPECT(s->ops->events_append_many(s, two, 2, &err) == KP_OK, "events_append_many: %s", err.msg);
    EXPECT(s->ops->events_last_id(s, pid, 1, &last, &err) == KP_OK && last == 4, "many: last of 1: %lld",
           (long long)last);
    EXPECT(s->ops->events_list(s, pid, 1, 2, 10, &out, &n, &err) == KP_OK && n == 2 &&
               strcmp(out[0].data, "{\"text\":\"z\"}") == 0 && strcmp(out[1].type, "file") == 0,
           "many: version 1 after 2: %s", err.msg);
    kp_event_free_array(out, n);
    EXPECT(s->ops->events_last_id(s, pid, 3, &last, &err) == KP_OK && last == 1, "many: last of 3");
    kp_event v4[] = {event(1, "project", "{}")};
    kp_event_batch with_bad[] = {{pid, 4, v4, 1}, {pid, 1, bad, 1}};
    EXPECT(s->ops->events_append_many(s, with_bad, 2, &err) == KP_EINVAL, "many: invalid batch accepted");
    EXPECT(s->ops->events_last_id(s, pid, 4, &last, &err) == KP_OK && last == 0, "many: invalid batch wrote");
}

/* A project of user uid with its first version generating, held by owner until lease (ms), reserving res. */
static kp_status leased_project(kp_store *s, kp_project *p, const char *uid, int i, const char *owner, int64_t lease,
                                const char *res, kp_err *err)
{
    kp_version v = {.prompt = "leased", .lease_until = lease};
    memset(p, 0, sizeof *p);
    make_id(p->id, sizeof p->id, "prj", i);
    snprintf(p->user_id, sizeof p->user_id, "%s", uid);
    snprintf(p->name, sizeof p->name, "leased %d", i);
    snprintf(v.owner, sizeof v.owner, "%s", owner);
    snprintf(v.reservation_id, sizeof v.reservation_id, "%s", res ? res : "");
    return s->ops->project_create(s, p, &v, err);
}

/* Ends version n of pid (failed, or ready) without a credit change, as version_finish does. */
static kp_status finish(kp_store *s, const char *pid, int64_t n, kp_version_status status, kp_err *err)
{
    kp_version v = {.n = n, .status = status, .message = "", .files_json = "[]"};
    snprintf(v.project_id, sizeof v.project_id, "%s", pid);
    if (status == KP_VER_FAILED)
        snprintf(v.error_code, sizeof v.error_code, "interrupted");
    return s->ops->version_finish(s, &v, err);
}

static int64_t generating(kp_store *s, const char *uid)
{
    kp_err err = {0};
    int64_t count = -1;
    EXPECT(s->ops->versions_generating_count(s, uid, &count, &err) == KP_OK, "versions_generating_count: %s", err.msg);
    return count;
}

/* Where pid's version n is in vs (-1: absent). */
static int version_at(const kp_version *vs, size_t n, const char *pid, int64_t vn)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(vs[i].project_id, pid) == 0 && vs[i].n == vn)
            return (int)i;
    return -1;
}

static int reservation_listed(kp_store *s, const char *id)
{
    kp_err err = {0};
    kp_reservation *rs = NULL;
    size_t n = 0;
    int found = 0;
    EXPECT(s->ops->reservations_orphaned(s, &rs, &n, &err) == KP_OK, "reservations_orphaned: %s", err.msg);
    for (size_t i = 0; i < n; i++) {
        found |= strcmp(rs[i].id, id) == 0;
        EXPECT(rs[i].state == KP_RES_RESERVED, "orphaned reservation %s not reserved", rs[i].id);
        EXPECT(i == 0 || strcmp(rs[i - 1].id, rs[i].id) < 0, "orphaned reservations not ordered by id");
    }
    free(rs);
    return found;
}

/* A reservation of 1 daily credit for uid: res_from NONE -> RESERVED. */
static kp_status reserve(kp_store *s, const char *uid, const char *res, kp_err *err)
{
    char idem[KP_IDEM_MAX];
    snprintf(idem, sizeof idem, "res:%s:reserve", res);
    kp_credit_change c = change(uid, -1, 0, idem);
    c.res_id = res;
    c.res_from = KP_RES_NONE;
    c.res_to = KP_RES_RESERVED;
    c.res_daily = 1;
    return s->ops->credits_apply(s, &c, NULL, err);
}

/* Commits (0 back) or refunds (1 back) reservation res of 1 daily credit. */
static kp_status settle_reservation(kp_store *s, const char *uid, const char *res, kp_reservation_state to, kp_err *err)
{
    char key[KP_IDEM_MAX];
    snprintf(key, sizeof key, "res:%s:%s", res, to == KP_RES_REFUNDED ? "refund" : "commit");
    kp_credit_change c = change(uid, to == KP_RES_REFUNDED, 0, key);
    c.res_id = res;
    c.res_from = KP_RES_RESERVED;
    c.res_to = to;
    return s->ops->credits_apply(s, &c, NULL, err);
}

static void check_recovery(kp_store *s)
{
    kp_err err = {0};
    kp_user u;
    kp_project a, b, c, d;
    kp_version *vs = NULL;
    size_t n = 0;
    char idem[KP_IDEM_MAX], res[3][KP_ID_MAX];
    make_user(&u, 70, "recovery");
    snprintf(idem, sizeof idem, "recovery:%08x", g_run);
    kp_credit_change grant = change(u.id, 10, 0, idem);
    EXPECT(s->ops->user_create_credited(s, &u, &grant, &err) == KP_OK, "user: %s", err.msg);
    unsigned long before = requests(s);
    EXPECT(generating(s, u.id) == 0, "a new user generates");
    figure("generating_count_requests", (json_int_t)(requests(s) - before));
    EXPECT(generating(s, "usr_nobody") == 0, "an unknown user generates");

    /* leases at 1000 (no owner) and 1100 ran out at 1500; 2000's did not */
    EXPECT(leased_project(s, &a, u.id, 71, "", 1000, NULL, &err) == KP_OK, "project a: %s", err.msg);
    EXPECT(leased_project(s, &b, u.id, 72, "inst_b", 1100, NULL, &err) == KP_OK, "project b: %s", err.msg);
    EXPECT(leased_project(s, &c, u.id, 73, "inst_c", 2000, NULL, &err) == KP_OK, "project c: %s", err.msg);
    EXPECT(generating(s, u.id) == 3, "3 generating: %lld", (long long)generating(s, u.id));
    before = requests(s);
    EXPECT(s->ops->versions_expired(s, 1500, 100, &vs, &n, &err) == KP_OK, "versions_expired: %s", err.msg);
    figure("versions_expired_requests", (json_int_t)(requests(s) - before));
    int ia = version_at(vs, n, a.id, 1), ib = version_at(vs, n, b.id, 1);
    EXPECT(ia >= 0 && ib == ia + 1 && vs[ia].owner[0] == '\0' && strcmp(vs[ib].owner, "inst_b") == 0 &&
               strcmp(vs[ia].prompt, "leased") == 0,
           "expired: a then b (%d, %d of %zu)", ia, ib, n);
    EXPECT(version_at(vs, n, c.id, 1) < 0, "a running lease listed as expired");
    for (size_t i = 0; i < n; i++) {
        EXPECT(vs[i].status == KP_VER_GENERATING && vs[i].lease_until < 1500, "%s/%lld listed: not expired",
               vs[i].project_id, (long long)vs[i].n);
        EXPECT(i == 0 || vs[i - 1].lease_until <= vs[i].lease_until, "expired versions not oldest lease first");
    }
    kp_version_free_array(vs, n);
    EXPECT(s->ops->versions_expired(s, 1500, 1, &vs, &n, &err) == KP_OK && n == 1 &&
               strcmp(vs[0].project_id, a.id) == 0,
           "versions_expired limit 1: %zu versions, not the oldest lease", n);
    kp_version_free_array(vs, n);
    EXPECT(s->ops->versions_expired(s, 1000, 100, &vs, &n, &err) == KP_OK && version_at(vs, n, a.id, 1) < 0,
           "a lease that runs out at 1000 listed at 1000");
    kp_version_free_array(vs, n);

    /* ended but not settled (version_finish): listed until settled; ended versions are not expired */
    EXPECT(finish(s, c.id, 1, KP_VER_READY, &err) == KP_OK, "finish c: %s", err.msg);
    EXPECT(generating(s, u.id) == 2, "2 generating after one ended");
    EXPECT(s->ops->versions_unsettled(s, &vs, &n, &err) == KP_OK && version_at(vs, n, c.id, 1) >= 0 &&
               version_at(vs, n, a.id, 1) < 0,
           "versions_unsettled: %s", err.msg);
    for (size_t i = 0; i < n; i++)
        EXPECT(vs[i].status != KP_VER_GENERATING && !vs[i].settled, "unsettled list has a settled or running one");
    kp_version_free_array(vs, n);
    EXPECT(s->ops->version_set_settled(s, c.id, 1, &err) == KP_OK, "settle c: %s", err.msg);
    EXPECT(s->ops->versions_unsettled(s, &vs, &n, &err) == KP_OK && version_at(vs, n, c.id, 1) < 0,
           "a settled version listed as unsettled");
    kp_version_free_array(vs, n);

    /* reservations: reserved without a version (orphaned); with one; committed */
    for (int i = 0; i < 3; i++) {
        make_id(res[i], sizeof res[i], "res", 70 + i);
        EXPECT(reserve(s, u.id, res[i], &err) == KP_OK, "reserve %d: %s", i, err.msg);
    }
    EXPECT(leased_project(s, &d, u.id, 74, "inst_d", 9000000000000, res[1], &err) == KP_OK, "project d: %s", err.msg);
    EXPECT(settle_reservation(s, u.id, res[2], KP_RES_COMMITTED, &err) == KP_OK, "commit: %s", err.msg);
    EXPECT(reservation_listed(s, res[0]), "a reservation without a version not orphaned");
    EXPECT(!reservation_listed(s, res[1]), "a version's reservation listed as orphaned");
    EXPECT(!reservation_listed(s, res[2]), "a committed reservation listed as orphaned");
    EXPECT(settle_reservation(s, u.id, res[0], KP_RES_REFUNDED, &err) == KP_OK, "refund: %s", err.msg);
    EXPECT(!reservation_listed(s, res[0]), "a refunded reservation listed as orphaned");

    /* the rest ends (and leaves nothing expired or unsettled for other checks) */
    EXPECT(finish(s, a.id, 1, KP_VER_FAILED, &err) == KP_OK && finish(s, b.id, 1, KP_VER_FAILED, &err) == KP_OK &&
               finish(s, d.id, 1, KP_VER_FAILED, &err) == KP_OK,
           "finish a, b, d: %s", err.msg);
    EXPECT(generating(s, u.id) == 0, "still generating after every version ended");
    EXPECT(s->ops->versions_expired(s, 1500, 100, &vs, &n, &err) == KP_OK && version_at(vs, n, a.id, 1) < 0,
           "an ended version listed as expired");
    kp_version_free_array(vs, n);
    EXPECT(s->ops->version_set_settled(s, a.id, 1, &err) == KP_OK &&
               s->ops->version_set_settled(s, b.id, 1, &err) == KP_OK &&
               s->ops->version_set_settled(s, d.id, 1, &err) == KP_OK,
           "settle a, b, d: %s", err.msg);
}

/* Admits version n of uid's project pid (n 1: a new project), charging amount daily credits as reservation
 * res (0: free), with at most max generating, held by owner until lease; retried while the balance moves,
 * as the domain does (kp_credits_admit). *ok_out: the balance admit reported. */
static kp_status admit_one(kp_store *s, const char *uid, const char *pid, int64_t n, int64_t amount, int64_t max,
                           const char *res, int64_t lease, kp_balance *out, kp_err *err)
{
    kp_project p = {.created_at = 0};
    kp_version v = {.n = n, .prompt = "admitted"};
    kp_balance b = {0, 0, 0}, now = {0, 0, 0}, tmp;
    char key[KP_IDEM_MAX];
    kp_credit_change c;
    snprintf(v.project_id, sizeof v.project_id, "%s", pid);
    snprintf(p.id, sizeof p.id, "%s", pid);
    snprintf(p.user_id, sizeof p.user_id, "%s", uid);
    snprintf(p.name, sizeof p.name, "admitted");
    if (amount > 0)
        snprintf(v.reservation_id, sizeof v.reservation_id, "%s", res);
    kp_admission a = {.user_id = uid,
                      .max_generating = max,
                      .project = n == 1 ? &p : NULL,
                      .version = &v,
                      .owner = "inst_me",
                      .lease_until = lease};
    for (int attempt = 0; attempt < 200; attempt++) {
        kp_status rc = s->ops->balance_get(s, uid, &b, err);
        if (rc != KP_OK)
            return rc;
        if (amount > 0) {
            snprintf(key, sizeof key, "res:%s:reserve", res);
            c = change(uid, -amount, 0, key);
            c.expected_version = b.version;
            c.res_id = res;
            c.res_from = KP_RES_NONE;
            c.res_to = KP_RES_RESERVED;
            c.res_daily = amount;
            a.charge = &c;
        }
        rc = s->ops->admit(s, &a, out ? out : &tmp, err);
        if (rc != KP_ECONFLICT || amount == 0)
            return rc;
        if (s->ops->balance_get(s, uid, &now, err) != KP_OK || now.version == b.version)
            return KP_ECONFLICT;
    }
    return KP_ECONFLICT;
}

/* Ends version n of pid as status with credit change c (NULL: none) and two events. */
static kp_status end_one(kp_store *s, const char *pid, int64_t n, kp_version_status status, const kp_credit_change *c,
                         kp_balance *out, kp_err *err)
{
    kp_version v = {.n = n,
                    .status = status,
                    .message = "ended",
                    .files_json = "[]",
                    .events_json = "[{\"id\":1,\"event\":\"project\",\"data\":{\"n\":1}},"
                                   "{\"id\":2,\"event\":\"done\",\"data\":{\"ok\":true}}]"};
    snprintf(v.project_id, sizeof v.project_id, "%s", pid);
    if (status == KP_VER_FAILED)
        snprintf(v.error_code, sizeof v.error_code, "interrupted");
    return s->ops->version_end(s, &v, c, out, err);
}

/* The change that settles reservation res of amount daily credits: commit (0 back) or refund. */
static kp_credit_change settling(const char *uid, const char *res, int64_t amount, kp_reservation_state to,
                                 char key[KP_IDEM_MAX])
{
    snprintf(key, KP_IDEM_MAX, "res:%s:%s", res, to == KP_RES_REFUNDED ? "refund" : "commit");
    kp_credit_change c = change(uid, to == KP_RES_REFUNDED ? amount : 0, 0, key);
    c.res_id = res;
    c.res_from = KP_RES_RESERVED;
    c.res_to = to;
    c.record_zero = 1;
    return c;
}

/* Nothing of a refused admission is stored: no project (new) or version n, no reservation, the balance as
 * it was, the same count of generating versions. */
static void nothing_admitted(kp_store *s, const char *what, const char *uid, const char *pid, int64_t n,
                             const char *res, const kp_balance *was, int64_t running)
{
    kp_err err = {0};
    kp_project p;
    kp_version v = {0};
    kp_reservation r;
    kp_balance b = {0};
    if (n == 1)
        EXPECT(s->ops->project_get(s, pid, &p, &err) == KP_ENOTFOUND, "%s: project written", what);
    EXPECT(s->ops->version_get(s, pid, n, &v, &err) == KP_ENOTFOUND, "%s: version written", what);
    kp_version_clear(&v);
    EXPECT(!res || s->ops->reservation_get(s, res, &r, &err) == KP_ENOTFOUND, "%s: reservation written", what);
    EXPECT(s->ops->balance_get(s, uid, &b, &err) == KP_OK && b.daily == was->daily && b.version == was->version,
           "%s: balance changed", what);
    EXPECT(generating(s, uid) == running, "%s: generating count changed", what);
}

/* version_request_cancel: only while generating, idempotent; its owner's renewal returns the flag (running is
 * generating, held by owner; ended is not generating). */
static void cancel_requests(kp_store *s, const char *running, const char *ended, const char *owner, int64_t now)
{
    kp_err err = {0};
    kp_lease l = {.n = 1};
    snprintf(l.project_id, sizeof l.project_id, "%s", running);
    l.cancel_requested = 1;
    EXPECT(s->ops->leases_renew(s, owner, now, now + 220000, &l, 1, &err) == KP_OK && l.held && !l.cancel_requested,
           "a renewal before any cancel request: %s (held %d, cancel %d)", err.msg, l.held, l.cancel_requested);
    EXPECT(s->ops->version_request_cancel(s, running, 1, &err) == KP_OK, "version_request_cancel: %s", err.msg);
    EXPECT(s->ops->version_request_cancel(s, running, 1, &err) == KP_OK, "a second cancel request: %s", err.msg);
    EXPECT(s->ops->version_request_cancel(s, ended, 1, &err) == KP_ECONFLICT, "an ended version's cancel: %s", err.msg);
    EXPECT(s->ops->version_request_cancel(s, running, 2, &err) == KP_ECONFLICT, "no such version's cancel: %s",
           err.msg);
    EXPECT(s->ops->version_request_cancel(s, "", 1, &err) == KP_EINVAL, "a cancel of no project: %s", err.msg);
    EXPECT(s->ops->leases_renew(s, "inst_other", now, now + 230000, &l, 1, &err) == KP_OK && !l.held &&
               !l.cancel_requested,
           "another instance learnt of the cancel: %s", err.msg);
    EXPECT(s->ops->leases_renew(s, owner, now, now + 230000, &l, 1, &err) == KP_OK && l.held && l.cancel_requested,
           "the owner's renewal did not return the cancel request: %s (held %d, cancel %d)", err.msg, l.held,
           l.cancel_requested);
    kp_version v = {0};
    EXPECT(s->ops->version_get(s, running, 1, &v, &err) == KP_OK && v.status == KP_VER_GENERATING &&
               v.lease_until == now + 230000,
           "a cancel request changed more than the flag: %s", err.msg);
    kp_version_clear(&v);
}

static void check_admit(kp_store *s)
{
    kp_err err = {0};
    kp_user u;
    kp_balance b = {0}, was = {0};
    kp_reservation r = {0};
    kp_project got = {0};
    kp_version v = {0};
    char idem[KP_IDEM_MAX], key[KP_IDEM_MAX], pid[8][KP_ID_MAX], res[8][KP_ID_MAX];
    int64_t now = (int64_t)time(NULL) * 1000;
    make_user(&u, 80, "admit");
    snprintf(idem, sizeof idem, "admit:%08x", g_run);
    kp_credit_change grant = change(u.id, 3, 0, idem);
    EXPECT(s->ops->user_create_credited(s, &u, &grant, &err) == KP_OK, "user: %s", err.msg);
    for (int i = 0; i < 8; i++) {
        make_id(pid[i], sizeof pid[i], "prj", 80 + i);
        make_id(res[i], sizeof res[i], "res", 80 + i);
    }

    /* within the limit of 2: two admitted, each charged once */
    unsigned long before = requests(s);
    EXPECT(admit_one(s, u.id, pid[0], 1, 1, 2, res[0], now + 60000, &b, &err) == KP_OK && b.daily == 2, "admit 1: %s",
           err.msg);
    figure("admit_requests", (json_int_t)(requests(s) - before) - (is_ddb() ? 1 : 0)); /* less balance_get */
    EXPECT(admit_one(s, u.id, pid[1], 1, 1, 2, res[1], now + 60000, &b, &err) == KP_OK && b.daily == 1, "admit 2: %s",
           err.msg);
    EXPECT(generating(s, u.id) == 2, "2 admitted, %lld generating", (long long)generating(s, u.id));
    EXPECT(s->ops->reservation_get(s, res[0], &r, &err) == KP_OK && r.state == KP_RES_RESERVED && r.daily == 1,
           "admitted reservation: %s", err.msg);
    EXPECT(s->ops->version_get(s, pid[0], 1, &v, &err) == KP_OK && v.status == KP_VER_GENERATING &&
               strcmp(v.owner, "inst_me") == 0 && v.lease_until == now + 60000 && strcmp(v.reservation_id, res[0]) == 0,
           "admitted version: %s", err.msg);
    kp_version_clear(&v);
    EXPECT(!reservation_listed(s, res[0]), "an admitted reservation listed as orphaned");

    /* refused: at the limit (the API's 429), short of credits (402), a key used: nothing written */
    EXPECT(s->ops->balance_get(s, u.id, &was, &err) == KP_OK, "balance: %s", err.msg);
    EXPECT(admit_one(s, u.id, pid[2], 1, 1, 2, res[2], now + 60000, NULL, &err) == KP_ERATE,
           "admit at the limit not KP_ERATE: %s", err.msg);
    nothing_admitted(s, "at the limit", u.id, pid[2], 1, res[2], &was, 2);
    EXPECT(admit_one(s, u.id, pid[2], 1, 5, -1, res[2], now + 60000, NULL, &err) == KP_ECREDITS,
           "admit short of credits not KP_ECREDITS: %s", err.msg);
    nothing_admitted(s, "short of credits", u.id, pid[2], 1, res[2], &was, 2);
    EXPECT(admit_one(s, u.id, pid[2], 1, 1, -1, res[0], now + 60000, NULL, &err) == KP_EDUPLICATE,
           "admit with a used key not KP_EDUPLICATE: %s", err.msg);
    nothing_admitted(s, "a used key", u.id, pid[2], 1, NULL, &was, 2);
    EXPECT(admit_one(s, u.id, pid[0], 1, 0, -1, NULL, now + 60000, NULL, &err) == KP_ECONFLICT,
           "a project admitted twice: %s", err.msg);
    /* free: counted against the limit too */
    before = requests(s);
    EXPECT(admit_one(s, u.id, pid[3], 1, 0, 3, NULL, now + 60000, NULL, &err) == KP_OK, "free admit: %s", err.msg);
    figure("free_admit_requests", (json_int_t)(requests(s) - before) - (is_ddb() ? 1 : 0));
    EXPECT(admit_one(s, u.id, pid[4], 1, 0, 3, NULL, now + 60000, NULL, &err) == KP_ERATE, "free admit at the limit");
    nothing_admitted(s, "free at the limit", u.id, pid[4], 1, NULL, &was, 3);

    /* version_end: commits once (with its events); a second end (recovery racing the owner) changes nothing */
    kp_credit_change commit = settling(u.id, res[0], 1, KP_RES_COMMITTED, key);
    before = requests(s);
    EXPECT(end_one(s, pid[0], 1, KP_VER_READY, &commit, &b, &err) == KP_OK && b.daily == 1, "version_end: %s", err.msg);
    figure("version_end_requests", (json_int_t)(requests(s) - before));
    EXPECT(s->ops->reservation_get(s, res[0], &r, &err) == KP_OK && r.state == KP_RES_COMMITTED, "not committed");
    EXPECT(generating(s, u.id) == 2, "ended, still counted");
    EXPECT(s->ops->version_get(s, pid[0], 1, &v, &err) == KP_OK && v.status == KP_VER_READY && v.settled &&
               strcmp(v.message, "ended") == 0,
           "ended version: %s", err.msg);
    kp_version_clear(&v);
    EXPECT(s->ops->project_get(s, pid[0], &got, &err) == KP_OK && got.latest_ready == 1, "latest_ready not 1");
    kp_event *ev = NULL;
    size_t nev = 0;
    EXPECT(s->ops->events_list(s, pid[0], 1, 0, 10, &ev, &nev, &err) == KP_OK && nev == 2 && ev[1].id == 2 &&
               strcmp(ev[1].type, "done") == 0 && strcmp(ev[1].data, "{\"ok\":true}") == 0,
           "version_end's events: %s (%zu)", err.msg, nev);
    kp_event_free_array(ev, nev);
    EXPECT(s->ops->balance_get(s, u.id, &was, &err) == KP_OK, "balance: %s", err.msg);
    snprintf(idem, sizeof idem, "admit:%08x:late", g_run);
    kp_credit_change late = change(u.id, 1, 0, idem);
    EXPECT(end_one(s, pid[0], 1, KP_VER_FAILED, &late, NULL, &err) == KP_ECONFLICT,
           "a second version_end not KP_ECONFLICT: %s", err.msg);
    EXPECT(end_one(s, pid[0], 1, KP_VER_FAILED, NULL, NULL, &err) == KP_ECONFLICT, "ended twice without credits");
    EXPECT(s->ops->balance_get(s, u.id, &b, &err) == KP_OK && b.daily == was.daily && b.version == was.version,
           "the second end changed the balance");
    EXPECT(generating(s, u.id) == 2, "the second end changed the count");
    EXPECT(s->ops->version_get(s, pid[0], 1, &v, &err) == KP_OK && v.status == KP_VER_READY, "ended twice");
    kp_version_clear(&v);
    EXPECT(end_one(s, pid[7], 1, KP_VER_FAILED, NULL, NULL, &err) == KP_ENOTFOUND, "an unknown version ended");
    /* a refund */
    kp_credit_change refund = settling(u.id, res[1], 1, KP_RES_REFUNDED, key);
    EXPECT(end_one(s, pid[1], 1, KP_VER_FAILED, &refund, &b, &err) == KP_OK && b.daily == was.daily + 1,
           "version_end refunding: %s", err.msg);
    EXPECT(s->ops->reservation_get(s, res[1], &r, &err) == KP_OK && r.state == KP_RES_REFUNDED, "not refunded");
    EXPECT(generating(s, u.id) == 1, "2 ended, %lld generating", (long long)generating(s, u.id));

    /* follow-ups: the next version only, one at a time, not on a project being deleted */
    EXPECT(admit_one(s, u.id, pid[0], 2, 1, 3, res[5], now + 60000, NULL, &err) == KP_OK, "follow-up: %s", err.msg);
    EXPECT(s->ops->project_get(s, pid[0], &got, &err) == KP_OK && got.latest_version == 2, "latest_version not 2");
    EXPECT(admit_one(s, u.id, pid[0], 3, 0, -1, NULL, now + 60000, NULL, &err) == KP_ECONFLICT,
           "a follow-up while one generates");
    commit = settling(u.id, res[5], 1, KP_RES_COMMITTED, key);
    EXPECT(end_one(s, pid[0], 2, KP_VER_READY, &commit, NULL, &err) == KP_OK, "end follow-up: %s", err.msg);
    EXPECT(admit_one(s, u.id, pid[0], 4, 0, -1, NULL, now + 60000, NULL, &err) == KP_ECONFLICT, "version 4 after 2");
    EXPECT(s->ops->project_mark_deleting(s, pid[0], 1, &err) == KP_OK, "mark deleting: %s", err.msg);
    EXPECT(s->ops->balance_get(s, u.id, &was, &err) == KP_OK, "balance: %s", err.msg);
    EXPECT(admit_one(s, u.id, pid[0], 3, 1, -1, res[6], now + 60000, NULL, &err) == KP_ENOTFOUND,
           "a follow-up on a project being deleted: %s", err.msg);
    nothing_admitted(s, "project being deleted", u.id, pid[0], 3, res[6], &was, 1);
    EXPECT(s->ops->project_mark_deleting(s, pid[0], 0, &err) == KP_OK, "unmark: %s", err.msg);
    EXPECT(admit_one(s, u.id, pid[7], 2, 0, -1, NULL, now + 60000, NULL, &err) == KP_ENOTFOUND,
           "a follow-up on an unknown project");

    /* the end's events: ids a batch stored already are left as they were; more than a transaction holds */
    kp_event batch[] = {event(1, "project", "{\"n\":1}"), event(2, "delta", "{\"batch\":true}")};
    EXPECT(admit_one(s, u.id, pid[5], 1, 0, -1, NULL, now + 60000, NULL, &err) == KP_OK &&
               s->ops->events_append(s, pid[5], 1, batch, 2, &err) == KP_OK,
           "admit and a batch: %s", err.msg);
    kp_version ev_end = {.n = 1, .status = KP_VER_READY, .files_json = "[]"};
    snprintf(ev_end.project_id, sizeof ev_end.project_id, "%s", pid[5]);
    ev_end.events_json = "[{\"id\":2,\"event\":\"delta\",\"data\":{\"end\":true}},"
                         "{\"id\":3,\"event\":\"done\",\"data\":{\"ok\":true}}]";
    EXPECT(s->ops->version_end(s, &ev_end, NULL, NULL, &err) == KP_OK, "version_end after a batch: %s", err.msg);
    EXPECT(s->ops->events_list(s, pid[5], 1, 0, 10, &ev, &nev, &err) == KP_OK && nev == 3 &&
               strcmp(ev[1].data, "{\"batch\":true}") == 0 && strcmp(ev[2].type, "done") == 0,
           "events after an end that repeated a stored id: %s (%zu)", err.msg, nev);
    kp_event_free_array(ev, nev);
    kp_buf many = KP_BUF_INIT;
    int bad = kp_buf_puts(&many, "[");
    for (int i = 1; i <= 120; i++)
        bad |= kp_buf_printf(&many, "%s{\"id\":%d,\"event\":\"delta\",\"data\":{\"i\":%d}}", i > 1 ? "," : "", i, i);
    bad |= kp_buf_puts(&many, "]");
    int64_t last = 0;
    EXPECT(!bad && admit_one(s, u.id, pid[4], 1, 0, -1, NULL, now + 60000, NULL, &err) == KP_OK, "admit: %s", err.msg);
    snprintf(ev_end.project_id, sizeof ev_end.project_id, "%s", pid[4]);
    ev_end.events_json = many.data;
    EXPECT(s->ops->version_end(s, &ev_end, NULL, NULL, &err) == KP_OK &&
               s->ops->events_last_id(s, pid[4], 1, &last, &err) == KP_OK && last == 120,
           "version_end with 120 events: %s (last %lld)", err.msg, (long long)last);
    kp_buf_free(&many);

    /* leases: only the owner's running, unexpired ones are renewed, and recovery sees the new expiry */
    EXPECT(admit_one(s, u.id, pid[6], 1, 0, -1, NULL, 1000, NULL, &err) == KP_OK, "admit expired: %s", err.msg);
    kp_lease l[4] = {{.n = 1}, {.n = 1}, {.n = 1}, {.n = 1}};
    snprintf(l[0].project_id, sizeof l[0].project_id, "%s", pid[3]); /* running, mine */
    snprintf(l[1].project_id, sizeof l[1].project_id, "%s", pid[1]); /* ended */
    snprintf(l[2].project_id, sizeof l[2].project_id, "%s", pid[6]); /* ran out */
    snprintf(l[3].project_id, sizeof l[3].project_id, "prj_nobody");
    EXPECT(s->ops->leases_renew(s, "inst_other", now, now + 120000, l, 1, &err) == KP_OK && !l[0].held,
           "another instance renewed my lease: %s", err.msg);
    EXPECT(s->ops->leases_renew(s, "inst_me", now, now + 120000, l, 4, &err) == KP_OK && l[0].held && !l[1].held &&
               !l[2].held && !l[3].held,
           "leases_renew: %s (%d %d %d %d)", err.msg, l[0].held, l[1].held, l[2].held, l[3].held);
    EXPECT(s->ops->version_get(s, pid[3], 1, &v, &err) == KP_OK && v.lease_until == now + 120000, "lease not renewed");
    kp_version_clear(&v);
    kp_version *vs = NULL;
    size_t n = 0;
    EXPECT(s->ops->versions_expired(s, now + 90000, 1000, &vs, &n, &err) == KP_OK && version_at(vs, n, pid[3], 1) < 0 &&
               version_at(vs, n, pid[6], 1) >= 0,
           "versions_expired after the renewal: %s", err.msg);
    kp_version_free_array(vs, n);

    /* lease_transfer: only from the owner of a running lease, once; then only the new owner renews it, and
     * recovery sees the new expiry (DynamoDB: the GSI2 sort key moved with it) */
    EXPECT(s->ops->lease_transfer(s, pid[3], 1, "inst_other", "inst_worker", now, now + 200000, &err) == KP_ECONFLICT,
           "a lease taken from its non-owner: %s", err.msg);
    EXPECT(s->ops->lease_transfer(s, pid[6], 1, "inst_me", "inst_worker", now, now + 200000, &err) == KP_ECONFLICT,
           "a lease that ran out was taken: %s", err.msg);
    EXPECT(s->ops->lease_transfer(s, pid[1], 1, "inst_me", "inst_worker", now, now + 200000, &err) == KP_ECONFLICT,
           "the lease of an ended version was taken: %s", err.msg);
    EXPECT(s->ops->lease_transfer(s, "prj_nobody", 1, "inst_me", "inst_worker", now, now + 200000, &err) ==
               KP_ECONFLICT,
           "the lease of no version was taken: %s", err.msg);
    EXPECT(s->ops->lease_transfer(s, pid[3], 1, "inst_me", "", now, now + 200000, &err) == KP_EINVAL,
           "a lease handed to nobody: %s", err.msg);
    EXPECT(s->ops->lease_transfer(s, pid[3], 1, "inst_me", "inst_worker", now, now + 200000, &err) == KP_OK,
           "lease_transfer: %s", err.msg);
    EXPECT(s->ops->version_get(s, pid[3], 1, &v, &err) == KP_OK && strcmp(v.owner, "inst_worker") == 0 &&
               v.lease_until == now + 200000 && v.status == KP_VER_GENERATING,
           "after lease_transfer: %s (owner %s)", err.msg, v.owner);
    kp_version_clear(&v);
    EXPECT(s->ops->lease_transfer(s, pid[3], 1, "inst_me", "inst_again", now, now + 300000, &err) == KP_ECONFLICT,
           "a lease handed over twice: %s", err.msg);
    l[0].held = 1;
    EXPECT(s->ops->leases_renew(s, "inst_me", now, now + 400000, l, 1, &err) == KP_OK && !l[0].held,
           "the former owner renewed a lease handed over: %s", err.msg);
    EXPECT(s->ops->leases_renew(s, "inst_worker", now, now + 210000, l, 1, &err) == KP_OK && l[0].held,
           "the new owner could not renew its lease: %s", err.msg);
    EXPECT(s->ops->versions_expired(s, now + 205000, 1000, &vs, &n, &err) == KP_OK && version_at(vs, n, pid[3], 1) < 0,
           "a lease handed over listed as expired before its new end: %s", err.msg);
    kp_version_free_array(vs, n);
    EXPECT(s->ops->versions_expired(s, now + 215000, 1000, &vs, &n, &err) == KP_OK && version_at(vs, n, pid[3], 1) >= 0,
           "a lease handed over not listed as expired after its end: %s", err.msg);
    kp_version_free_array(vs, n);
    cancel_requests(s, pid[3], pid[1], "inst_worker", now);
    EXPECT(end_one(s, pid[3], 1, KP_VER_FAILED, NULL, NULL, &err) == KP_OK &&
               end_one(s, pid[6], 1, KP_VER_FAILED, NULL, NULL, &err) == KP_OK,
           "end free versions: %s", err.msg);
    EXPECT(generating(s, u.id) == 0, "%lld generating after every end", (long long)generating(s, u.id));
    kp_balance sum = {0};
    EXPECT(s->ops->ledger_sum(s, u.id, &sum, &err) == KP_OK && s->ops->balance_get(s, u.id, &b, &err) == KP_OK &&
               sum.daily == b.daily && b.daily == 1,
           "ledger %lld, balance %lld (expected 1)", (long long)sum.daily, (long long)b.daily);
}

typedef struct racer {
    pthread_t t;
    int i;
    const char *user_id;
    const char *email;
    kp_status rc;
    char msg[sizeof(((kp_err *)0)->msg)];
} racer;

static void *spend_one(void *arg)
{
    racer *r = arg;
    kp_err err = {0};
    char idem[KP_IDEM_MAX];
    kp_store *s = open_store();
    snprintf(idem, sizeof idem, "race:%08x:%d", g_run, r->i);
    kp_credit_change c = change(r->user_id, -1, 0, idem);
    r->rc = s ? s->ops->credits_apply(s, &c, NULL, &err) : KP_EIO;
    snprintf(r->msg, sizeof r->msg, "%s", err.msg);
    if (s)
        s->ops->close(s);
    return NULL;
}

static void *create_one(void *arg)
{
    racer *r = arg;
    kp_err err = {0};
    kp_user u;
    kp_store *s = open_store();
    make_user(&u, 1000 + r->i, "race");
    snprintf(u.email, sizeof u.email, "%s", r->email);
    r->rc = s ? s->ops->user_create(s, &u, &err) : KP_EIO;
    snprintf(r->msg, sizeof r->msg, "%s", err.msg);
    if (s)
        s->ops->close(s);
    return NULL;
}

static int run_racers(racer *rs, int n, void *(*fn)(void *), const char *name)
{
    int ok = 0;
    for (int i = 0; i < n; i++)
        pthread_create(&rs[i].t, NULL, fn, &rs[i]);
    for (int i = 0; i < n; i++)
        pthread_join(rs[i].t, NULL);
    for (int i = 0; i < n; i++) {
        if (rs[i].rc == KP_OK)
            ok++;
        else if (rs[i].rc != KP_ECREDITS && rs[i].rc != KP_ECONFLICT)
            fail("%s #%d: unexpected %s: %s", name, i, kp_status_name(rs[i].rc), rs[i].msg);
    }
    return ok;
}

#define SPENDERS 200
#define CREATORS 20

static void check_race(kp_store *s)
{
    kp_err err = {0};
    kp_user u;
    char idem[KP_IDEM_MAX], email[KP_EMAIL_MAX];
    kp_balance b = {0};
    static racer rs[SPENDERS];
    make_user(&u, 20, "race");
    snprintf(idem, sizeof idem, "race:%08x:grant", g_run);
    kp_credit_change grant = change(u.id, 10, 0, idem);
    EXPECT(s->ops->user_create_credited(s, &u, &grant, &err) == KP_OK, "race user: %s", err.msg);
    for (int i = 0; i < SPENDERS; i++)
        rs[i] = (racer){.i = i, .user_id = u.id};
    int spent = run_racers(rs, SPENDERS, spend_one, "spend");
    figure("spends_ok", spent);
    EXPECT(spent == 10, "%d of %d spends against 10 credits succeeded", spent, SPENDERS);
    EXPECT(s->ops->balance_get(s, u.id, &b, &err) == KP_OK && b.daily == 0, "balance after the race: %lld",
           (long long)b.daily);

    snprintf(email, sizeof email, "same-%08x@example.com", g_run);
    for (int i = 0; i < CREATORS; i++)
        rs[i] = (racer){.i = i, .email = email};
    int created = run_racers(rs, CREATORS, create_one, "create");
    figure("creates_ok", created);
    EXPECT(created == 1, "%d of %d users with one e-mail were created", created, CREATORS);
}

#define ADMITTERS 15
#define ADMIT_LIMIT 4

static void *admit_racer(void *arg)
{
    racer *r = arg;
    kp_err err = {0};
    char pid[KP_ID_MAX], res[KP_ID_MAX];
    kp_store *s = open_store();
    make_id(pid, sizeof pid, "prj", 900 + r->i);
    make_id(res, sizeof res, "res", 900 + r->i);
    /* even: charged 1 credit (the balance's CAS also orders these); odd: free (only the limit stops them) */
    r->rc = s ? admit_one(s, r->user_id, pid, 1, r->i % 2 == 0, ADMIT_LIMIT, res, (int64_t)time(NULL) * 1000 + 60000,
                          NULL, &err)
              : KP_EIO;
    snprintf(r->msg, sizeof r->msg, "%s", err.msg);
    if (s)
        s->ops->close(s);
    return NULL;
}

/* 15 admissions at once (8 charged, 7 free) for one user whose plan allows ADMIT_LIMIT at a time: exactly
 * that many, each charged one charged once. */
static void check_admit_race(kp_store *s)
{
    kp_err err = {0};
    kp_user u;
    char idem[KP_IDEM_MAX];
    kp_balance b = {0}, sum = {0};
    static racer rs[ADMITTERS];
    make_user(&u, 90, "admitrace");
    snprintf(idem, sizeof idem, "admitrace:%08x", g_run);
    kp_credit_change grant = change(u.id, 100, 0, idem);
    EXPECT(s->ops->user_create_credited(s, &u, &grant, &err) == KP_OK, "user: %s", err.msg);
    for (int i = 0; i < ADMITTERS; i++)
        rs[i] = (racer){.i = i, .user_id = u.id};
    for (int i = 0; i < ADMITTERS; i++)
        pthread_create(&rs[i].t, NULL, admit_racer, &rs[i]);
    int ok = 0, charged = 0;
    for (int i = 0; i < ADMITTERS; i++) {
        pthread_join(rs[i].t, NULL);
        ok += rs[i].rc == KP_OK;
        charged += rs[i].rc == KP_OK && i % 2 == 0;
        EXPECT(rs[i].rc == KP_OK || rs[i].rc == KP_ERATE, "admit #%d: %s: %s", i, kp_status_name(rs[i].rc), rs[i].msg);
    }
    figure("admitted", ok);
    EXPECT(ok == ADMIT_LIMIT, "%d of %d admitted with a limit of %d", ok, ADMITTERS, ADMIT_LIMIT);
    EXPECT(generating(s, u.id) == ADMIT_LIMIT, "%lld generating", (long long)generating(s, u.id));
    EXPECT(s->ops->balance_get(s, u.id, &b, &err) == KP_OK && b.daily == 100 - charged,
           "charged %lld times for %d charged admissions", (long long)(100 - b.daily), charged);
    EXPECT(s->ops->ledger_sum(s, u.id, &sum, &err) == KP_OK && sum.daily == b.daily, "ledger sum %lld",
           (long long)sum.daily);
}

int main(int argc, char **argv)
{
    if (argc != 4 || (strcmp(argv[1], "sqlite") != 0 && strcmp(argv[1], "dynamodb") != 0)) {
        fprintf(stderr, "usage: store_contract sqlite|dynamodb PATH|PREFIX CHECK\n");
        return 2;
    }
    g_backend = argv[1];
    g_where = argv[2];
    g_failures = json_array();
    g_figures = json_object();
    g_run = (unsigned)time(NULL) ^ ((unsigned)getpid() << 16);
    const char *check = argv[3];
    char missing[64] = "";
    json_t *definition = NULL;
    if (strcmp(check, "migrate") == 0) {
        check_migrate();
    } else if (strcmp(check, "tables") == 0) {
        char table[256];
        snprintf(table, sizeof table, "%skoumpa", g_where);
        definition = kp_ddb_table_definition(table);
        EXPECT(definition != NULL, "no table definition");
    } else {
        kp_store *s = open_store();
        if (s) {
            if (strcmp(check, "plans") == 0)
                check_plans(s);
            else if (strcmp(check, "users") == 0)
                check_users(s);
            else if (strcmp(check, "verify") == 0)
                check_verify(s);
            else if (strcmp(check, "projects") == 0)
                check_projects(s);
            else if (strcmp(check, "credits") == 0)
                check_credits(s);
            else if (strcmp(check, "events") == 0)
                check_events(s);
            else if (strcmp(check, "bonus") == 0)
                check_bonus(s);
            else if (strcmp(check, "billing") == 0)
                check_billing(s);
            else if (strcmp(check, "race") == 0)
                check_race(s);
            else if (strcmp(check, "recovery") == 0)
                check_recovery(s);
            else if (strcmp(check, "admit") == 0)
                check_admit(s);
            else if (strcmp(check, "admit_race") == 0)
                check_admit_race(s);
            else if (strcmp(check, "missing") == 0)
                snprintf(missing, sizeof missing, "%s", kp_store_missing_op(s->ops));
            else
                fail("unknown check %s", check);
            s->ops->close(s);
        }
    }
    int ok = json_array_size(g_failures) == 0;
    json_t *out = json_pack("{s:s, s:s, s:b, s:o, s:o, s:s}", "check", check, "backend", g_backend, "ok", ok,
                            "failures", g_failures, "figures", g_figures, "missing", missing);
    if (definition)
        json_object_set_new(out, "definition", definition);
    char *text = json_dumps(out, JSON_COMPACT);
    puts(text ? text : "{}");
    free(text);
    json_decref(out);
    return ok ? 0 : 1;
}
