/*
 * router.c - see router.h. Matching is a linear scan of a short static table:
 * with a dozen routes that is cheaper than any tree, and keeps 404 vs 405
 * (same path, other method) trivial to decide.
 */
#include "api/router.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "api/handlers.h"
#include "auth/auth.h"
#include "domain/accounts.h"

int kp_router_match(const char *pattern, const char *path, kp_req *req)
{
    int nparams = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p == '{') {
            const char *close = strchr(p, '}');
            size_t seg = strcspn(s, "/");
            if (!close || seg == 0 || seg >= KP_NAME_MAX || nparams >= KP_MAX_PARAMS)
                return 0;
            if (req) {
                memcpy(req->params[nparams], s, seg);
                req->params[nparams][seg] = '\0';
            }
            nparams++;
            p = close + 1;
            s += seg;
            continue;
        }
        if (*p != *s)
            return 0;
        p++;
        s++;
    }
    if (*p || *s)
        return 0;
    if (req)
        req->nparams = nparams;
    return 1;
}

static int method_is(const char *route_method, const char *method)
{
    return strcmp(route_method, method) == 0 || (strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0);
}

/* Lists the methods the path answers to into allow; returns how many. */
static int allowed_methods(const char *path, char *allow, size_t n)
{
    int count = 0;
    allow[0] = '\0';
    for (const kp_route *r = kp_routes; r->method; r++) {
        if (!kp_router_match(r->pattern, path, NULL))
            continue;
        size_t used = strlen(allow);
        snprintf(allow + used, n - used, "%s%s", count ? ", " : "", r->method);
        if (strcmp(r->method, "GET") == 0) {
            used = strlen(allow);
            snprintf(allow + used, n - used, ", HEAD");
        }
        count++;
    }
    return count;
}

static void unauthorized(kp_resp *resp, const char *why, int token_given)
{
    char header[400], desc[260];
    /* a quoted-string must not hold quotes or backslashes */
    snprintf(desc, sizeof desc, "%s", why);
    for (char *c = desc; *c; c++)
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
            *c = '\'';
    if (token_given)
        snprintf(header, sizeof header, "Bearer realm=\"koumpa\", error=\"invalid_token\", error_description=\"%s\"",
                 desc);
    else
        snprintf(header, sizeof header, "Bearer realm=\"koumpa\"");
    kp_resp_error(resp, 401, "unauthorized", "%s", why);
    kp_headers_set(&resp->headers, "WWW-Authenticate", header);
}

static const char *bearer_token(const kp_req *req)
{
    const char *h = kp_req_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

/* The caller's claims: the ones the host's gateway verified, or the bearer
 * token's, verified here. */
static kp_status caller_claims(kp_ctx *ctx, const char *token, const kp_req *req, kp_claims *claims, kp_err *err)
{
    if (req->verified_claims) {
        *claims = *req->verified_claims;
        return KP_OK;
    }
    return kp_auth_verify(ctx->app->auth, token, claims, err);
}

/* Verifies the bearer token and fills req->principal. On failure fills resp. */
static int authenticate(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    kp_err err = {0};
    kp_claims claims;
    kp_user ext;
    kp_account acct;
    const char *token = bearer_token(req);
    if (!token && !req->verified_claims) {
        unauthorized(resp, "missing bearer token (Authorization: Bearer <token>)", 0);
        return -1;
    }
    kp_status vrc = caller_claims(ctx, token, req, &claims, &err);
    if (vrc == KP_EAUTH) {
        unauthorized(resp, err.msg, 1);
        return -1;
    }
    if (vrc != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return -1;
    }
    kp_status rc = KP_OK;
    const char *user_id = claims.sub;
    if (claims.external) {
        rc = kp_accounts_external_user(ctx->store, ctx->app->cfg->jwt_issuer, claims.sub, claims.email, &ext, &err);
        user_id = ext.id;
    }
    if (rc == KP_OK)
        rc = kp_accounts_account(ctx->store, user_id, &acct, &err);
    if (rc == KP_EAUTH) {
        unauthorized(resp, err.msg, 1);
        return -1;
    }
    if (rc != KP_OK) {
        kp_resp_from_err(resp, &err, req->request_id);
        return -1;
    }
    kp_principal *p = &req->principal;
    const kp_user *user = &acct.user;
    p->authenticated = 1;
    memcpy(p->user_id, user->id, sizeof p->user_id);
    memcpy(p->email, user->email, sizeof p->email);
    p->created_at = user->created_at;
    p->email_verified = user->email_verified;
    p->is_admin = kp_accounts_is_admin(ctx->app->cfg, user) || (claims.external && claims.admin_group);
    p->plan = acct.plan;
    p->balance = acct.balance;
    p->subscription = acct.subscription;
    return 0;
}

const char *const kp_api_default_headers[] = {"Cache-Control", "no-store", "X-Content-Type-Options", "nosniff", NULL};

void kp_router_dispatch(kp_ctx *ctx, kp_req *req, kp_resp *resp)
{
    const kp_route *found = NULL;
    for (const kp_route *r = kp_routes; r->method; r++) {
        if (method_is(r->method, req->method) && kp_router_match(r->pattern, req->path, req)) {
            found = r;
            break;
        }
    }
    if (!found && kp_h_dashboard_file(ctx, req, resp))
        return;
    if (!found) {
        char allow[128];
        if (allowed_methods(req->path, allow, sizeof allow) > 0) {
            req->route = "unmatched";
            kp_resp_error(resp, 405, "method_not_allowed", "%s is not allowed on %s (allowed: %s)", req->method,
                          req->path, allow);
            kp_headers_set(&resp->headers, "Allow", allow);
        } else {
            req->route = "unmatched";
            kp_resp_error(resp, 404, "not_found", "no such endpoint: %s %s", req->method, req->path);
        }
        return;
    }
    req->route = found->pattern;
    /* authentication reads the account as of the loop turn's snapshot; the handler too when it only reads */
    int snapshot = ctx->share_reads && (found->auth != KP_AUTH_NONE || found->snapshot_reads);
    if (snapshot)
        kp_store_snapshot_begin(ctx->store);
    if (found->auth != KP_AUTH_NONE && authenticate(ctx, req, resp) != 0)
        return;
    if (snapshot && !found->snapshot_reads)
        kp_store_snapshot_end(ctx->store);
    if (found->auth == KP_AUTH_ADMIN && !req->principal.is_admin) {
        kp_resp_error(resp, 403, "forbidden", "this endpoint is for admins only");
        return;
    }
    found->handler(ctx, req, resp);
    if (resp->status == 0 && !resp->deferred) /* a deferred response comes later (api/http.h) */
        kp_resp_error(resp, 500, "internal_error", "internal error (request %s)", req->request_id);
}
