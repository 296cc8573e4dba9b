// Package e2e drives real registry clients (crane, oras, regctl, skopeo,
// podman, helm, cosign, the Docker engine) against a real `berth serve`
// process on 127.0.0.1, and kills that process with SIGKILL during pushes and
// uploads to check that every acknowledged write survives.
//
// The server under test is a [Server]: by default the berth binary, built
// once per run from this module (or E2E_BERTH_BIN, a binary built
// beforehand); with E2E_SERVER=distribution the CNCF
// distribution registry (`registry` in PATH or GOBIN), which is how the
// harness itself is checked against a known-good registry.
//
// Clients are found in PATH or in GOBIN (GOPATH/bin); scripts/install-clients.sh
// installs the missing ones at pinned versions, and `make test` runs it first.
// Every client process gets its own HOME, DOCKER_CONFIG and XDG directories,
// so nothing touches the user's ~/.docker or ~/.config.
//
// The TestCluster tests start clusters of three and five `berth serve`
// processes on loopback (startCluster) and push, pull, kill (SIGKILL),
// freeze (SIGSTOP), restart, join and leave while several goroutines push:
// every acknowledged push must be pullable with its exact digest from every
// node, and every node must end with the same applied index, state hash and
// blobs. How long writes paused is logged in lines that start with MEASURE;
// the tests assert only bounds that a loaded machine cannot miss.
//
// A server's log is dumped into the test output when the test fails, or
// always with E2E_DUMP_LOGS=1. The crash and cluster tests log their seed;
// E2E_SEED replays a run's fault schedule.
package e2e
