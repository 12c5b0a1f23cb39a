# cron - daily-bonus at 00:00 UTC every day (EventBridge): it credits the daily bonus and
# recovers the generations whose lease expired (src/domain/bonus_scheduler.c does both for the
# self-hosted server; on AWS KOUMPA_DAILY_BONUS_SCHEDULER=0 and this rule does it).

resource "aws_cloudwatch_event_rule" "daily_bonus" {
  name                = "${var.name_prefix}-daily-bonus"
  description         = "Koumpa daily bonus and lease recovery, 00:00 UTC"
  schedule_expression = "cron(0 0 * * ? *)"
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "daily_bonus" {
  rule      = aws_cloudwatch_event_rule.daily_bonus.name
  target_id = "daily-bonus"
  arn       = var.function_arn

  retry_policy {
    maximum_retry_attempts       = 2
    maximum_event_age_in_seconds = 3600
  }
}

resource "aws_lambda_permission" "events" {
  statement_id  = "EventBridgeDailyBonus"
  action        = "lambda:InvokeFunction"
  function_name = var.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.daily_bonus.arn
}
