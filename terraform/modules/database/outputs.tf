output "table_name" {
  description = "The table's name"
  value       = aws_dynamodb_table.main.name
}

output "table_arn" {
  description = "The table's ARN (its indexes are TABLE_ARN/index/*)"
  value       = aws_dynamodb_table.main.arn
}

output "table_prefix" {
  description = "What the functions get as KOUMPA_DYNAMODB_TABLE_PREFIX"
  value       = var.table_prefix
}
