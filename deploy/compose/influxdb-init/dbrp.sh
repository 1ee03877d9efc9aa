#!/bin/sh
# Runs once, after the influxdb container's first setup: maps the InfluxQL database
# "netmon" (retention policy "autogen") to the bucket, so the InfluxQL dashboards work.
set -eu
bucket_id=$(influx bucket find --name "${DOCKER_INFLUXDB_INIT_BUCKET}" --org "${DOCKER_INFLUXDB_INIT_ORG}" --hide-headers | cut -f1)
influx v1 dbrp create --org "${DOCKER_INFLUXDB_INIT_ORG}" --bucket-id "${bucket_id}" --db netmon --rp autogen --default
