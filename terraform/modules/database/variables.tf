variable "table_prefix" {
  description = "Prefix of the table's name (KOUMPA_DYNAMODB_TABLE_PREFIX): the table is PREFIXkoumpa"
  type        = string
}

variable "deletion_protection" {
  description = "Refuse to delete the table (prod: true)"
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags on every resource of the module"
  type        = map(string)
  default     = {}
}
