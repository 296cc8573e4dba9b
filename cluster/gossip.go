package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// NodeInfo is what a node tells the others about itself by gossip.
type NodeInfo struct {
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	HTTPAddr   string `json:"http_addr"`
	GossipAddr string `json:"gossip_addr"`
	Version    string `json:"version"`
}

// MemberState is what gossip says of a member.
type MemberState string

// Member states. A suspect member missed probes and may be dead; a left
// member said goodbye (berth cluster leave).
const (
	StateAlive   MemberState = "alive"
	StateSuspect MemberState = "suspect"
	StateDead    MemberState = "dead"
	StateLeft    MemberState = "left"
)

// Member is a node as gossip sees it, and since when.
type Member struct {
	NodeInfo
	State MemberState
	Since time.Time
}

// nodeMeta is the gossiped metadata (memberlist limits it to 512 bytes).
type nodeMeta struct {
	Raft    string `json:"r"`
	HTTP    string `json:"h"`
	Version string `json:"v"`
}

const (
	peersFileName = "peers.json"
	// rejoinEvery is how often a node tries to reach members it knows of
	// but gossip does not see: after a long partition memberlist forgets
	// the other side, and only a join merges the two again.
	rejoinEvery = 5 * time.Second
)

// gossip runs memberlist and keeps the table of members.
type gossip struct {
	ml     *memberlist.Memberlist
	self   NodeInfo
	logger *slog.Logger
	dir    string

	mu      sync.Mutex
	members map[string]*Member
	known   map[string]string // id → last gossip address, persisted in peers.json
	changed chan struct{}     // signalled (non-blocking) on every change
}

// lanConfig is memberlist's LAN profile tuned to detect a dead peer within
// about 4 s: a probe every 500 ms with a 250 ms timeout, and a suspicion
// that lasts 1.5 s once another member confirms it (3 s at most).
func lanConfig() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.ProbeInterval = 500 * time.Millisecond
	c.ProbeTimeout = 250 * time.Millisecond
	c.SuspicionMult = 3
	c.SuspicionMaxTimeoutMult = 2
	c.GossipInterval = 100 * time.Millisecond
	c.TCPTimeout = 2 * time.Second
	c.PushPullInterval = 15 * time.Second
	c.DeadNodeReclaimTime = 10 * time.Second
	return c
}

func newGossip(cfg Config, k keys, logger *slog.Logger) (*gossip, error) {
	g := &gossip{
		self: NodeInfo{
			ID: cfg.NodeID, RaftAddr: cfg.RaftAdvertise, HTTPAddr: cfg.HTTPAdvertise,
			GossipAddr: cfg.GossipAdvertise, Version: cfg.Version,
		},
		logger:  logger.With("component", "gossip"),
		dir:     cfg.DataDir,
		members: map[string]*Member{},
		known:   map[string]string{},
		changed: make(chan struct{}, 1),
	}
	g.loadKnown()

	mc := lanConfig()
	mc.Name = cfg.NodeID
	bindHost, bindPort, err := splitPort(cfg.GossipAddr)
	if err != nil {
		return nil, fmt.Errorf("%w: gossip addr: %v", ErrConfig, err)
	}
	mc.BindAddr = cmpOr(bindHost, "0.0.0.0")
	mc.BindPort = bindPort
	advHost, advPort, err := splitPort(cfg.GossipAdvertise)
	if err != nil {
		return nil, fmt.Errorf("%w: gossip advertise: %v", ErrConfig, err)
	}
	// memberlist wants an IP to advertise: resolve a host name once.
	ip, err := resolveIP(advHost)
	if err != nil {
		return nil, fmt.Errorf("gossip advertise host %s: %w", advHost, err)
	}
	mc.AdvertiseAddr = ip
	mc.AdvertisePort = advPort
	mc.SecretKey = k.gossip
	mc.Label = "berth"
	mc.Delegate = (*gossipDelegate)(g)
	mc.Events = (*gossipEvents)(g)
	mc.Logger = log.New(&memberlistLog{logger: g.logger}, "", 0)
	g.ml, err = memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.GossipAddr, err)
	}
	if bindPort == 0 {
		// A kernel-chosen port (tests): advertise what was bound.
		g.self.GossipAddr = net.JoinHostPort(advHost, strconv.Itoa(int(g.ml.LocalNode().Port)))
	}
	return g, nil
}

func cmpOr(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func splitPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, p, nil
}

func resolveIP(host string) (string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return ip.String(), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip4", host)
	if err != nil {
		return "", err
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("no IPv4 address")
	}
	return ips[0].String(), nil
}

// join contacts the given gossip addresses and the members known from
// earlier runs until one answers or ctx ends. A node with nothing to join
// returns at once: it is the first of its cluster.
func (g *gossip) join(ctx context.Context, addrs []string) {
	targets := g.joinTargets(addrs)
	if len(targets) == 0 {
		return
	}
	wait := 250 * time.Millisecond
	for {
		n, err := g.ml.Join(targets)
		if n > 0 {
			g.logger.Info("joined the cluster", "contacted", n)
			return
		}
		g.logger.Warn("join: no member answered yet; retrying", "targets", targets, "error", err, "retry_in", wait.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// joinTargets returns addrs and the remembered members' addresses, without
// this node's own.
func (g *gossip) joinTargets(addrs []string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, a := range addrs {
		if a != g.self.GossipAddr && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for id, a := range g.known {
		if id != g.self.ID && a != g.self.GossipAddr && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

// rejoin tries, once, to reach the known members that gossip does not see
// alive: after a long partition memberlist forgets the other side.
func (g *gossip) rejoin(want []string) {
	g.mu.Lock()
	var targets []string
	for _, id := range want {
		if id == g.self.ID {
			continue
		}
		m := g.members[id]
		if m != nil && (m.State == StateAlive || m.State == StateSuspect) {
			continue
		}
		if a := g.known[id]; a != "" {
			targets = append(targets, a)
		}
	}
	g.mu.Unlock()
	if len(targets) > 0 {
		if n, _ := g.ml.Join(targets); n > 0 {
			g.logger.Info("reconnected to members", "contacted", n)
		}
	}
}

// snapshot returns a copy of the member table, states refreshed from
// memberlist (which knows suspects), sorted by id.
func (g *gossip) snapshot() []Member {
	states := map[string]MemberState{}
	for _, n := range g.ml.Members() {
		switch n.State {
		case memberlist.StateAlive:
			states[n.Name] = StateAlive
		case memberlist.StateSuspect:
			states[n.Name] = StateSuspect
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]Member, 0, len(g.members)+1)
	out = append(out, Member{NodeInfo: g.self, State: StateAlive})
	for id, m := range g.members {
		if id == g.self.ID {
			continue
		}
		c := *m
		if s, ok := states[id]; ok && c.State == StateAlive && s == StateSuspect {
			c.State = StateSuspect
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}

// member returns the member with id, if gossip has seen it.
func (g *gossip) member(id string) (Member, bool) {
	if id == g.self.ID {
		return Member{NodeInfo: g.self, State: StateAlive}, true
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	m, ok := g.members[id]
	if !ok {
		return Member{}, false
	}
	return *m, true
}

func (g *gossip) update(n *memberlist.Node, state MemberState) {
	if n.Name == g.self.ID {
		return
	}
	info := NodeInfo{ID: n.Name, GossipAddr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))}
	var meta nodeMeta
	if err := json.Unmarshal(n.Meta, &meta); err == nil {
		info.RaftAddr, info.HTTPAddr, info.Version = meta.Raft, meta.HTTP, meta.Version
	}
	g.mu.Lock()
	m := g.members[n.Name]
	if m == nil {
		m = &Member{}
		g.members[n.Name] = m
	}
	if m.State != state {
		m.Since = time.Now()
	}
	prevInfo := m.NodeInfo
	m.State = state
	if info.RaftAddr != "" || state == StateAlive {
		m.NodeInfo = info
	} else {
		m.GossipAddr = info.GossipAddr
	}
	persist := false
	if state == StateAlive && g.known[n.Name] != info.GossipAddr {
		g.known[n.Name] = info.GossipAddr
		persist = true
	}
	known := cloneMap(g.known)
	g.mu.Unlock()
	if prevInfo != m.NodeInfo || persist {
		g.logger.Info("member "+string(state), "member", n.Name, "gossip_addr", info.GossipAddr, "raft_addr", info.RaftAddr, "http_addr", info.HTTPAddr)
	} else {
		g.logger.Info("member "+string(state), "member", n.Name)
	}
	if persist {
		g.saveKnown(known)
	}
	select {
	case g.changed <- struct{}{}:
	default:
	}
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// forget drops a member that is no longer in the Raft configuration and
// gone from gossip, so it is not rejoined forever.
func (g *gossip) forget(id string) {
	g.mu.Lock()
	_, had := g.known[id]
	delete(g.known, id)
	if m := g.members[id]; m != nil && m.State != StateAlive {
		delete(g.members, id)
	}
	known := cloneMap(g.known)
	g.mu.Unlock()
	if had {
		g.saveKnown(known)
	}
}

func (g *gossip) loadKnown() {
	b, err := os.ReadFile(filepath.Join(g.dir, peersFileName))
	if err != nil {
		return
	}
	var known map[string]string
	if json.Unmarshal(b, &known) == nil {
		g.known = known
	}
}

func (g *gossip) saveKnown(known map[string]string) {
	b, err := json.MarshalIndent(known, "", "  ")
	if err == nil {
		err = writeFileAtomic(filepath.Join(g.dir, peersFileName), b)
	}
	if err != nil {
		g.logger.Warn("remember peers", "error", err)
	}
}

// leave tells the others this node is going and stops gossiping.
func (g *gossip) leave(timeout time.Duration) error {
	err := g.ml.Leave(timeout)
	if serr := g.ml.Shutdown(); err == nil {
		err = serr
	}
	return err
}

func (g *gossip) shutdown() error { return g.ml.Shutdown() }

// gossipDelegate gives memberlist this node's metadata; berth gossips
// nothing else.
type gossipDelegate gossip

func (d *gossipDelegate) NodeMeta(limit int) []byte {
	b, _ := json.Marshal(nodeMeta{Raft: d.self.RaftAddr, HTTP: d.self.HTTPAddr, Version: d.self.Version})
	if len(b) > limit {
		return nil
	}
	return b
}
func (d *gossipDelegate) NotifyMsg([]byte)                {}
func (d *gossipDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *gossipDelegate) LocalState(bool) []byte          { return nil }
func (d *gossipDelegate) MergeRemoteState([]byte, bool)   {}

// gossipEvents keeps the member table from memberlist's events.
type gossipEvents gossip

func (e *gossipEvents) NotifyJoin(n *memberlist.Node)   { (*gossip)(e).update(n, StateAlive) }
func (e *gossipEvents) NotifyUpdate(n *memberlist.Node) { (*gossip)(e).update(n, StateAlive) }
func (e *gossipEvents) NotifyLeave(n *memberlist.Node) {
	state := StateDead
	if n.State == memberlist.StateLeft {
		state = StateLeft
	}
	(*gossip)(e).update(n, state)
}

// memberlistLog carries memberlist's "[LEVEL] memberlist: ..." lines into
// slog at their level; debug lines only when the logger wants them.
type memberlistLog struct{ logger *slog.Logger }

func (w *memberlistLog) Write(p []byte) (int, error) {
	line := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	for _, pl := range []struct {
		prefix string
		level  slog.Level
	}{
		// memberlist warns about every failed probe while a peer is down,
		// and the member table reports the state that matters, so its
		// warnings are info and its errors (a wrong cluster secret, say)
		// warnings.
		{"[DEBUG]", slog.LevelDebug}, {"[INFO]", slog.LevelInfo},
		{"[WARN]", slog.LevelInfo}, {"[ERR]", slog.LevelWarn},
	} {
		if rest, ok := strings.CutPrefix(line, pl.prefix); ok {
			level, line = pl.level, strings.TrimSpace(rest)
			break
		}
	}
	line = strings.TrimSpace(strings.TrimPrefix(line, "memberlist:"))
	w.logger.Log(context.Background(), level, line)
	return len(p), nil
}
