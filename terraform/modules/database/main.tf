# database - Koumpa's one DynamoDB table and its three base plans.
#
# The table is exactly the code's definition, kp_ddb_table_definition() in
# src/store/dynamodb/ddb_tables.c (`build/tests/store_contract dynamodb PREFIX tables`
# prints it; `make test` compares the two): generic keys PK/SK, GSI1 (a user's
# projects, newest first; all attributes) and GSI2 (generating versions by lease
# expiry, for recovery; keys only), on-demand billing. docs/ARCHITECTURE.md,
# "DynamoDB data model", says which item uses which key.
#
# The plans are the items `koumpa migrate` seeds (ddb_tables.c seed_plans(), the
# same rows as SQLite's migration 1): created once, then owned by the admins
# (PUT /v1/admin/plans/{id}), so Terraform ignores later changes to them.

resource "aws_dynamodb_table" "main" {
  name         = "${var.table_prefix}koumpa"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "PK"
  range_key    = "SK"

  attribute {
    name = "PK"
    type = "S"
  }
  attribute {
    name = "SK"
    type = "S"
  }
  attribute {
    name = "GSI1PK"
    type = "S"
  }
  attribute {
    name = "GSI1SK"
    type = "S"
  }
  attribute {
    name = "GSI2PK"
    type = "S"
  }
  attribute {
    name = "GSI2SK"
    type = "S"
  }

  global_secondary_index {
    name            = "GSI1"
    hash_key        = "GSI1PK"
    range_key       = "GSI1SK"
    projection_type = "ALL"
  }
  global_secondary_index {
    name            = "GSI2"
    hash_key        = "GSI2PK"
    range_key       = "GSI2SK"
    projection_type = "KEYS_ONLY"
  }

  point_in_time_recovery {
    enabled = true
  }
  server_side_encryption {
    enabled = true
  }
  deletion_protection_enabled = var.deletion_protection

  tags = var.tags
}

locals {
  # id => the plan, as seed_plans() in src/store/dynamodb/ddb_tables.c writes it
  base_plans = {
    free = {
      name                       = "Free"
      price_cents                = 0
      currency                   = "EUR"
      monthly_credits            = 0
      daily_bonus                = 5
      max_concurrent_generations = 1
    }
    pro = {
      name                       = "Pro"
      price_cents                = 2500
      currency                   = "EUR"
      monthly_credits            = 100
      daily_bonus                = 5
      max_concurrent_generations = 3
    }
    business = {
      name                       = "Business"
      price_cents                = 5000
      currency                   = "EUR"
      monthly_credits            = 300
      daily_bonus                = 10
      max_concurrent_generations = 10
    }
  }
}

# One plan item, attribute for attribute as kp_ddb_plan_item() (src/store/dynamodb/ddb_items.c)
# writes it. updated_at 0: seeded, never changed by an admin.
resource "aws_dynamodb_table_item" "plan" {
  for_each = local.base_plans

  table_name = aws_dynamodb_table.main.name
  hash_key   = aws_dynamodb_table.main.hash_key
  range_key  = aws_dynamodb_table.main.range_key
  item = jsonencode({
    PK              = { S = "PLAN" }
    SK              = { S = "PLAN#${each.key}" }
    id              = { S = each.key }
    name            = { S = each.value.name }
    price_cents     = { N = tostring(each.value.price_cents) }
    currency        = { S = each.value.currency }
    monthly_credits = { N = tostring(each.value.monthly_credits) }
    daily_bonus     = { N = tostring(each.value.daily_bonus) }
    max_generating  = { N = tostring(each.value.max_concurrent_generations) }
    stripe_price_id = { S = "" }
    active          = { BOOL = true }
    updated_at      = { N = "0" }
  })

  lifecycle {
    ignore_changes = [item]
  }
}
