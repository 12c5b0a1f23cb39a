# cron/recovery - every few minutes, daily-bonus recovers the generations whose lease ran out (a
# worker invocation killed at its deadline, an environment that died): each is failed
# `interrupted` and refunded once, and stops holding its user's limit of generations at a time.
# The target's constant input {"koumpa":"recover"} replaces the scheduled event, so daily-bonus
# runs the recovery alone, not the bonus (src/host/lambda/lambda_host.c).

resource "aws_cloudwatch_event_rule" "recovery" {
  name                = "${var.name_prefix}-recovery"
  description         = "Koumpa: recovery of generations whose lease ran out"
  schedule_expression = var.recovery_schedule
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "recovery" {
  rule      = aws_cloudwatch_event_rule.recovery.name
  target_id = "recovery"
  arn       = var.function_arn
  input     = jsonencode({ koumpa = "recover" })

  retry_policy {
    maximum_retry_attempts       = 0
    maximum_event_age_in_seconds = 300
  }
}

resource "aws_lambda_permission" "recovery" {
  statement_id  = "EventBridgeRecovery"
  action        = "lambda:InvokeFunction"
  function_name = var.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.recovery.arn
}
