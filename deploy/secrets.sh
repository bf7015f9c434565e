#!/bin/sh
# Prints fresh random values for a deployment, one NAME=value per line: the three gateway
# secrets (the same on every gateway and control plane: keep them, and never change the
# pepper of an existing store), the admin API token and the PostgreSQL password.
#
#   deploy/secrets.sh > deploy/.env                                   # compose.yaml
#   deploy/secrets.sh gateway > deploy/kubernetes/base/gateway-secrets.env      # Kubernetes
set -eu
rand() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
case "${1:-all}" in
  gateway|all) ;;
  *) echo "usage: $0 [gateway|all]" >&2; exit 2 ;;
esac
echo "LW_VIRTUAL_KEY_PEPPER=$(rand)"
echo "LW_GATEWAY_INTERNAL_SECRET=$(rand)"
echo "LW_GATEWAY_JWT_SECRET=$(rand)"
if [ "${1:-all}" = all ]; then
  echo "TOLLWAY_ADMIN_TOKEN=$(rand)"
  echo "POSTGRES_PASSWORD=$(rand)"
fi
