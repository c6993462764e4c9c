#!/bin/sh
# Writes .env for docker compose from .env.example, with a random value for every secret
# that .env.example leaves empty. Refuses to overwrite an existing .env.
#   deploy/make-env.sh            # .env in the repository root
#   deploy/make-env.sh OUT        # another file
set -eu
cd "$(dirname "$0")/.."
out="${1:-.env}"
if [ -e "$out" ]; then
  echo "$out exists; not overwriting it" >&2
  exit 1
fi
random() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
umask 077
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in
    REDIS_PASSWORD=|POSTGRES_PASSWORD=|GRAFANA_ADMIN_PASSWORD=) echo "${line}$(random)" ;;
    FLOWER_BASIC_AUTH=) echo "${line}operator:$(random)" ;;
    *) echo "$line" ;;
  esac
done < .env.example > "$out"
echo "wrote $out (mode 600); Flower user: operator, password: see FLOWER_BASIC_AUTH in it"
