# api - Koumpa's API on AWS: an HTTP API (API Gateway v2) whose routes (routes.tf) go to six
# Lambda functions (lambdas.tf), all running the same `bootstrap` of the C code
# (src/host/lambda/, built by scripts/build-lambda.sh), which dispatches on the handler name.
#
# This file: the HTTP API, its Cognito JWT authorizer, the $default stage with access logs, the
# alarm on the API's 5xx, and the Secrets Manager secrets the functions read (KOUMPA_SECRETS=aws,
# src/secrets/secrets_aws.c). Terraform creates the secrets by name only and never holds a
# value: they are set with `aws secretsmanager put-secret-value` (README, "Deploy to AWS").

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

# The dashboard's origin (its URL without the path) and any more the environment gives.
locals {
  cors_allow_origins = distinct(concat(var.cors_allow_origins, var.dashboard_url != "" ? [regex("^https?://[^/]+", var.dashboard_url)] : []))
}

resource "aws_apigatewayv2_api" "main" {
  name          = "${var.name_prefix}-api"
  protocol_type = "HTTP"
  description   = "Koumpa API (docs/api/openapi.yaml)"

  cors_configuration {
    allow_origins  = local.cors_allow_origins
    allow_methods  = ["GET", "POST", "PUT", "DELETE", "OPTIONS"]
    allow_headers  = ["authorization", "content-type", "idempotency-key", "last-event-id"]
    expose_headers = ["retry-after", "x-request-id"]
    max_age        = 3600
  }

  tags = var.tags
}

# The user pool's tokens (id tokens: aud; access tokens: client_id). Admin routes are further
# checked by the functions (the `admin` group in cognito:groups).
resource "aws_apigatewayv2_authorizer" "cognito" {
  api_id           = aws_apigatewayv2_api.main.id
  name             = "cognito"
  authorizer_type  = "JWT"
  identity_sources = ["$request.header.Authorization"]

  jwt_configuration {
    issuer   = var.jwt_issuer
    audience = [var.jwt_audience]
  }
}

resource "aws_cloudwatch_log_group" "api_access" {
  name              = "/aws/apigateway/${var.name_prefix}-api"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.main.id
  name        = "$default"
  auto_deploy = true

  default_route_settings {
    throttling_rate_limit  = var.throttling_rate_limit
    throttling_burst_limit = var.throttling_burst_limit
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId      = "$context.requestId"
      routeKey       = "$context.routeKey"
      status         = "$context.status"
      latencyMs      = "$context.responseLatency"
      integrationErr = "$context.integrationErrorMessage"
      authorizerErr  = "$context.authorizer.error"
      sourceIp       = "$context.identity.sourceIp"
    })
  }

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "api_5xx" {
  alarm_name          = "${var.name_prefix}-api-5xx"
  alarm_description   = "The HTTP API answered 5xx"
  namespace           = "AWS/ApiGateway"
  metric_name         = "5xx"
  dimensions          = { ApiId = aws_apigatewayv2_api.main.id, Stage = aws_apigatewayv2_stage.default.name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = var.alarm_5xx_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}

# The secrets, by name (src/secrets/secrets_aws.h says what each holds):
#   anthropic  ANTHROPIC_API_KEY (plain text, or {"api_key": ...})
#   stripe     {"STRIPE_SECRET_KEY": ..., "STRIPE_WEBHOOK_SECRET": ...}
#   jwt        KOUMPA_JWT_SECRET (plain text, >= 32 characters)
locals {
  secret_specs = {
    anthropic = { env = "KOUMPA_SECRET_ID_ANTHROPIC", holds = "ANTHROPIC_API_KEY" }
    stripe    = { env = "KOUMPA_SECRET_ID_STRIPE", holds = "STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET" }
    jwt       = { env = "KOUMPA_SECRET_ID_JWT", holds = "KOUMPA_JWT_SECRET" }
  }
}

resource "aws_secretsmanager_secret" "koumpa" {
  for_each                = local.secret_specs
  name                    = "${var.name_prefix}/${each.key}"
  description             = "Koumpa: ${each.value.holds} (${each.value.env})"
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = var.tags
}
