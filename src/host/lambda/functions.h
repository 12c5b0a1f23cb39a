/*
 * functions.h - the six Lambda functions Koumpa deploys and which API route
 * each one serves: THE one table of it (terraform/modules/api/routes.tf
 * must equal it; `bootstrap routes --json` prints it for that check).
 *
 * A function is picked by name (_HANDLER). An HTTP event whose method and
 * path no route of the invoked function matches is answered 404 by the host
 * (lambda_host.c), naming the function that owns it. daily-bonus serves no
 * route: EventBridge invokes it on a schedule.
 *
 * Routes of the self-hosted server that no function serves on AWS (Cognito
 * is the identity provider there): /, /healthz, /metrics, local sign-up,
 * login and e-mail verification (kp_lambda_not_routed lists them).
 */
#ifndef KP_LAMBDA_FUNCTIONS_H
#define KP_LAMBDA_FUNCTIONS_H

#include <jansson.h>

typedef struct kp_lambda_route {
    const char *function; /* "get-user", ... */
    const char *method;
    const char *pattern; /* as in the router's table (api/routes.c) and the API Gateway route key */
} kp_lambda_route;

/* Every routed (function, method, pattern), terminated by a zeroed entry. */
extern const kp_lambda_route kp_lambda_routes[];
/* The router's routes not served on AWS: method, pattern, ..., NULL. */
extern const char *const kp_lambda_not_routed[];
/* The six function names, NULL-terminated. */
extern const char *const kp_lambda_function_names[];

/* 1 when name is one of the six functions. */
int kp_lambda_function_known(const char *name);
/* The function that serves method + path (HEAD counts as GET), or NULL. */
const char *kp_lambda_route_owner(const char *method, const char *path);
/* The table as JSON: [{"function","method","path","route_key"}, ...] (new reference). */
json_t *kp_lambda_routes_json(void);

#endif
