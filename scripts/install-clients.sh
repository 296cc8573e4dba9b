#!/usr/bin/env bash
# install-clients.sh installs the registry clients that test/e2e drives against
# a real `berth serve`, at pinned versions. It is idempotent: it installs only
# what is missing and says what it did. `make test` runs it before the tests.
#
#   Go clients   go install (GOFLAGS cleared) into GOBIN, or GOPATH/bin; and
#                the distribution registry, a replication destination
#   skopeo       apt-get (Debian)
#   podman       apt-get (Debian)
#   docker       not installed here: the Docker engine is the host's business;
#                the Docker test skips when no daemon answers.
set -euo pipefail

declare -A go_clients=(
	[crane]=github.com/google/go-containerregistry/cmd/crane@v0.20.6
	[oras]=oras.land/oras/cmd/oras@v1.2.3
	[regctl]=github.com/regclient/regclient/cmd/regctl@v0.8.3
	[helm]=helm.sh/helm/v3/cmd/helm@v3.16.4
	[cosign]=github.com/sigstore/cosign/v2/cmd/cosign@v2.4.3
	# The CNCF distribution registry: a plain OCI replication destination.
	[registry]=github.com/distribution/distribution/v3/cmd/registry@v3.1.2
)
# Installed in this order: the quick ones first, the long builds last.
go_order=(crane oras regctl registry helm cosign)
apt_clients=(skopeo podman)

gobin="$(go env GOBIN)"
if [[ -z "$gobin" ]]; then
	gobin="$(go env GOPATH)/bin"
fi

# have NAME: the client is in PATH or in the Go bin directory.
have() {
	command -v "$1" >/dev/null 2>&1 || [[ -x "$gobin/$1" ]]
}

installed=0
for name in "${go_order[@]}"; do
	mod="${go_clients[$name]}"
	if have "$name"; then
		echo "install-clients: $name present"
		continue
	fi
	echo "install-clients: go install $mod"
	GOFLAGS= go install "$mod"
	installed=$((installed + 1))
done

missing_apt=()
for name in "${apt_clients[@]}"; do
	if have "$name"; then
		echo "install-clients: $name present"
	else
		missing_apt+=("$name")
	fi
done
if ((${#missing_apt[@]} > 0)); then
	sudo=""
	if [[ "$(id -u)" != 0 ]]; then
		sudo="sudo"
	fi
	echo "install-clients: apt-get install ${missing_apt[*]}"
	# Another apt-get (a parallel make) may hold the lock: wait for it.
	$sudo apt-get -o DPkg::Lock::Timeout=600 update
	DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 install -y "${missing_apt[@]}"
	installed=$((installed + ${#missing_apt[@]}))
fi

if command -v docker >/dev/null 2>&1; then
	echo "install-clients: docker present"
else
	echo "install-clients: docker absent (install the Docker engine to run the Docker test)"
fi
echo "install-clients: $installed installed, clients in PATH or $gobin"
