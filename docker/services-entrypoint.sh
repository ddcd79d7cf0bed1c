#!/bin/sh
# `postgres [ARGS]`: initialise $PGDATA on first start (POSTGRES_USER / POSTGRES_PASSWORD /
# POSTGRES_DB, as the official image does), then run postgres as its user.
# `redis-server [ARGS]`: run redis-server as its user, data in /data.
set -eu
case "${1:-}" in
  postgres)
    shift
    if [ ! -s "$PGDATA/PG_VERSION" ]; then
      pw=$(mktemp); printf '%s' "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}" > "$pw"
      chown postgres "$pw" "$PGDATA"
      su postgres -s /bin/sh -c "initdb -D '$PGDATA' -U '${POSTGRES_USER:-postgres}' \
        --pwfile='$pw' --auth-host=scram-sha-256 --auth-local=trust" >/dev/null
      rm -f "$pw"
      echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
      su postgres -s /bin/sh -c "pg_ctl -D '$PGDATA' -o '-c listen_addresses= -k /tmp' -w start" >/dev/null
      su postgres -s /bin/sh -c "createdb -h /tmp -U '${POSTGRES_USER:-postgres}' '${POSTGRES_DB:-${POSTGRES_USER:-postgres}}'" || true
      su postgres -s /bin/sh -c "pg_ctl -D '$PGDATA' -w stop" >/dev/null
    fi
    exec su postgres -s /bin/sh -c "exec postgres -D '$PGDATA' -c listen_addresses='*' -k /tmp $*"
    ;;
  redis-server)
    shift
    cd /data
    exec su redis -s /bin/sh -c "exec redis-server --dir /data $*"
    ;;
  *) exec "$@" ;;
esac
