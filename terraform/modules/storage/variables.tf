variable "name_prefix" {
  description = "Prefix of every name (koumpa-ENV)"
  type        = string
}

variable "bucket_name" {
  description = "The apps bucket (KOUMPA_S3_BUCKET); globally unique"
  type        = string
}

variable "price_class" {
  description = "CloudFront price class"
  type        = string
  default     = "PriceClass_100"
}

variable "tags" {
  description = "Tags on every resource of the module"
  type        = map(string)
  default     = {}
}
