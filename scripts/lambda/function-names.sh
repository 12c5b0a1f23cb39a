#!/usr/bin/env bash
# Prints the six Lambda function names, one a line, from the code's table
# (kp_lambda_function_names, src/host/lambda/functions.c), for the Lambda build scripts.
set -euo pipefail
cd "$(dirname "$0")/../.."
sed -n '/kp_lambda_function_names\[\] = {/,/};/p' src/host/lambda/functions.c | grep -o '"[a-z0-9-]*"' | tr -d '"'
