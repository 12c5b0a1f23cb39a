output "api_url" {
  description = "The HTTP API's base URL"
  value       = aws_apigatewayv2_api.main.api_endpoint
}

output "stripe_webhook_url" {
  description = "Where Stripe sends its events"
  value       = "${aws_apigatewayv2_api.main.api_endpoint}/v1/webhooks/stripe"
}

output "generate_app_stream_url" {
  description = "generate-app's function URL (streamed generations)"
  value       = aws_lambda_function_url.generate_app.function_url
}

output "function_names" {
  description = "Function name => its deployed name"
  value       = { for k, f in aws_lambda_function.fn : k => f.function_name }
}

output "daily_bonus_function_name" {
  description = "daily-bonus's deployed name"
  value       = aws_lambda_function.fn["daily-bonus"].function_name
}

output "daily_bonus_function_arn" {
  description = "daily-bonus's ARN"
  value       = aws_lambda_function.fn["daily-bonus"].arn
}

output "secret_names" {
  description = "The secrets to fill with put-secret-value"
  value       = { for k, s in local.secrets : k => s.name }
}
