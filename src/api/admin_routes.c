/* admin_routes.c - what admins change: plans, which plan a user is on, and who is an admin. */
#include <string.h>

#include "api/handlers.h"
#include "domain/accounts.h"
#include "domain/plans.h"

void kp_h_admin_plan_put(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    json_t *body = NULL;
    kp_plan plan;
    int created = 0;
    kp_err err = {0};
    if (kp_req_json_body(req, resp, &body) != 0)
        return;
    if (kp_plans_put(ctx->store, req->params[0], body, &plan, &created, &err) != KP_OK)
        kp_resp_from_err(resp, &err, req->request_id);
    else
        kp_resp_json(resp, created ? 201 : 200, kp_plans_to_json(&plan));
    json_decref(body);
}

json_t *kp_h_user_json(const kp_config *cfg, const kp_user *u)
{
    return json_pack("{s:s,s:s,s:b,s:b,s:s,s:o}", "id", u->id, "email", u->email, "email_verified", u->email_verified,
                     "is_admin", kp_accounts_is_admin(cfg, u), "plan_id", u->plan_id, "created_at",
                     kp_h_time_json(u->created_at));
}

void kp_h_admin_user_plan_put(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    json_t *body = NULL;
    kp_user u;
    kp_err err = {0};
    if (kp_req_json_body(req, resp, &body) != 0)
        return;
    json_t *plan_id = json_object_get(body, "plan_id");
    if (!json_is_string(plan_id)) {
        kp_resp_error(resp, 400, "invalid_request", "plan_id is required and must be a string");
    } else if (kp_accounts_set_plan(ctx->store, req->params[0], json_string_value(plan_id), &err) != KP_OK ||
               ctx->store->ops->user_get(ctx->store, req->params[0], &u, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
    } else {
        kp_resp_json(resp, 200, kp_h_user_json(ctx->app->cfg, &u));
    }
    json_decref(body);
}

void kp_h_admin_user_admin_put(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    json_t *body = NULL;
    kp_user u;
    kp_err err = {0};
    if (kp_req_json_body(req, resp, &body) != 0)
        return;
    json_t *is_admin = json_object_get(body, "is_admin");
    if (!json_is_boolean(is_admin))
        kp_resp_error(resp, 400, "invalid_request", "is_admin is required and must be true or false");
    else if (kp_accounts_set_admin_by_id(ctx->store, ctx->app->cfg, req->principal.user_id, req->params[0],
                                         json_is_true(is_admin), &u, &err) != KP_OK)
        kp_resp_from_err(resp, &err, req->request_id);
    else
        kp_resp_json(resp, 200, kp_h_user_json(ctx->app->cfg, &u));
    json_decref(body);
}

void kp_h_admin_users_find(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    const char *email = kp_req_query(req, "email");
    char norm[KP_EMAIL_MAX];
    kp_user u;
    kp_err err = {0};
    if (!email) {
        kp_resp_error(resp, 400, "invalid_request", "the email query parameter is required");
        return;
    }
    if (kp_accounts_normalise_email(email, norm, &err) != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    kp_status rc = ctx->store->ops->user_get_by_email(ctx->store, norm, &u, &err);
    if (rc == KP_ENOTFOUND) {
        kp_resp_json(resp, 200, json_pack("{s:[]}", "users"));
        return;
    }
    if (rc != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return;
    }
    kp_resp_json(resp, 200, json_pack("{s:[o]}", "users", kp_h_user_json(ctx->app->cfg, &u)));
}
