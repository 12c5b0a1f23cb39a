# storage - the apps' files: a private S3 bucket behind CloudFront.
#
# The functions write a version's files to apps/{project}/v{n}/{path} (src/gen/publish.c) with
# the S3 blob store (KOUMPA_STORAGE=s3, src/blob/s3/). CloudFront serves them as the apps origin:
# https://DISTRIBUTION/{project}/@v{n}/{path} reads apps/{project}/v{n}/{path} (origin path /apps)
# through origin access control (apps-path.js maps the URL's @v{n} to the key's v{n}), the bucket
# itself stays private. Every response carries what
# the self-hosted apps origin sends (src/api/apps_origin.c, kp_apps_default_headers): the
# sandboxing Content-Security-Policy, X-Content-Type-Options: nosniff and Referrer-Policy:
# no-referrer, so a generated app runs in an opaque origin, away from the API's.

resource "aws_s3_bucket" "apps" {
  bucket        = var.bucket_name
  force_destroy = false
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "apps" {
  bucket                  = aws_s3_bucket.apps.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "apps" {
  bucket = aws_s3_bucket.apps.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# SSE-S3: CloudFront's origin access control reads it without a KMS key policy.
resource "aws_s3_bucket_server_side_encryption_configuration" "apps" {
  bucket = aws_s3_bucket.apps.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
    bucket_key_enabled = true
  }
}

resource "aws_cloudfront_origin_access_control" "apps" {
  name                              = "${var.name_prefix}-apps"
  description                       = "CloudFront reads the private apps bucket"
  origin_access_control_origin_type = "s3"
  signing_behavior                  = "always"
  signing_protocol                  = "sigv4"
}

# The apps origin's headers: KP_APPS_CSP and the others of kp_apps_default_headers
# (src/api/apps_origin.h / .c); `make test` checks they are the same.
resource "aws_cloudfront_response_headers_policy" "apps" {
  name    = "${var.name_prefix}-apps-sandbox"
  comment = "The sandboxing CSP, nosniff and no-referrer of Koumpa's apps origin"

  security_headers_config {
    content_security_policy {
      content_security_policy = "sandbox allow-scripts allow-forms allow-popups allow-modals"
      override                = true
    }
    content_type_options {
      override = true
    }
    referrer_policy {
      referrer_policy = "no-referrer"
      override        = true
    }
    strict_transport_security {
      access_control_max_age_sec = 31536000
      include_subdomains         = false
      override                   = true
    }
  }
}

resource "aws_cloudfront_function" "apps_path" {
  name    = "${var.name_prefix}-apps-path"
  runtime = "cloudfront-js-2.0"
  comment = "/{project}/@v{n}/{path} -> apps/{project}/v{n}/{path}"
  publish = true
  code    = file("${path.module}/apps-path.js")
}

data "aws_cloudfront_cache_policy" "optimized" {
  name = "Managed-CachingOptimized"
}

resource "aws_cloudfront_distribution" "apps" {
  enabled         = true
  comment         = "${var.name_prefix} apps origin"
  is_ipv6_enabled = true
  price_class     = var.price_class
  http_version    = "http2and3"

  origin {
    origin_id                = "apps-bucket"
    domain_name              = aws_s3_bucket.apps.bucket_regional_domain_name
    origin_path              = "/apps"
    origin_access_control_id = aws_cloudfront_origin_access_control.apps.id
  }

  default_cache_behavior {
    target_origin_id           = "apps-bucket"
    viewer_protocol_policy     = "redirect-to-https"
    allowed_methods            = ["GET", "HEAD"]
    cached_methods             = ["GET", "HEAD"]
    compress                   = true
    cache_policy_id            = data.aws_cloudfront_cache_policy.optimized.id
    response_headers_policy_id = aws_cloudfront_response_headers_policy.apps.id

    function_association {
      event_type   = "viewer-request"
      function_arn = aws_cloudfront_function.apps_path.arn
    }
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = true
  }

  tags = var.tags
}

# Only this distribution reads the bucket, and only the published apps. ListBucket (on the
# bucket) makes a missing file a 404 rather than S3's 403; only the paths apps-path.js lets
# through reach S3.
data "aws_iam_policy_document" "apps_bucket" {
  statement {
    sid       = "CloudFrontReadsApps"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:ListBucket"]
    resources = [aws_s3_bucket.apps.arn, "${aws_s3_bucket.apps.arn}/apps/*"]
    principals {
      type        = "Service"
      identifiers = ["cloudfront.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "AWS:SourceArn"
      values   = [aws_cloudfront_distribution.apps.arn]
    }
  }
  statement {
    sid       = "TLSOnly"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.apps.arn, "${aws_s3_bucket.apps.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "apps" {
  bucket     = aws_s3_bucket.apps.id
  policy     = data.aws_iam_policy_document.apps_bucket.json
  depends_on = [aws_s3_bucket_public_access_block.apps]
}
