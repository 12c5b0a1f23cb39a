# The six functions: one `bootstrap` (provided.al2023) whose handler is the function's name,
# each with its own role allowing exactly the AWS calls its code makes, its log group, alarms on
# its Errors and Throttles; and generate-app's function URL, which streams a generation (SSE)
# past API Gateway's 30 s and checks the Cognito token itself.

locals {
  # KOUMPA_PUBLIC_URL is where the API sends people back: Stripe Checkout's and the billing portal's
  # return URLs ({public}/?checkout=success&session_id=...#/billing, src/api/billing_routes.c) and
  # the e-mail verification link's default ({public}/verify): the dashboard, not the API.
  public_url = var.dashboard_url != "" ? trimsuffix(var.dashboard_url, "/") : aws_apigatewayv2_api.main.api_endpoint

  functions = {
    "generate-app"      = { memory_mb = var.generate_app_memory_mb, timeout_s = var.generate_app_timeout_s }
    "stripe-webhook"    = { memory_mb = 256, timeout_s = 30 }
    "daily-bonus"       = { memory_mb = 512, timeout_s = 900 }
    "get-user"          = { memory_mb = 256, timeout_s = 30 }
    "list-projects"     = { memory_mb = 512, timeout_s = 30 }
    "admin-update-plan" = { memory_mb = 256, timeout_s = 30 }
  }

  # What each function's code calls, and nothing more. The same lists, with the reasons, are
  # tests/terraform/function-permissions.json; `make test` checks this map against it and it
  # against the calls in src/ (DynamoDB operations, S3 requests, Secrets Manager, Lambda Invoke).
  # DynamoDB actions apply to the table and its indexes; s3_bucket to the bucket (HeadBucket and
  # ListObjectsV2 are s3:ListBucket), s3_objects to apps/*; secrets name the secrets read.
  permissions = {
    "generate-app" = {
      dynamodb    = ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:TransactWriteItems", "dynamodb:UpdateItem"]
      s3_bucket   = ["s3:ListBucket"]
      s3_objects  = ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
      secrets     = ["anthropic", "jwt"]
      invoke_self = true
    }
    "stripe-webhook" = {
      dynamodb    = ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:TransactWriteItems", "dynamodb:UpdateItem"]
      s3_bucket   = ["s3:ListBucket"]
      s3_objects  = []
      secrets     = ["jwt", "stripe"]
      invoke_self = false
    }
    "daily-bonus" = {
      dynamodb    = ["dynamodb:BatchGetItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:TransactWriteItems", "dynamodb:UpdateItem"]
      s3_bucket   = ["s3:ListBucket"]
      s3_objects  = ["s3:DeleteObject"]
      secrets     = []
      invoke_self = false
    }
    "get-user" = {
      dynamodb    = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:TransactWriteItems", "dynamodb:UpdateItem"]
      s3_bucket   = ["s3:ListBucket"]
      s3_objects  = []
      secrets     = ["jwt"]
      invoke_self = false
    }
    "list-projects" = {
      dynamodb    = ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:TransactWriteItems", "dynamodb:UpdateItem"]
      s3_bucket   = ["s3:ListBucket"]
      s3_objects  = ["s3:GetObject"]
      secrets     = ["jwt"]
      invoke_self = false
    }
    "admin-update-plan" = {
      dynamodb    = ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:TransactWriteItems", "dynamodb:UpdateItem"]
      s3_bucket   = ["s3:ListBucket"]
      s3_objects  = []
      secrets     = ["jwt"]
      invoke_self = false
    }
  }

  secrets = {
    for k, s in aws_secretsmanager_secret.koumpa : k => { arn = s.arn, name = s.name, env = local.secret_specs[k].env }
  }

  # built from names, not from the functions, so that a function's policy can name itself
  function_arns = {
    for name, f in local.functions :
    name => "arn:${data.aws_partition.current.partition}:lambda:${data.aws_region.current.region}:${data.aws_caller_identity.current.account_id}:function:${var.name_prefix}-${name}"
  }

  # Every function's settings (README, "Configuration"); a function's secret ids are added below.
  common_environment = merge(var.extra_environment, {
    KOUMPA_DB                    = "dynamodb"
    KOUMPA_DYNAMODB_TABLE_PREFIX = var.table_prefix
    KOUMPA_STORAGE               = "s3"
    KOUMPA_S3_BUCKET             = var.bucket_name
    KOUMPA_SECRETS               = "aws"
    KOUMPA_JWT_ISSUER            = var.jwt_issuer
    KOUMPA_JWT_AUDIENCE          = var.jwt_audience
    KOUMPA_JWKS_URL              = var.jwks_url
    KOUMPA_APPS_URL              = var.apps_url
    KOUMPA_PUBLIC_URL            = local.public_url
    KOUMPA_DATA_DIR              = "/tmp/koumpa"
    KOUMPA_DAILY_BONUS_SCHEDULER = "0"
  })
}

data "aws_iam_policy_document" "assume_lambda" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "fn" {
  for_each           = local.functions
  name               = "${var.name_prefix}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.assume_lambda.json
  tags               = var.tags
}

data "aws_iam_policy_document" "fn" {
  for_each = local.functions

  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.fn[each.key].arn}:*"]
  }

  statement {
    sid       = "Table"
    actions   = local.permissions[each.key].dynamodb
    resources = [var.table_arn, "${var.table_arn}/index/*"]
  }

  dynamic "statement" {
    for_each = length(local.permissions[each.key].s3_bucket) > 0 ? [1] : []
    content {
      sid       = "AppsBucket"
      actions   = local.permissions[each.key].s3_bucket
      resources = [var.bucket_arn]
    }
  }

  dynamic "statement" {
    for_each = length(local.permissions[each.key].s3_objects) > 0 ? [1] : []
    content {
      sid       = "AppsFiles"
      actions   = local.permissions[each.key].s3_objects
      resources = ["${var.bucket_arn}/apps/*"]
    }
  }

  dynamic "statement" {
    for_each = length(local.permissions[each.key].secrets) > 0 ? [1] : []
    content {
      sid       = "Secrets"
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [for s in local.permissions[each.key].secrets : local.secrets[s].arn]
    }
  }

  dynamic "statement" {
    for_each = local.permissions[each.key].invoke_self ? [1] : []
    content {
      sid       = "InvokeSelf"
      actions   = ["lambda:InvokeFunction"]
      resources = [local.function_arns[each.key]]
    }
  }
}

resource "aws_iam_role_policy" "fn" {
  for_each = local.functions
  name     = "least-privilege"
  role     = aws_iam_role.fn[each.key].id
  policy   = data.aws_iam_policy_document.fn[each.key].json
}

resource "aws_cloudwatch_log_group" "fn" {
  for_each          = local.functions
  name              = "/aws/lambda/${var.name_prefix}-${each.key}"
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_lambda_function" "fn" {
  for_each = local.functions

  function_name    = "${var.name_prefix}-${each.key}"
  description      = "Koumpa ${each.key}"
  role             = aws_iam_role.fn[each.key].arn
  runtime          = "provided.al2023"
  handler          = each.key
  architectures    = [var.architecture]
  filename         = "${var.lambda_build_dir}/${each.key}/function.zip"
  source_code_hash = filebase64sha256("${var.lambda_build_dir}/${each.key}/function.zip")
  memory_size      = each.value.memory_mb
  timeout          = each.value.timeout_s

  environment {
    variables = merge(local.common_environment, {
      for s in local.permissions[each.key].secrets : local.secrets[s].env => local.secrets[s].name
    })
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.fn[each.key].name
  }

  tags       = var.tags
  depends_on = [aws_iam_role_policy.fn]
}

# generate-app's asynchronous self-invocation starts one generation: never run it twice.
resource "aws_lambda_function_event_invoke_config" "generate_app" {
  function_name                = aws_lambda_function.fn["generate-app"].function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 60
}

# The streaming path: POST/GET on the URL, SSE out. Auth NONE: the function verifies the
# Cognito token itself (KOUMPA_JWT_ISSUER/AUDIENCE, KOUMPA_JWKS_URL).
resource "aws_lambda_function_url" "generate_app" {
  function_name      = aws_lambda_function.fn["generate-app"].function_name
  authorization_type = "NONE"
  invoke_mode        = "RESPONSE_STREAM"

  cors {
    allow_origins  = local.cors_allow_origins
    allow_methods  = ["GET", "POST", "DELETE"]
    allow_headers  = ["authorization", "content-type", "idempotency-key", "last-event-id"]
    expose_headers = ["retry-after", "x-request-id"]
    max_age        = 3600
  }
}

resource "aws_lambda_permission" "generate_app_url" {
  statement_id           = "FunctionUrlNoIamAuth"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = aws_lambda_function.fn["generate-app"].function_name
  principal              = "*"
  function_url_auth_type = "NONE"
}

# Each function's Errors and Throttles (AWS/Lambda), summed over 5 minutes.
resource "aws_cloudwatch_metric_alarm" "fn" {
  for_each = {
    for pair in setproduct(keys(local.functions), ["Errors", "Throttles"]) :
    "${pair[0]}-${lower(pair[1])}" => { function = pair[0], metric = pair[1] }
  }
  alarm_name          = "${var.name_prefix}-${each.key}"
  alarm_description   = "${each.value.function}: ${each.value.metric}"
  namespace           = "AWS/Lambda"
  metric_name         = each.value.metric
  dimensions          = { FunctionName = aws_lambda_function.fn[each.value.function].function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = each.value.metric == "Errors" ? var.alarm_errors_threshold : var.alarm_throttles_threshold
  comparison_operator = "GreaterThanOrEqualToThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}
