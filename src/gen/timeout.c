/*
 * timeout.c - a generation's time limit (see generator.h, "Time limit").
 *
 * A generation may run, from its start to its end, until the earlier of
 *   - its start plus KOUMPA_GENERATION_TIMEOUT_S (the total timeout), and
 *   - the invocation's deadline (kp_gen_request.deadline_ms: a Lambda
 *     invocation's Lambda-Runtime-Deadline-Ms) less KOUMPA_GENERATION_SETTLE_MS,
 *     the time kept to settle it (its files written, its version ended, its
 *     credit committed or refunded) before the function is stopped.
 * One libevent timer per generation, on the loop, armed when the generation
 * starts there and freed with it (gen_destroy); when it fires before the
 * generation has begun to end, the provider call is cancelled and the version
 * fails with KP_CREDITS_TIMED_OUT ("timed_out"), refunded by the credit policy
 * (domain/credits.h). A generation already ending (publishing, failing) is
 * left to end: settling is what the margin is for.
 *
 * A submission whose deadline leaves less than KP_GEN_MIN_RUN_MS to run is
 * refused before anything is written or charged (503 deadline_too_close).
 */
#include <stdio.h>

#include "core/id.h"
#include "core/log.h"
#include "core/loop.h"
#include "gen/gen_internal.h"

#define DEFAULT_TIMEOUT_S 600 /* a kp_config built without the setting (tests): the setting's default */

/* The limit of a generation that starts at now_ms with the invocation's deadline_ms (0: none). Pure. */
static gen_limit limit_for(const kp_config *cfg, int64_t now_ms, int64_t deadline_ms)
{
    long timeout_s = cfg->generation_timeout_s > 0 ? cfg->generation_timeout_s : DEFAULT_TIMEOUT_S;
    gen_limit l = {.at_ms = now_ms + (int64_t)timeout_s * 1000, .by_deadline = 0};
    if (deadline_ms > 0) {
        int64_t settle_ms = cfg->generation_settle_ms > 0 ? cfg->generation_settle_ms : 0;
        if (deadline_ms - settle_ms < l.at_ms) {
            l.at_ms = deadline_ms - settle_ms;
            l.by_deadline = 1;
        }
    }
    return l;
}

void gen_timeout_init(generation *gen, const kp_gen_request *r)
{
    gen->limit = limit_for(gen->g->opt.cfg, kp_time_now_ms(), r->deadline_ms);
}

int gen_timeout_refuses(kp_gen *g, const kp_gen_request *r, kp_gen_result *res, kp_err *err)
{
    int64_t now = kp_time_now_ms();
    gen_limit l = limit_for(g->opt.cfg, now, r->deadline_ms);
    if (l.at_ms - now >= KP_GEN_MIN_RUN_MS)
        return 0;
    res->error_code = "deadline_too_close";
    kp_err_set(err, KP_EUNAVAILABLE,
               "the function's invocation ends in %lld ms: too little time to generate (%ld ms are kept to "
               "settle a generation, KOUMPA_GENERATION_SETTLE_MS, and it needs at least %d ms to run); retry",
               (long long)(r->deadline_ms - now), g->opt.cfg->generation_settle_ms, KP_GEN_MIN_RUN_MS);
    return 1;
}

static void on_limit(evutil_socket_t fd, short what, void *arg)
{
    generation *gen = arg;
    const kp_config *cfg = gen->g->opt.cfg;
    char message[256];
    (void)fd;
    (void)what;
    if (gen->ending || gen->storing)
        return; /* already on its way to its end */
    if (gen->limit.by_deadline)
        snprintf(message, sizeof message,
                 "the generation reached the end of the function's invocation (its deadline, less %ld ms kept to "
                 "settle it)",
                 cfg->generation_settle_ms);
    else
        snprintf(message, sizeof message, "the generation ran for longer than its limit of %ld s",
                 cfg->generation_timeout_s > 0 ? cfg->generation_timeout_s : DEFAULT_TIMEOUT_S);
    kp_log_json(KP_LOG_WARN, "generation timed out",
                json_pack("{s:s,s:I,s:b}", "project_id", gen->project_id, "version", (json_int_t)gen->n, "by_deadline",
                          gen->limit.by_deadline));
    gen_fail(gen, KP_CREDITS_TIMED_OUT, message);
}

int gen_timeout_start(generation *gen)
{
    int64_t left = gen->limit.at_ms - kp_time_now_ms();
    struct timeval tv = gen_ms_to_tv(left > 0 ? (long)left : 0);
    gen->limit_timer = evtimer_new(kp_loop_base(gen->g->opt.loop), on_limit, gen);
    return gen->limit_timer && evtimer_add(gen->limit_timer, &tv) == 0 ? 0 : -1;
}

void gen_timeout_free(generation *gen)
{
    if (gen->limit_timer)
        event_free(gen->limit_timer);
    gen->limit_timer = NULL;
}
