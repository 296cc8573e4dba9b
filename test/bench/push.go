package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// pushTarget is one registry the cluster push workloads run against:
// single-node berth, or one node of a cluster.
type pushTarget struct {
	name   string    // column heading
	srv    *server   // the node the client pushes to
	leader *server   // the Raft leader (srv on a single node)
	nodes  []*server // every process of the registry, for CPU and metrics
}

// pushResult is what the push workloads measured on one target, summed
// over the rounds.
type pushResult struct {
	entry, leader string // node ids: pushed to, and the leader
	blobMiB       float64
	blobs, images int
	blob, imgs    usage    // what each workload cost
	retried       failures // temporary failures retried
}

// blobMBs is the blob push throughput.
func (r pushResult) blobMBs() float64 { return r.blobMiB / r.blob.wall.Seconds() }

// imageRate is the small-image push rate.
func (r pushResult) imageRate() float64 { return float64(r.images) / r.imgs.wall.Seconds() }

// add adds what one more round measured.
func (r pushResult) add(o pushResult) pushResult {
	r.entry, r.leader = joinName(r.entry, o.entry), joinName(r.leader, o.leader)
	r.blobMiB += o.blobMiB
	r.blobs += o.blobs
	r.images += o.images
	r.blob = r.blob.add(o.blob)
	r.imgs = r.imgs.add(o.imgs)
	r.retried.merge(o.retried)
	return r
}

// usage is what a workload cost: wall time, CPU of the registry's
// processes and of this load generator, and the change of every node's
// metrics.
type usage struct {
	wall     time.Duration
	nodesCPU float64 // seconds, all nodes
	benchCPU float64 // seconds
	// cpuStall and ioStall are the share of the time some task of the
	// machine (ours or not) waited for a CPU, or for I/O (Linux PSI).
	cpuStall, ioStall float64
	// metrics are the changes of the nodes' metrics, by the role the node
	// had: roleEntry (pushed to), roleLeader, rolePeers (summed).
	metrics map[string]series
	// newLeaders is how many new leaders the nodes saw (the most any
	// node counted).
	newLeaders float64
}

// Roles of nodes in usage.metrics.
const (
	roleEntry  = "entry"
	roleLeader = "leader"
	rolePeers  = "peers"
)

// add sums two usages; the stalls are weighted by wall time.
func (u usage) add(o usage) usage {
	wall := u.wall + o.wall
	if wall > 0 {
		u.cpuStall = (u.cpuStall*u.wall.Seconds() + o.cpuStall*o.wall.Seconds()) / wall.Seconds()
		u.ioStall = (u.ioStall*u.wall.Seconds() + o.ioStall*o.wall.Seconds()) / wall.Seconds()
	}
	u.wall = wall
	u.nodesCPU += o.nodesCPU
	u.benchCPU += o.benchCPU
	u.newLeaders += o.newLeaders
	if u.metrics == nil {
		u.metrics = map[string]series{}
	}
	for name, m := range o.metrics {
		u.metrics[name] = u.metrics[name].plus(m)
	}
	return u
}

// busy is the share of the machine's cores the workload kept busy.
func (u usage) busy() float64 {
	if u.wall <= 0 {
		return 0
	}
	return (u.nodesCPU + u.benchCPU) / u.wall.Seconds() / float64(runtime.NumCPU())
}

// measureUsage runs fn and records what it cost on t's nodes.
func measureUsage(ctx context.Context, t pushTarget, fn func() error) (usage, error) {
	type snap struct {
		cpu     float64
		metrics series
	}
	take := func() (map[string]snap, float64, error) {
		out := map[string]snap{}
		for _, s := range t.nodes {
			cpu, err := s.cpuSeconds()
			if err != nil {
				return nil, 0, err
			}
			m, err := scrape(ctx, s)
			if err != nil {
				return nil, 0, err
			}
			out[s.name] = snap{cpu, m}
		}
		self, err := procCPU(os.Getpid())
		return out, self, err
	}
	before, self0, err := take()
	if err != nil {
		return usage{}, err
	}
	cpu0, io0 := stallMicros("cpu"), stallMicros("io")
	start := time.Now()
	if err := fn(); err != nil {
		return usage{}, err
	}
	u := usage{wall: time.Since(start), metrics: map[string]series{}}
	u.cpuStall = float64(stallMicros("cpu")-cpu0) / float64(u.wall.Microseconds())
	u.ioStall = float64(stallMicros("io")-io0) / float64(u.wall.Microseconds())
	after, self1, err := take()
	if err != nil {
		return usage{}, err
	}
	u.benchCPU = self1 - self0
	for name, a := range after {
		u.nodesCPU += a.cpu - before[name].cpu
		d := a.metrics.minus(before[name].metrics)
		u.newLeaders = max(u.newLeaders, d.sum("berth_raft_leader_changes_total"))
		if name == t.srv.name {
			u.metrics[roleEntry] = d
		} else {
			u.metrics[rolePeers] = u.metrics[rolePeers].plus(d)
		}
		if name == t.leader.name {
			u.metrics[roleLeader] = d
		}
	}
	return u, nil
}

// measurePushes runs one round of the blob push and the small-image push
// workloads against t, each into a repository of its own: blobs (fresh
// digests, so that no node has them yet), then tags small images.
func measurePushes(ctx context.Context, t pushTarget, round int, blobs [][]byte, tags int, o options) (pushResult, error) {
	r := pushResult{entry: t.srv.name, leader: t.leader.name, blobs: len(blobs), images: tags}
	for _, b := range blobs {
		_, _ = rand.Read(b[:32])
		r.blobMiB += float64(len(b)) / (1 << 20)
	}
	c := newClient(t.srv)
	repo := fmt.Sprintf("bench/cluster-%s-r%d", strings.ReplaceAll(t.name, " ", "-"), round)
	// One authenticated request first: the first check of a password is
	// a bcrypt hash, which the registry then caches.
	resp, err := c.do(ctx, "GET", "/v2/", nil, 0, nil)
	if err != nil {
		return r, err
	}
	drain(resp)
	fmt.Fprintf(os.Stderr, "cluster push, round %d: %s (%s): %d × %d MiB blobs, %d small images\n", round+1, t.name, t.srv.name, len(blobs), o.blobMB, tags)
	var rt retries
	defer func() {
		r.retried = rt.counts()
		r.retried.explain(t.srv.logPath)
	}()
	r.blob, err = measureUsage(ctx, t, func() error {
		_, err := pushBlobs(ctx, c, repo+"-blobs", blobs, o.workers, &rt)
		return err
	})
	if err != nil {
		return r, fmt.Errorf("%s: %w", t.name, err)
	}
	r.imgs, err = measureUsage(ctx, t, func() error {
		_, err := pushSmallImages(ctx, c, repo+"-small", tags, o.smallWorkers, max(1, tags/2), &rt)
		return err
	})
	if err != nil {
		return r, fmt.Errorf("%s: %w", t.name, err)
	}
	return r, nil
}

// stallMicros is the total time, in µs, some task of the machine stalled
// on resource ("cpu" or "io"), from /proc/pressure; 0 without PSI.
func stallMicros(resource string) int64 {
	b, err := os.ReadFile("/proc/pressure/" + resource)
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n") // "some avg10=... total=N"
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, "total="); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// joinName adds name to the comma-separated list names unless it is there.
func joinName(names, name string) string {
	if names == "" {
		return name
	}
	if slices.Contains(strings.Split(names, ","), name) {
		return names
	}
	return names + "," + name
}
