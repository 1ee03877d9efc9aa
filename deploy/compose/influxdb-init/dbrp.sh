#!/bin/sh
# Runs once, after the influxdb container's first setup:
# - maps the InfluxQL database "netmon" (retention policy "autogen") to the bucket, so the
#   InfluxQL dashboards work;
# - creates a read-only v1 user for Grafana (GRAFANA_INFLUX_USER / GRAFANA_INFLUX_PASSWORD):
#   Grafana never sees the admin token netmon writes with.
set -eu
bucket_id=$(influx bucket find --name "${DOCKER_INFLUXDB_INIT_BUCKET}" --org "${DOCKER_INFLUXDB_INIT_ORG}" --hide-headers | cut -f1)
influx v1 dbrp create --org "${DOCKER_INFLUXDB_INIT_ORG}" --bucket-id "${bucket_id}" --db netmon --rp autogen --default
influx v1 auth create --org "${DOCKER_INFLUXDB_INIT_ORG}" --read-bucket "${bucket_id}" \
  --username "${GRAFANA_INFLUX_USER}" --password "${GRAFANA_INFLUX_PASSWORD}" \
  --description "Grafana: read-only InfluxQL access to the netmon bucket"
