#!/usr/bin/env bash
# Write the secret files docker-compose.yml mounts at /run/secrets in the processes that start
# job code (aggregator, site workers): secrets as files, never variables (docs/security.md).
# Files are owned by uid 1000 (the image's user), mode 0400, in a 0700 folder.
#
#   bash scripts/compose_secrets.sh server                 # from RESONFL_SECRET_KEY,
#        POSTGRES_PASSWORD, REDIS_PASSWORD (and POSTGRES_PORT, REDIS_PORT if not default)
#   bash scripts/compose_secrets.sh site NAME TOKEN BROKER_URL
#
# Folder: SECRETS_DIR (default ./secrets), the same variable docker-compose.yml reads.
set -euo pipefail
DIR=${SECRETS_DIR:-./secrets}
put() {  # put FOLDER NAME VALUE
  mkdir -p "$DIR/$1"
  chmod 0700 "$DIR" 2>/dev/null || true
  chmod 0755 "$DIR/$1"
  ( umask 077; printf '%s' "$3" > "$DIR/$1/$2" )
  chown 1000:1000 "$DIR/$1/$2" 2>/dev/null || chmod 0444 "$DIR/$1/$2"
  chmod 0400 "$DIR/$1/$2" 2>/dev/null || true
  [ "$(id -u)" = 0 ] || chmod 0444 "$DIR/$1/$2"  # not root: cannot chown to uid 1000
}
case "${1:-}" in
  server)
    put server resonfl_secret_key "${RESONFL_SECRET_KEY:?set RESONFL_SECRET_KEY}"
    put server resonfl_database_url \
      "postgresql+psycopg://resonfl:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}@127.0.0.1:${POSTGRES_PORT:-5432}/resonfl"
    put server resonfl_redis_url \
      "redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD}@127.0.0.1:${REDIS_PORT:-6379}/0"
    ;;
  site)
    [ $# = 4 ] || { echo "usage: $0 site NAME TOKEN BROKER_URL" >&2; exit 2; }
    put "$2" resonfl_site_token "$3"
    put "$2" resonfl_broker_url "$4"
    ;;
  *) echo "usage: $0 server | site NAME TOKEN BROKER_URL" >&2; exit 2 ;;
esac
echo "secrets written under $DIR/${2:-server}/"
