# PostgreSQL 15 and Redis 7 from Debian, for machines with no image registry (CI here): the
# same commands as the official postgres / redis images work, so docker-compose.yml only
# swaps the image (POSTGRES_IMAGE / REDIS_IMAGE). Where a registry exists, use those images.
#   docker build --network host -f docker/services.Dockerfile -t resonfl-services:bookworm \
#     --build-arg BASE_IMAGE=resonfl-base:bookworm .
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-15 redis-server \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/postgresql/data /data \
    && chown postgres:postgres /var/lib/postgresql/data && chown redis:redis /data
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY docker/services-entrypoint.sh /usr/local/bin/services-entrypoint.sh
ENTRYPOINT ["/usr/local/bin/services-entrypoint.sh"]
