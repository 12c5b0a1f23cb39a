#!/usr/bin/env bash
# Builds the six Lambda functions' packages, build/lambda/NAME/function.zip (scripts/build-lambda.sh;
# the same bootstrap in each, dispatching on _HANDLER). `make lambda` runs this.
set -euo pipefail
cd "$(dirname "$0")/.."
for name in $(scripts/lambda/function-names.sh); do
    scripts/build-lambda.sh "$name"
done
