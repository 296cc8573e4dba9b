package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"runtime"
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

// pushResult is what the push workloads measured on one target.
type pushResult struct {
	entry, leader string // node ids: pushed to, and the leader
	blobMBs       float64
	small         smallResult
	blob, imgs    usage          // what each workload cost
	retried       map[string]int // temporary failures retried, by error
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
	metrics           map[string]series
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
		u.metrics[name] = a.metrics.minus(before[name].metrics)
	}
	return u, nil
}

// measurePushes runs the blob push and the small-image push workloads
// against t, each into a repository of its own: blobs (fresh digests, so
// that no node has them yet), then tags small images.
func measurePushes(ctx context.Context, t pushTarget, blobs [][]byte, tags int, o options) (pushResult, error) {
	r := pushResult{entry: t.srv.name, leader: t.leader.name}
	for _, b := range blobs {
		_, _ = rand.Read(b[:32])
	}
	c := newClient(t.srv)
	repo := "bench/cluster-" + strings.ReplaceAll(t.name, " ", "-")
	// One authenticated request first: the first check of a password is
	// a bcrypt hash, which the registry then caches.
	resp, err := c.do(ctx, "GET", "/v2/", nil, 0, nil)
	if err != nil {
		return r, err
	}
	drain(resp)
	fmt.Fprintf(os.Stderr, "cluster push: %s (%s): %d × %d MiB blobs, %d small images\n", t.name, t.srv.name, len(blobs), o.blobMB, tags)
	var rt retries
	defer func() { r.retried = rt.counts() }()
	r.blob, err = measureUsage(ctx, t, func() (err error) {
		r.blobMBs, err = pushBlobs(ctx, c, repo+"-blobs", blobs, o.workers, &rt)
		return err
	})
	if err != nil {
		return r, fmt.Errorf("%s: %w", t.name, err)
	}
	r.imgs, err = measureUsage(ctx, t, func() (err error) {
		r.small, err = pushSmallImages(ctx, c, repo+"-small", tags, o.smallWorkers, max(1, tags/4), &rt)
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
