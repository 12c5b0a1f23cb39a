/* plans_routes.c - the public list of plans. */
#include <stdlib.h>

#include "api/handlers.h"
#include "domain/plans.h"

void kp_h_plans_list(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_plan *plans = NULL;
    size_t n = 0;
    kp_err err = {0};
    if (ctx->store->ops->plan_list(ctx->store, 1, &plans, &n, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    json_t *items = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(items, kp_plans_to_json(&plans[i]));
    free(plans);
    kp_resp_json(resp, 200, json_pack("{s:o}", "plans", items));
}
