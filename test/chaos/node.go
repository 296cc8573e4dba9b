package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Node is one berth container. Its name is also its node id and the host
// name it advertises to its peers; the host reaches it at IP, which stays
// the same over restarts and partitions.
type Node struct {
	Short  string     // the name within the run, e.g. "c-node1"
	Name   string     // the container name: the run prefix and Short
	IP     netip.Addr // on the run's network
	Volume string     // the data volume, mounted at /data

	env *Env
}

func (n *Node) String() string { return n.Short }

// Host is the registry host of references, IP:5000.
func (n *Node) Host() string { return net.JoinHostPort(n.IP.String(), strconv.Itoa(httpPort)) }

// URL is the node's HTTP base URL.
func (n *Node) URL() string { return "http://" + n.Host() }

// Kill sends SIGKILL to the node's process (docker kill).
func (n *Node) Kill(ctx context.Context) error {
	return n.docker(ctx, "kill", "--signal", "KILL", n.Name)
}

// Start starts a stopped or killed node again on its volume.
func (n *Node) Start(ctx context.Context) error { return n.docker(ctx, "start", n.Name) }

// Pause freezes every process of the node (the cgroup freezer): its
// connections stay open and go silent. The freezer of cgroup v1 gives up
// now and then ("unable to freeze") while a process is in the kernel, so
// a failed pause is tried twice more.
func (n *Node) Pause(ctx context.Context) error {
	var err error
	for range 3 {
		if err = n.docker(ctx, "pause", n.Name); err == nil || !strings.Contains(err.Error(), "unable to freeze") {
			return err
		}
		if !waitUntil(ctx, time.Now().Add(300*time.Millisecond)) {
			break
		}
	}
	return err
}

// Unpause thaws a paused node.
func (n *Node) Unpause(ctx context.Context) error { return n.docker(ctx, "unpause", n.Name) }

// Disconnect takes the node off the network: a partition that its peers
// and the clients see alike (its packets go nowhere).
func (n *Node) Disconnect(ctx context.Context) error {
	return n.docker(ctx, "network", "disconnect", n.env.Network, n.Name)
}

// Connect puts the node back on the network at its address.
func (n *Node) Connect(ctx context.Context) error {
	return n.docker(ctx, "network", "connect", "--ip", n.IP.String(), n.env.Network, n.Name)
}

func (n *Node) docker(ctx context.Context, args ...string) error {
	_, err := n.env.Docker.Run(ctx, nil, args...)
	return err
}

// containerState is what Heal needs to know of a container, and what an
// error needs to say about one that does not come up.
type containerState struct {
	Running   bool
	Paused    bool
	Connected bool
	ExitCode  int  // of the last exit: 137 after a SIGKILL, 0 after a clean stop
	OOMKilled bool // the kernel killed it for memory
}

func (s containerState) String() string {
	switch {
	case s.Paused:
		return "paused"
	case !s.Running && s.OOMKilled:
		return "exited: killed for memory"
	case !s.Running:
		return fmt.Sprintf("exited with status %d", s.ExitCode)
	case !s.Connected:
		return "running, off the network"
	}
	return "running"
}

func (n *Node) state(ctx context.Context) (containerState, error) {
	format := fmt.Sprintf(`{{.State.Running}} {{.State.Paused}} {{if index .NetworkSettings.Networks %q}}true{{else}}false{{end}} {{.State.ExitCode}} {{.State.OOMKilled}}`, n.env.Network)
	out, err := n.env.Docker.Run(ctx, nil, "inspect", "--format", format, n.Name)
	if err != nil {
		return containerState{}, err
	}
	f := strings.Fields(out)
	if len(f) != 5 {
		return containerState{}, fmt.Errorf("inspect %s: unexpected %q", n.Short, out)
	}
	code, err := strconv.Atoi(f[3])
	if err != nil {
		return containerState{}, fmt.Errorf("inspect %s: exit code %q", n.Short, f[3])
	}
	return containerState{Running: f[0] == "true", Paused: f[1] == "true", Connected: f[2] == "true",
		ExitCode: code, OOMKilled: f[4] == "true"}, nil
}

// Heal undoes whatever fault the node is in: it unpauses, starts and
// reconnects it as needed, and returns what it did.
func (n *Node) Heal(ctx context.Context) ([]string, error) {
	st, err := n.state(ctx)
	if err != nil {
		return nil, err
	}
	var did []string
	if st.Paused {
		if err := n.Unpause(ctx); err != nil {
			return did, err
		}
		did = append(did, "unpause")
	} else if !st.Running {
		if err := n.Start(ctx); err != nil {
			return did, err
		}
		did = append(did, "start")
	}
	if !st.Connected {
		if err := n.Connect(ctx); err != nil {
			return did, err
		}
		did = append(did, "connect")
	}
	return did, nil
}

// healAny is Heal for a fault's undo: whatever the node is in.
func (n *Node) healAny(ctx context.Context) error {
	_, err := n.Heal(ctx)
	return err
}

// Ready reports whether GET /readyz answers 200: the node has a leader and
// has caught up with it.
func (n *Node) Ready(ctx context.Context) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := n.env.http.Do(req)
	if err != nil {
		return false
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// pollInterval is how often the harness asks a node again while it waits.
const pollInterval = 200 * time.Millisecond

// WaitReady polls /readyz until it answers 200 or timeout passes; the error
// then says what state the container is in and ends with its last log
// lines.
func (n *Node) WaitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		if n.Ready(ctx) {
			return nil
		}
		select {
		case <-ctx.Done():
			return n.notReady(timeout)
		case <-tick.C:
		}
	}
}

func (n *Node) notReady(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := n.state(ctx)
	state := st.String()
	if err != nil {
		state = err.Error()
	}
	logs, _ := n.env.Docker.Logs(ctx, n.Name)
	return fmt.Errorf("%s not ready after %s (container %s); last log lines:\n%s", n.Short, timeout, state, tail(string(logs), 15))
}

// Status is the answer of GET /api/v1/cluster: one node's view of its
// cluster.
type Status struct {
	NodeID string `json:"node_id"`
	Leader struct {
		ID       string `json:"id"`
		HTTPAddr string `json:"http_addr"`
	} `json:"leader"`
	Raft struct {
		State        string `json:"state"`
		Term         uint64 `json:"term"`
		LastIndex    uint64 `json:"last_index"`
		CommitIndex  uint64 `json:"commit_index"`
		AppliedIndex uint64 `json:"applied_index"`
	} `json:"raft"`
	Members []Member `json:"members"`
}

// Member is one member of a cluster as a node sees it.
type Member struct {
	ID                string `json:"id"`
	State             string `json:"state"`    // alive, suspect, dead, left
	Suffrage          string `json:"suffrage"` // voter, nonvoter, none
	RaftAddr          string `json:"raft_addr"`
	HTTPAddr          string `json:"http_addr"`
	GossipAddr        string `json:"gossip_addr"`
	Version           string `json:"version"`
	AppliedIndex      uint64 `json:"applied_index"`
	Lag               uint64 `json:"lag"`
	BlobRepairBacklog int64  `json:"blob_repair_backlog"`
	StateHash         string `json:"state_hash"`
	Error             string `json:"error"`
}

// Status asks the node for its view of the cluster; with hash, every
// reachable member's state hash is filled in.
func (n *Node) Status(ctx context.Context, hash bool) (*Status, error) {
	u := n.URL() + "/api/v1/cluster"
	if hash {
		u += "?hash=true"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(adminUser, n.env.Password)
	resp, err := n.env.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cluster status of %s: %w", n.Short, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("cluster status of %s: %w", n.Short, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cluster status of %s: %s: %s", n.Short, resp.Status, tail(string(body), 3))
	}
	var st Status
	if err := json.Unmarshal(body, &st); err != nil {
		return nil, fmt.Errorf("cluster status of %s: %w", n.Short, err)
	}
	return &st, nil
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	ls := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}
