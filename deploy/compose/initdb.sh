#!/bin/sh
# TimescaleDB's first start (docker-entrypoint-initdb.d): the platform's login roles and Dagster's database.
# The group roles analytics_rw / analytics_ro are the ones sql/01 creates (it skips existing ones); the
# migrations then grant them their tables. analytics_pipeline writes (DATABASE_URL, DAGSTER_PG_URL),
# analytics_api only reads (API_DATABASE_URL), as the devstack and docs/deploy.md set them up.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v pipeline_pw="$ANALYTICS_PIPELINE_PASSWORD" -v api_pw="$ANALYTICS_API_PASSWORD" <<'SQL'
CREATE ROLE analytics_rw NOLOGIN;
CREATE ROLE analytics_ro NOLOGIN;
CREATE ROLE analytics_pipeline LOGIN PASSWORD :'pipeline_pw' IN ROLE analytics_rw;
CREATE ROLE analytics_api LOGIN PASSWORD :'api_pw' IN ROLE analytics_ro;
CREATE DATABASE dagster OWNER analytics_pipeline;
SQL
