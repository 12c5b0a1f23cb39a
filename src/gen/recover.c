/*
 * recover.c - recovery of what a stopped instance left: versions generating
 * whose lease ran out are failed "interrupted" and refunded (exactly once,
 * also with two recoverers at once: the ending is a write conditional on the
 * version still generating, and a loser sees KP_ECONFLICT and moves on);
 * versions finished but unsettled and reservations without a version (both
 * only left by older builds) are settled. None of it touches a version whose
 * lease still runs: a live instance's generations and rows are its own.
 */
#include "gen/generator.h"

#include <stdio.h>
#include <string.h>

#include "core/id.h"
#include "core/log.h"
#include "gen/gen_internal.h"

#define EXPIRED_BATCH 100
#define EXPIRED_ROUNDS 1000 /* at most 100,000 versions a call; the next run takes the rest */

/* ---- recovery ---- */

#define INTERRUPTED_MESSAGE "the server stopped while this version was generating"

/* A version whose lease ran out (its instance stopped): failed
 * "interrupted", its credit settled by the policy (refunded), then its
 * partial files removed. KP_ECONFLICT when another instance ended it first
 * (its owner, late, or another recoverer): then its files are left alone —
 * they may be a published version's. */
static kp_status recover_generating(kp_store *s, kp_blob *blob, const kp_version *v, kp_err *err)
{
    char prefix[KP_BLOB_KEY_MAX];
    kp_version f;
    int64_t cost = 0;
    kp_reservation r;
    if (v->reservation_id[0] && s->ops->reservation_get(s, v->reservation_id, &r, err) == KP_OK)
        cost = r.daily + r.monthly;
    kp_err_clear(err);
    memset(&f, 0, sizeof f);
    gen_copy_str(f.project_id, sizeof f.project_id, v->project_id);
    f.n = v->n;
    f.status = KP_VER_FAILED;
    gen_copy_str(f.error_code, sizeof f.error_code, "interrupted");
    f.error_message = INTERRUPTED_MESSAGE;
    f.updated_at = kp_time_now_ms();
    failure_note note = {.next_event_id = 1, .code = "interrupted", .message = INTERRUPTED_MESSAGE, .cost = cost};
    kp_failed_generation failed = {.res_id = v->reservation_id, .code = "interrupted"};
    kp_status rc = kp_credits_end_failed(s, &gen_fallback_policy, &failed, &f, gen_describe_failure, &note, NULL, err);
    json_decref(note.data);
    free(f.events_json);
    if (rc == KP_OK && blob) { /* best effort: partial files of a publish cut short */
        kp_err ignored = {0};
        snprintf(prefix, sizeof prefix, "apps/%s/v%lld/", v->project_id, (long long)v->n);
        blob->ops->delete_prefix(blob, prefix, &ignored);
    }
    if (rc == KP_OK)
        kp_log_json(KP_LOG_INFO, "recovered a generation whose lease ran out",
                    json_pack("{s:s,s:I,s:s}", "project_id", v->project_id, "version", (json_int_t)v->n, "owner",
                              v->owner[0] ? v->owner : "(none)"));
    return rc;
}

/* Ends every version whose lease ran out before now; *done counts those this call ended. */
static kp_status recover_expired(kp_store *s, kp_blob *blob, size_t *done, kp_err *err)
{
    int64_t now = kp_time_now_ms();
    kp_status rc = KP_OK;
    for (int round = 0; round < EXPIRED_ROUNDS && rc == KP_OK; round++) {
        kp_version *vs = NULL;
        size_t n = 0, ended = 0;
        rc = s->ops->versions_expired(s, now, EXPIRED_BATCH, &vs, &n, err);
        for (size_t i = 0; i < n && rc == KP_OK; i++) {
            rc = recover_generating(s, blob, &vs[i], err);
            if (rc == KP_ECONFLICT) { /* ended by another instance meanwhile: it leaves the list too */
                kp_err_clear(err);
                rc = KP_OK;
                continue;
            }
            ended += rc == KP_OK;
        }
        kp_version_free_array(vs, n);
        *done += ended;
        if (n < EXPIRED_BATCH)
            break;
    }
    return rc;
}

/* Finished but unsettled: only left by builds that ended a version and
 * settled it in two steps, when every failure was refunded. Commit, refund
 * and settled are idempotent, so two recoverers at once are harmless. */
static kp_status recover_unsettled(kp_store *s, const kp_version *v, kp_err *err)
{
    kp_status rc = KP_OK;
    const char *res = v->reservation_id;
    if (v->status == KP_VER_READY && res[0])
        rc = kp_credits_commit(s, res, err);
    else if (res[0])
        rc = kp_credits_refund(s, res, NULL, NULL, err);
    if (rc == KP_ECONFLICT) {
        /* the reservation already ended the other way: nothing left to move */
        kp_log_json(KP_LOG_WARN, "recovery found a reservation already ended",
                    json_pack("{s:s,s:I,s:s,s:s}", "project_id", v->project_id, "version", (json_int_t)v->n,
                              "reservation_id", res, "detail", err->msg));
        kp_err_clear(err);
        rc = KP_OK;
    }
    if (rc == KP_OK)
        rc = s->ops->version_set_settled(s, v->project_id, v->n, err);
    return rc;
}

kp_status kp_gen_recover(kp_store *s, kp_blob *blob, size_t *repaired, kp_err *err)
{
    kp_version *vs = NULL;
    size_t n = 0, done = 0;
    if (repaired)
        *repaired = 0;
    kp_status rc = recover_expired(s, blob, &done, err);
    if (rc == KP_OK)
        rc = s->ops->versions_unsettled(s, &vs, &n, err);
    for (size_t i = 0; i < n && rc == KP_OK; i++) {
        rc = recover_unsettled(s, &vs[i], err);
        if (rc == KP_OK)
            done++;
    }
    size_t orphans = 0;
    if (rc == KP_OK) /* reservations without a version (an admission cut short by an older build) */
        rc = kp_credits_refund_orphans(s, &orphans, err);
    if (orphans > 0)
        kp_log_json(KP_LOG_INFO, "refunded reservations without a version",
                    json_pack("{s:I}", "reservations", (json_int_t)orphans));
    if (done > 0)
        kp_log_json(KP_LOG_INFO, "recovered versions", json_pack("{s:I}", "versions", (json_int_t)done));
    kp_version_free_array(vs, n);
    if (repaired)
        *repaired = done;
    return rc;
}
