/*
 * aws_probe.c - a test-only driver of the AWS plumbing (src/aws/): one AWS
 * call per run, made exactly as the DynamoDB, S3 and Secrets Manager clients
 * will make it, printed as one JSON line for tests/integration/aws-plumbing.test.mjs.
 *
 *   aws_probe ddb-list-tables [N]    (N calls in a row, one line each)
 *   aws_probe ddb-create-table NAME
 *   aws_probe sm-create-secret NAME VALUE
 *   aws_probe sm-get-secret NAME
 *   aws_probe s3-create-bucket BUCKET
 *   aws_probe s3-put BUCKET KEY BODY CONTENT_TYPE
 *   aws_probe s3-get BUCKET KEY
 *   aws_probe s3-list BUCKET PREFIX
 *   aws_probe creds N      (gets credentials N times from the chain)
 *   aws_probe creds-parallel N  (N threads get credentials at once from one provider)
 *
 * Configuration is the process environment the real server would read
 * (AWS_REGION, AWS_ENDPOINT_URL*, the credential chain's variables), plus
 * KOUMPA_S3_PATH_STYLE=1; calls share one connection pool unless
 * KOUMPA_PROBE_NO_POOL=1. Output: {"ok", "status", "code", "attempts",
 * "error", "body"} for calls; for creds one object per get with the access
 * key id, source, whether a secret and token came, the expiration, and the
 * provider's fetch count - never the secret itself. Exit status 0 when every
 * step succeeded, 1 otherwise, 2 for bad usage.
 */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/aws_credentials.h"
#include "aws/aws_http.h"
#include "aws/aws_sigv4.h"
#include "core/buf.h"

typedef struct probe {
    kp_aws_client client;
    kp_buf url;
} probe;

static int print_call(kp_status st, const kp_aws_response *resp, const kp_err *err)
{
    json_t *out =
        json_pack("{s:b, s:I, s:s, s:i, s:s, s:s}", "ok", st == KP_OK, "status", (json_int_t)resp->http.status, "code",
                  resp->error_code, "attempts", resp->attempts, "error", st == KP_OK ? "" : err->msg, "body",
                  resp->http.body.data ? resp->http.body.data : "");
    char *s = json_dumps(out, JSON_COMPACT);

    puts(s ? s : "{}");
    free(s);
    json_decref(out);
    return st == KP_OK ? 0 : 1;
}

/* A DynamoDB (JSON 1.0) or Secrets Manager (JSON 1.1) call: POST / with X-Amz-Target. */
static int json_call(probe *p, kp_aws_service svc, const char *target, json_t *body)
{
    const char *ctype = svc == KP_AWS_DYNAMODB ? "application/x-amz-json-1.0" : "application/x-amz-json-1.1";
    kp_aws_header h[] = {{"Content-Type", ctype}, {"X-Amz-Target", target}};
    kp_aws_response resp = {0};
    kp_err err = {0};
    char *text = json_dumps(body, JSON_COMPACT);
    kp_status st;
    int rc;

    kp_buf_reset(&p->url);
    st = kp_aws_endpoint(svc, p->client.region, &p->url, &err);

    json_decref(body);
    if (st == KP_OK && kp_buf_puts(&p->url, "/") != 0)
        st = kp_err_set(&err, KP_ENOMEM, "out of memory");
    if (st == KP_OK) {
        kp_aws_request req = {svc, "POST", p->url.data, h, 2, text, text ? strlen(text) : 0, 0};
        st = kp_aws_call(&p->client, &req, &resp, &err);
    }
    rc = print_call(st, &resp, &err);
    kp_aws_response_free(&resp);
    free(text);
    return rc;
}

static int s3_call(probe *p, const char *method, const char *bucket, const char *key, const char *query,
                   const char *body, const char *ctype)
{
    const char *path_style = getenv("KOUMPA_S3_PATH_STYLE");
    kp_aws_header h[] = {{"Content-Type", ctype}};
    kp_buf endpoint = KP_BUF_INIT;
    kp_aws_response resp = {0};
    kp_err err = {0};
    kp_status st = kp_aws_endpoint(KP_AWS_S3, p->client.region, &endpoint, &err);
    int rc;

    kp_buf_reset(&p->url);
    if (st == KP_OK)
        st = kp_aws_s3_url(endpoint.data, bucket, key, path_style && strcmp(path_style, "1") == 0, &p->url, &err);
    if (st == KP_OK && query && kp_buf_printf(&p->url, "?%s", query) != 0)
        st = kp_err_set(&err, KP_ENOMEM, "out of memory");
    if (st == KP_OK) {
        kp_aws_request req = {KP_AWS_S3, method, p->url.data, h, ctype ? 1 : 0, body, body ? strlen(body) : 0, 0};
        st = kp_aws_call(&p->client, &req, &resp, &err);
    }
    rc = print_call(st, &resp, &err);
    kp_aws_response_free(&resp);
    kp_buf_free(&endpoint);
    return rc;
}

static int s3_list(probe *p, const char *bucket, const char *prefix)
{
    kp_buf query = KP_BUF_INIT;
    int rc;

    /* deliberately out of order: the signer sorts */
    kp_buf_puts(&query, "prefix=");
    kp_aws_sigv4_uri_encode(&query, prefix, strlen(prefix), 0);
    kp_buf_puts(&query, "&list-type=2&encoding-type=url");
    rc = s3_call(p, "GET", bucket, "", query.data, NULL, NULL);
    kp_buf_free(&query);
    return rc;
}

static int creds(probe *p, int n)
{
    int rc = 0;

    for (int i = 0; i < n; i++) {
        kp_aws_credentials c;
        kp_err err = {0};
        kp_status st = kp_aws_credentials_get(p->client.credentials, &c, &err);
        json_t *out =
            json_pack("{s:b, s:s, s:s, s:b, s:b, s:I, s:i, s:s}", "ok", st == KP_OK, "access_key_id", c.access_key_id,
                      "source", c.source, "has_secret", c.secret_access_key[0] != 0, "has_token",
                      c.session_token[0] != 0, "expiration", (json_int_t)c.expiration, "fetches",
                      (int)kp_aws_credentials_fetches(p->client.credentials), "error", st == KP_OK ? "" : err.msg);
        char *s = json_dumps(out, JSON_COMPACT);
        puts(s ? s : "{}");
        free(s);
        json_decref(out);
        kp_aws_credentials_wipe(&c);
        rc |= st != KP_OK;
    }
    return rc;
}

#define MAX_THREADS 32

typedef struct getter {
    kp_aws_credentials_provider *provider;
    pthread_barrier_t *start;
    kp_status st;
    char access_key_id[128];
} getter;

static void *get_once(void *arg)
{
    getter *g = arg;
    kp_aws_credentials c;

    pthread_barrier_wait(g->start);
    g->st = kp_aws_credentials_get(g->provider, &c, NULL);
    memcpy(g->access_key_id, c.access_key_id, sizeof g->access_key_id);
    kp_aws_credentials_wipe(&c);
    return NULL;
}

/* n threads released together: {"ok", "distinct_keys", "fetches"}. */
static int creds_parallel(probe *p, int n)
{
    getter g[MAX_THREADS];
    pthread_t t[MAX_THREADS];
    pthread_barrier_t start;
    int ok = 1, distinct = 0;

    if (n < 1 || n > MAX_THREADS)
        return 2;
    pthread_barrier_init(&start, NULL, (unsigned)n);
    for (int i = 0; i < n; i++) {
        g[i] = (getter){p->client.credentials, &start, KP_OK, ""};
        pthread_create(&t[i], NULL, get_once, &g[i]);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(t[i], NULL);
        ok &= g[i].st == KP_OK;
        int seen = 0;
        for (int j = 0; j < i; j++)
            seen |= strcmp(g[j].access_key_id, g[i].access_key_id) == 0;
        distinct += !seen;
    }
    pthread_barrier_destroy(&start);
    printf("{\"ok\":%s,\"distinct_keys\":%d,\"fetches\":%u}\n", ok ? "true" : "false", distinct,
           kp_aws_credentials_fetches(p->client.credentials));
    return ok ? 0 : 1;
}

static int run(probe *p, int argc, char **argv)
{
    const char *cmd = argv[1];

    if (strcmp(cmd, "ddb-list-tables") == 0 && argc <= 3) {
        int rc = 0;
        for (int i = 0, n = argc == 3 ? atoi(argv[2]) : 1; i < n; i++)
            rc |= json_call(p, KP_AWS_DYNAMODB, "DynamoDB_20120810.ListTables", json_object());
        return rc;
    }
    if (strcmp(cmd, "ddb-create-table") == 0 && argc == 3)
        return json_call(p, KP_AWS_DYNAMODB, "DynamoDB_20120810.CreateTable",
                         json_pack("{s:s, s:[{s:s, s:s}], s:[{s:s, s:s}], s:s}", "TableName", argv[2],
                                   "AttributeDefinitions", "AttributeName", "pk", "AttributeType", "S", "KeySchema",
                                   "AttributeName", "pk", "KeyType", "HASH", "BillingMode", "PAY_PER_REQUEST"));
    if (strcmp(cmd, "sm-create-secret") == 0 && argc == 4)
        return json_call(p, KP_AWS_SECRETS_MANAGER, "secretsmanager.CreateSecret",
                         json_pack("{s:s, s:s}", "Name", argv[2], "SecretString", argv[3]));
    if (strcmp(cmd, "sm-get-secret") == 0 && argc == 3)
        return json_call(p, KP_AWS_SECRETS_MANAGER, "secretsmanager.GetSecretValue",
                         json_pack("{s:s}", "SecretId", argv[2]));
    if (strcmp(cmd, "s3-create-bucket") == 0 && argc == 3)
        return s3_call(p, "PUT", argv[2], "", NULL, NULL, NULL);
    if (strcmp(cmd, "s3-put") == 0 && argc == 6)
        return s3_call(p, "PUT", argv[2], argv[3], NULL, argv[4], argv[5]);
    if (strcmp(cmd, "s3-get") == 0 && argc == 4)
        return s3_call(p, "GET", argv[2], argv[3], NULL, NULL, NULL);
    if (strcmp(cmd, "s3-list") == 0 && argc == 4)
        return s3_list(p, argv[2], argv[3]);
    if (strcmp(cmd, "creds") == 0 && argc == 3)
        return creds(p, atoi(argv[2]));
    if (strcmp(cmd, "creds-parallel") == 0 && argc == 3)
        return creds_parallel(p, atoi(argv[2]));
    fprintf(stderr, "aws_probe: unknown command or wrong arguments (see tests/aws/aws_probe.c)\n");
    return 2;
}

int main(int argc, char **argv)
{
    probe p = {{0}, KP_BUF_INIT};
    kp_err err;
    int rc;

    if (argc < 2) {
        fprintf(stderr, "usage: aws_probe COMMAND [ARGS]\n");
        return 2;
    }
    if (kp_aws_credentials_provider_new(&p.client.credentials, &err) != KP_OK)
        return 1;
    p.client.region = kp_aws_region();
    if (!getenv("KOUMPA_PROBE_NO_POOL") && kp_aws_fetch_pool_new(&p.client.pool, &err) != KP_OK)
        return 1;
    rc = run(&p, argc, argv);
    kp_aws_fetch_pool_free(p.client.pool);
    kp_aws_credentials_provider_free(p.client.credentials);
    kp_buf_free(&p.url);
    return rc;
}
