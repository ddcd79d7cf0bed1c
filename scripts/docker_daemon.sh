#!/usr/bin/env bash
# Start dockerd the way this machine class allows (no bridge, no iptables; every container
# runs with host networking) unless a daemon already answers. Prints why when it cannot.
# Used by .ci/run and the compose test; an operator with a normal Docker needs none of this.
set -uo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "docker_daemon: dockerd is not installed (apt-get install docker.io)" >&2
  exit 1
fi
mkdir -p /var/log
nohup dockerd --bridge=none --iptables=false --ip-masq=false \
  >/var/log/resonfl-dockerd.log 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "docker_daemon: dockerd did not answer within 60 s; last log lines:" >&2
tail -5 /var/log/resonfl-dockerd.log >&2
exit 1
