#!/bin/sh
# The PrometheusRule's `spec` as a plain Prometheus rules file (for `rule_files:`), so the
# alerts' PromQL lives in one place: prometheus-rules.yaml.
#
#   sh k8s/components/monitoring/rules-file.sh > chatstack.rules.yml
#   promtool check rules chatstack.rules.yml
#
# The lines after `spec:`, two spaces less indented (tests/containers/test_monitoring.py
# checks that this is the same YAML).
set -eu
here=$(dirname "$0")
sed -n '/^spec:$/,$p' "${1:-$here/prometheus-rules.yaml}" | sed -e '1d' -e 's/^  //'
