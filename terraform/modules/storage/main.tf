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
#
# Each app on its own origin (var.apps_domain = "apps.example.com"): the distribution takes the
# wildcard alternate domain *.apps.example.com (var.apps_certificate_arn), apps-host.js maps
# https://prj-{id}.apps.example.com/@v{n}/{path} to the same keys, the CSP adds allow-same-origin
# (kp_apps_own_origin_headers: localStorage works, each app isolated by its origin) and apps_url
# is the template https://{project}.apps.example.com (KOUMPA_APPS_URL). DNS: a wildcard record
# *.apps.example.com (CNAME or alias) to the distribution's domain.
#
# The dashboard (dashboard.tf): the files of src/web under web/ in the same bucket, served by a
# distribution of its own at var.dashboard_domain, with web/config.json written here.

locals {
  own_origins = var.apps_domain != ""
  apps_url    = local.own_origins ? "https://{project}.${var.apps_domain}" : "https://${aws_cloudfront_distribution.apps.domain_name}"
}

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
# (src/api/apps_origin.h / .c), or with each app on its own origin KP_APPS_CSP_OWN_ORIGIN
# (kp_apps_own_origin_headers: allow-same-origin); `make test` checks they are the same.
locals {
  apps_csp = {
    shared     = "sandbox allow-scripts allow-forms allow-popups allow-modals"
    own_origin = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-same-origin"
  }
}

resource "aws_cloudfront_response_headers_policy" "apps" {
  for_each = local.apps_csp
  name     = each.key == "shared" ? "${var.name_prefix}-apps-sandbox" : "${var.name_prefix}-apps-own-origin"
  comment  = "The sandboxing CSP (${each.key} origin), nosniff and no-referrer of Koumpa's apps origin"

  security_headers_config {
    content_security_policy {
      content_security_policy = each.value
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

# The policy was a single resource before the own-origin one.
moved {
  from = aws_cloudfront_response_headers_policy.apps
  to   = aws_cloudfront_response_headers_policy.apps["shared"]
}

resource "aws_cloudfront_function" "apps_path" {
  name    = "${var.name_prefix}-apps-path"
  runtime = "cloudfront-js-2.0"
  comment = local.own_origins ? "prj-{id}.DOMAIN/@v{n}/{path} -> apps/prj_{id}/v{n}/{path}" : "/{project}/@v{n}/{path} -> apps/{project}/v{n}/{path}"
  publish = true
  code    = local.own_origins ? file("${path.module}/apps-host.js") : file("${path.module}/apps-path.js")
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
  aliases         = local.own_origins ? ["*.${var.apps_domain}"] : []

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
    response_headers_policy_id = aws_cloudfront_response_headers_policy.apps[local.own_origins ? "own_origin" : "shared"].id

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

  # The wildcard certificate (ACM, us-east-1) when each app has its own origin.
  viewer_certificate {
    cloudfront_default_certificate = !local.own_origins
    acm_certificate_arn            = local.own_origins ? var.apps_certificate_arn : null
    ssl_support_method             = local.own_origins ? "sni-only" : null
    minimum_protocol_version       = local.own_origins ? "TLSv1.2_2021" : null
  }

  tags = var.tags
}

# Only the apps distribution reads the published apps (apps/*), only the dashboard's reads the
# dashboard's files (web/*). ListBucket (on the bucket) makes a missing app file a 404 rather
# than S3's 403; only the paths apps-path.js (or apps-host.js) lets through reach S3.
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
    sid       = "CloudFrontReadsDashboard"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.apps.arn}/${local.dashboard_prefix}*"]
    principals {
      type        = "Service"
      identifiers = ["cloudfront.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "AWS:SourceArn"
      values   = [aws_cloudfront_distribution.dashboard.arn]
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
