# backend.tf - the bucket that holds every environment's Terraform state, made once per AWS
# account before any environment (it keeps its own state locally: terraform.tfstate here).
#
#   cd terraform && terraform init && terraform apply -var state_bucket=koumpa-tfstate-ACCOUNT
#
# Each environment (environments/ENV/main.tf) then keeps its state in this bucket
# (backend "s3", key koumpa/ENV/terraform.tfstate) with Terraform's native S3 locking
# (use_lockfile = true, Terraform >= 1.10: a lock object next to the state, written with a
# conditional PUT): no DynamoDB lock table. Versioning keeps every earlier state.

terraform {
  required_version = ">= 1.10"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }
}

variable "state_bucket" {
  description = "The state bucket's name (globally unique)"
  type        = string
}

variable "region" {
  description = "The state bucket's region"
  type        = string
  default     = "eu-west-3"
}

provider "aws" {
  region = var.region
}

resource "aws_s3_bucket" "state" {
  bucket = var.state_bucket
  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_public_access_block" "state" {
  bucket                  = aws_s3_bucket.state.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

output "state_bucket" {
  description = "Pass it to each environment's terraform init (-backend-config=bucket=...)"
  value       = aws_s3_bucket.state.id
}
