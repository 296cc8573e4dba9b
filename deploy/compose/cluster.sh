#!/usr/bin/env bash
# The compose cluster's life cycle, for `make cluster-up` and
# `make cluster-down` (README.md, "Run a cluster").
#
#   cluster.sh up          create .env if missing; on the first start, start
#                          node1 (it bootstraps) and wait for it; start all
#                          (node2 and node3 join); wait until every node's
#                          /readyz answers 200
#   cluster.sh down [ARGS] stop and remove the containers; the volumes stay
#                          unless ARGS has -v
#
# COMPOSE names the compose CLI (`docker compose` or `docker-compose`);
# BERTH_IMAGE the image (default berth:dev, built by `make image`);
# READY_TIMEOUT the seconds to wait for readiness (default 120).
set -euo pipefail
cd "$(dirname "$0")"

COMPOSE=${COMPOSE:-docker-compose}
READY_TIMEOUT=${READY_TIMEOUT:-120}
NODES=(node1 node2 node3)

compose() { $COMPOSE "$@"; }

# The host port of a node, as docker-compose.yml publishes it.
port() {
	local var="BERTH_${1^^}_PORT" default=$((5100 + ${1#node}))
	echo "${!var:-$default}"
}

new_env() {
	# 24 random bytes as hex: well over the 16 characters a secret needs.
	local secret password
	secret=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
	password=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
	umask 077
	cat >.env <<-ENV
		# Made by \`make cluster-up\`; git-ignored. Keep it: the nodes' volumes
		# belong to a cluster with this secret.
		COMPOSE_PROJECT_NAME=berth
		BERTH_CLUSTER_SECRET=$secret
		BERTH_ADMIN_PASSWORD=$password
	ENV
	echo "created deploy/compose/.env with a new cluster secret and admin password"
}

# wait_ready NODE...: until every node's /readyz is 200, or fail.
wait_ready() {
	local deadline=$((SECONDS + READY_TIMEOUT)) node code
	for node in "$@"; do
		until code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$(port "$node")/readyz") && [ "$code" = 200 ]; do
			if [ "$SECONDS" -ge "$deadline" ]; then
				echo "$node not ready after ${READY_TIMEOUT}s (last answer: ${code:-none}); its log:" >&2
				compose logs --tail 40 "$node" >&2 || true
				return 1
			fi
			sleep 1
		done
		echo "$node ready"
	done
}

up() {
	[ -f .env ] || new_env
	# The host ports may be overridden there.
	set -a
	# shellcheck source=/dev/null
	. ./.env
	set +a
	# On the first start node1 bootstraps and must serve before node2 and
	# node3 can join it. Later starts (the volumes exist) need all three at
	# once: a node that restarts serves only when a majority is back.
	if ! docker volume inspect "${COMPOSE_PROJECT_NAME:-berth}_node1-data" >/dev/null 2>&1; then
		compose up -d node1
		wait_ready node1
	fi
	compose up -d
	wait_ready "${NODES[@]}"
	echo
	echo "berth cluster ready:"
	for node in "${NODES[@]}"; do
		echo "  $node  http://127.0.0.1:$(port "$node")"
	done
	echo "admin password: BERTH_ADMIN_PASSWORD in deploy/compose/.env (user admin)"
	echo "status: bin/berth cluster status --server http://127.0.0.1:$(port node1) --password \"\$(sed -n 's/^BERTH_ADMIN_PASSWORD=//p' deploy/compose/.env)\""
}

down() {
	if [ ! -f .env ]; then
		echo "no deploy/compose/.env: no cluster was brought up from here"
		return 0
	fi
	compose down "$@"
}

case "${1:-}" in
up) up ;;
down) shift; down "$@" ;;
*) echo "usage: $0 up | down [docker-compose down flags, e.g. -v]" >&2; exit 2 ;;
esac
