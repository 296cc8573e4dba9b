package chaos

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Ports of berth inside every container (the image's defaults).
const (
	httpPort   = 5000
	raftPort   = 5001
	gossipPort = 5002
)

// firstHostIP is the last byte of the first node's address; below it are
// the gateway (.1, the host's side of the bridge) and a margin.
const firstHostIP = 10

// EnvConfig configures an Env.
type EnvConfig struct {
	// Image is the berth image to run, e.g. berth:dev.
	Image string
	// Password is the admin password of every node; empty means a random
	// one.
	Password string
	// Logf reports progress (t.Logf in a test); nil discards it.
	Logf func(format string, args ...any)
	// Docker runs the docker CLI.
	Docker Docker
}

// Env is one chaos run's Docker objects: a private, internal bridge network
// (no route out of the host; the host reaches every container at its fixed
// address) and the containers and volumes on it. Every object is named
// <Prefix>-… and labelled with the run, so that Close, or a later run after
// a crash, removes them all.
type Env struct {
	Docker   Docker
	Image    string
	Prefix   string       // berth-chaos-<8 hex digits>
	Network  string       // the network's name, Prefix+"-net"
	Subnet   netip.Prefix // the network's /24
	Password string       // the admin password of every node

	logf func(format string, args ...any)
	http *http.Client // for the management API and /readyz

	mu    sync.Mutex
	nodes []*Node
}

// NewEnv removes what crashed runs left behind, then creates a new run's
// network. Close removes everything the run created.
func NewEnv(ctx context.Context, cfg EnvConfig) (*Env, error) {
	if cfg.Image == "" {
		return nil, errors.New("no image to run")
	}
	e := &Env{
		Docker:   cfg.Docker,
		Image:    cfg.Image,
		Prefix:   "berth-chaos-" + randomHex(4),
		Password: cfg.Password,
		logf:     cfg.Logf,
		http: &http.Client{
			Timeout: 5 * time.Second,
			Transport: &http.Transport{
				DialContext:     (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
				MaxIdleConns:    64,
				IdleConnTimeout: 30 * time.Second,
			},
		},
	}
	if e.logf == nil {
		e.logf = func(string, ...any) {}
	}
	if e.Password == "" {
		e.Password = "chaos-" + randomHex(12)
	}
	e.Network = e.Prefix + "-net"

	removed, err := e.Docker.ReapOrphans(ctx)
	if len(removed) > 0 {
		e.logf("removed the leftovers of earlier runs: %s", strings.Join(removed, ", "))
	}
	if err != nil {
		e.logf("removing leftovers of earlier runs: %v", err)
	}
	if _, err := e.Docker.Run(ctx, nil, "image", "inspect", "--format", "{{.Id}}", e.Image); err != nil {
		return nil, fmt.Errorf("image %s (make image builds it): %w", e.Image, err)
	}
	help, err := e.Docker.Run(ctx, nil, "run", "--rm", "--network", "none", e.Image, "serve", "--help")
	if err != nil {
		return nil, fmt.Errorf("berth serve --help in %s: %w", e.Image, err)
	}
	if !strings.Contains(help, "--join") {
		return nil, fmt.Errorf("%s has no cluster flags (berth serve --help shows no --join): rebuild it with make image", e.Image)
	}
	if err := e.createNetwork(ctx); err != nil {
		return nil, err
	}
	e.logf("run %s: network %s (%s), image %s", e.Prefix, e.Network, e.Subnet, e.Image)
	return e, nil
}

// createNetwork creates the run's network on a random /24 of 10.128.0.0/9,
// trying another when Docker already uses one that overlaps. The subnet is
// chosen, not left to Docker, so that every container keeps its address
// over restarts and reconnects (docker network connect --ip).
func (e *Env) createNetwork(ctx context.Context) error {
	var err error
	for range 16 {
		e.Subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + rand.IntN(128)), byte(rand.IntN(256)), 0}), 24)
		_, err = e.Docker.Run(ctx, nil, "network", "create",
			"--driver", "bridge", "--internal", "--subnet", e.Subnet.String(),
			"--label", labelRun+"="+e.Prefix, "--label", labelPID+"="+strconv.Itoa(os.Getpid()),
			e.Network)
		if err == nil {
			return nil
		}
		if !strings.Contains(err.Error(), "overlap") {
			break
		}
	}
	return fmt.Errorf("create network %s: %w", e.Network, err)
}

// Nodes returns every node started in the run, in start order.
func (e *Env) Nodes() []*Node {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]*Node(nil), e.nodes...)
}

// nodeSpec is what one container runs.
type nodeSpec struct {
	name string   // short name within the run, e.g. "c-node1"
	args []string // after the image's entrypoint, starting with "serve"
	env  []string // NAME=value pairs, passed with -e NAME
}

// startNode creates the volume and the container of one node and starts it,
// without waiting for it to be ready.
func (e *Env) startNode(ctx context.Context, spec nodeSpec) (*Node, error) {
	e.mu.Lock()
	ip := e.Subnet.Addr().As4()
	ip[3] = byte(firstHostIP + len(e.nodes))
	n := &Node{
		Short:  spec.name,
		Name:   e.Prefix + "-" + spec.name,
		IP:     netip.AddrFrom4(ip),
		Volume: e.Prefix + "-" + spec.name + "-data",
		env:    e,
	}
	e.nodes = append(e.nodes, n)
	e.mu.Unlock()

	labels := []string{"--label", labelRun + "=" + e.Prefix, "--label", labelPID + "=" + strconv.Itoa(os.Getpid())}
	if _, err := e.Docker.Run(ctx, nil, append(append([]string{"volume", "create"}, labels...), n.Volume)...); err != nil {
		return nil, err
	}
	args := []string{"run", "--detach", "--name", n.Name, "--hostname", n.Name,
		"--network", e.Network, "--ip", n.IP.String(),
		"--volume", n.Volume + ":/data",
		// The container's own memory of its output, for CheckLogs; large
		// enough for the access log of a whole run.
		"--log-driver", "json-file", "--log-opt", "max-size=200m"}
	args = append(args, labels...)
	var env []string
	for _, kv := range spec.env {
		name, _, _ := strings.Cut(kv, "=")
		args = append(args, "--env", name)
		env = append(env, kv)
	}
	args = append(append(args, e.Image), spec.args...)
	if _, err := e.Docker.Run(ctx, env, args...); err != nil {
		return nil, fmt.Errorf("start %s: %w", n.Short, err)
	}
	return n, nil
}

// Close removes every container, volume and network of the run.
func (e *Env) Close(ctx context.Context) error {
	e.http.CloseIdleConnections()
	return e.Docker.RemoveRun(ctx, e.Prefix)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = crand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return hex.EncodeToString(b)
}
