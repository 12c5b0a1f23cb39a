# Every route of the API (src/api/routes.c, docs/api/openapi.yaml) -> the function that serves
# it; the same table is in the Lambda host's code (`bootstrap routes --json`), and `make test` checks
# that both agree. It also checks that this map covers
# routes.c exactly but for the routes AWS does not route (tests/terraform/function-permissions.json,
# "not_routed": local sign-up, login and e-mail verification, which Cognito does; /metrics, a
# per-process figure that CloudWatch replaces; /, /config.json and /healthz, the self-hosted server's), and that a route has the authorizer exactly when
# routes.c requires a user (KP_AUTH_USER / KP_AUTH_ADMIN).
locals {
  routes = {
    "GET /v1/plans"     = { function = "get-user", auth = false }
    "GET /v1/me"        = { function = "get-user", auth = true }
    "GET /v1/me/ledger" = { function = "get-user", auth = true }

    "GET /v1/projects"                          = { function = "list-projects", auth = true }
    "GET /v1/projects/{id}"                     = { function = "list-projects", auth = true }
    "GET /v1/projects/{id}/versions/{n}/download" = { function = "list-projects", auth = true }
    "GET /v1/projects/{id}/versions/{n}/file"     = { function = "list-projects", auth = true }

    "POST /v1/projects"                = { function = "generate-app", auth = true }
    "POST /v1/projects/{id}/versions"  = { function = "generate-app", auth = true }
    "POST /v1/projects/{id}/cancel"    = { function = "generate-app", auth = true }
    "DELETE /v1/projects/{id}"         = { function = "generate-app", auth = true }
    "GET /v1/projects/{id}/events"     = { function = "generate-app", auth = true }

    "PUT /v1/admin/plans/{id}"       = { function = "admin-update-plan", auth = true }
    "PUT /v1/admin/users/{id}/plan"  = { function = "admin-update-plan", auth = true }
    "PUT /v1/admin/users/{id}/admin" = { function = "admin-update-plan", auth = true }
    "GET /v1/admin/users"            = { function = "admin-update-plan", auth = true }

    "POST /v1/webhooks/stripe"  = { function = "stripe-webhook", auth = false }
    "POST /v1/billing/checkout" = { function = "stripe-webhook", auth = true }
    "POST /v1/billing/portal"   = { function = "stripe-webhook", auth = true }
  }

  # the functions that serve routes (daily-bonus only runs on its schedule)
  routed_functions = toset([for r in local.routes : r.function])
}

resource "aws_apigatewayv2_integration" "fn" {
  for_each               = local.routed_functions
  api_id                 = aws_apigatewayv2_api.main.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.fn[each.key].invoke_arn
  payload_format_version = "2.0"
  timeout_milliseconds   = 30000
}

resource "aws_apigatewayv2_route" "route" {
  for_each           = local.routes
  api_id             = aws_apigatewayv2_api.main.id
  route_key          = each.key
  target             = "integrations/${aws_apigatewayv2_integration.fn[each.value.function].id}"
  authorization_type = each.value.auth ? "JWT" : "NONE"
  authorizer_id      = each.value.auth ? aws_apigatewayv2_authorizer.cognito.id : null
}

resource "aws_lambda_permission" "api" {
  for_each      = local.routed_functions
  statement_id  = "HttpApiInvoke"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.fn[each.key].function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.main.execution_arn}/*/*"
}
