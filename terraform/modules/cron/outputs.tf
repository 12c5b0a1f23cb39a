output "rule_name" {
  description = "The EventBridge rule"
  value       = aws_cloudwatch_event_rule.daily_bonus.name
}
