// Command bench measures berth side by side with the CNCF distribution
// registry, in one run on one machine, and prints a table of both and their
// ratio: blob push and pull throughput, manifest HEAD and GET rates with
// latency percentiles and server CPU per request, and small-image pushes per
// second as a repository grows.
//
// Then it measures a berth cluster of real processes on loopback: the same
// push workloads against its leader and a follower next to single-node
// berth, with where the time goes (from the nodes' /metrics); and failover:
// the leader is killed (SIGKILL) and stopped (SIGTERM) over and over while a
// probe writes through another node, and the time until writes succeed
// again is printed as a distribution. Every process shares the machine's
// cores and disk, which the output says.
//
//	go run ./test/bench [-quick] [-tags 10000] [-blob-mb 32] [-cluster=false] [-kills 20] ...
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
)

type options struct {
	repl                               bool
	replImages, replSmall, replLatency int
	berthBin, distBin                  string
	blobMB, blobs                      int
	workers                            int
	duration                           time.Duration
	tags, bucket                       int
	smallWorkers                       int
	keep                               bool
	only                               string
	dataDir                            string

	cluster          bool
	clusterNodes     int
	clusterTags      int
	clusterRounds    int
	clusterPush      bool
	kills, handovers int
}

// result is what one registry measured.
type result struct {
	pushMBs, pullMBs     float64
	head, get            rateResult
	smallRate            float64
	smallFirst, smallEnd float64  // pushes/s in the first and the last bucket of tags
	retried              failures // temporary failures retried
}

type rateResult struct {
	perSec   float64
	p50, p99 time.Duration
	cpuUS    float64 // server CPU microseconds per request
}

func main() {
	var o options
	flag.StringVar(&o.berthBin, "berth", "", "berth binary (default: build ./cmd/berth)")
	flag.StringVar(&o.distBin, "distribution", "", "distribution registry binary (default: registry in PATH or GOBIN)")
	flag.IntVar(&o.blobMB, "blob-mb", 32, "size of each blob in the push/pull test, MiB")
	flag.IntVar(&o.blobs, "blobs", 12, "number of blobs in the push/pull test")
	flag.IntVar(&o.workers, "workers", 3, "parallel blob transfers (docker pushes 3 layers at once)")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "duration of each manifest rate test")
	flag.IntVar(&o.tags, "tags", 10000, "small images pushed into one repository")
	flag.IntVar(&o.bucket, "bucket", 1000, "tags per bucket when reporting how the push rate changes")
	flag.IntVar(&o.smallWorkers, "small-workers", 8, "parallel small-image pushes")
	flag.BoolVar(&o.keep, "keep", false, "keep the data directories")
	flag.StringVar(&o.dataDir, "data-dir", "", "where the registries' data directories go (default: $TMPDIR); a tmpfs such as /dev/shm takes the disk out of the measurement")
	flag.StringVar(&o.only, "only", "", "measure only this: berth, distribution (the side-by-side table), replication, or cluster (the cluster tables)")
	flag.BoolVar(&o.cluster, "cluster", true, "also measure a berth cluster: push throughput against its leader and a follower, and failover")
	flag.IntVar(&o.clusterNodes, "cluster-nodes", 3, "nodes of the cluster")
	flag.IntVar(&o.clusterTags, "cluster-tags", 2000, "small images pushed in the cluster push comparison")
	flag.IntVar(&o.clusterRounds, "cluster-rounds", 3, "rounds of the cluster push comparison; the single node, the leader and the follower take turns")
	flag.BoolVar(&o.clusterPush, "cluster-push", true, "measure cluster push throughput (-cluster-push=false: failover only)")
	flag.IntVar(&o.kills, "kills", 20, "SIGKILLs of the cluster's leader (0: none)")
	flag.IntVar(&o.handovers, "handovers", 10, "SIGTERMs of the cluster's leader (0: none)")
	flag.BoolVar(&o.repl, "replication", true, "also measure replication between two berths against skopeo sync, and event latency")
	flag.IntVar(&o.replImages, "repl-images", 20, "images of 3 layers (1–8 MiB each) in the replication set")
	flag.IntVar(&o.replSmall, "repl-small", 200, "tiny images in the replication set")
	flag.IntVar(&o.replLatency, "repl-latency", 100, "pushes timed from a to b through an event policy")
	quick := flag.Bool("quick", false, "a short run (1,000 tags, 4 blobs, 2 s rate tests; cluster: 500 tags in 2 rounds, 5 kills, 3 handovers)")
	flag.Parse()
	if *quick {
		// -quick changes the defaults; a flag given explicitly wins.
		set := map[string]bool{}
		flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
		quickDefault(set, "tags", &o.tags, 1000)
		quickDefault(set, "repl-images", &o.replImages, 6)
		quickDefault(set, "repl-small", &o.replSmall, 50)
		quickDefault(set, "repl-latency", &o.replLatency, 30)
		quickDefault(set, "bucket", &o.bucket, 250)
		quickDefault(set, "blobs", &o.blobs, 4)
		quickDefault(set, "duration", &o.duration, 2*time.Second)
		quickDefault(set, "cluster-tags", &o.clusterTags, 500)
		quickDefault(set, "cluster-rounds", &o.clusterRounds, 2)
		quickDefault(set, "kills", &o.kills, 5)
		quickDefault(set, "handovers", &o.handovers, 3)
	}
	switch o.only {
	case "", "berth", "distribution", "cluster", "replication":
	default:
		fmt.Fprintf(os.Stderr, "bench: -only %q: want berth, distribution, replication or cluster\n", o.only)
		os.Exit(2)
	}
	if o.clusterNodes < 2 {
		fmt.Fprintln(os.Stderr, "bench: -cluster-nodes must be at least 2")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// quickDefault sets *p to v unless flag name was given.
func quickDefault[T any](set map[string]bool, name string, p *T, v T) {
	if !set[name] {
		*p = v
	}
}

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp(o.dataDir, "berth-bench-")
	if err != nil {
		return err
	}
	if !o.keep {
		defer os.RemoveAll(dir)
	}
	if o.berthBin == "" && o.only != "distribution" {
		o.berthBin = filepath.Join(dir, "berth")
		build := exec.CommandContext(ctx, "go", "build", "-o", o.berthBin, "./cmd/berth")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build berth: %w", err)
		}
	}
	sideBySide := o.only != "cluster" && o.only != "replication"
	withCluster := o.cluster && (o.only == "" || o.only == "cluster")
	if o.distBin == "" && (o.only == "" || o.only == "distribution") {
		if o.distBin, err = findDistribution(); err != nil {
			return err
		}
	}
	begin := time.Now()
	fmt.Printf("berth bench: %d × %d MiB blobs, %d workers; manifest tests %s; %d small images, %d workers\n",
		o.blobs, o.blobMB, o.workers, o.duration, o.tags, o.smallWorkers)
	if withCluster {
		fmt.Printf("cluster: %d nodes; %d small images; %d leader kills, %d leader handovers\n",
			o.clusterNodes, o.clusterTags, o.kills, o.handovers)
	}
	fmt.Printf("machine: %d cores, load average %s at the start; data in %s (every registry process and this load generator share the cores and the disk)\n\n",
		runtime.NumCPU(), loadAverage(), dir)
	if sideBySide {
		if err := runSideBySide(ctx, o, dir); err != nil {
			return err
		}
	}
	if o.repl && (o.only == "" || o.only == "replication") {
		r, err := measureReplication(ctx, o, dir)
		if err != nil {
			return fmt.Errorf("replication: %w", err)
		}
		printReplication(os.Stdout, r)
	}
	if withCluster {
		r, err := measureCluster(ctx, o, dir)
		if err != nil {
			if o.keep {
				return fmt.Errorf("cluster: %w (data and logs in %s)", err, dir)
			}
			return fmt.Errorf("cluster: %w (run with -keep to keep the nodes' logs)", err)
		}
		printCluster(os.Stdout, r, o)
	}
	fmt.Printf("\nbench took %s; load average %s at the end\n", time.Since(begin).Round(time.Second), loadAverage())
	return nil
}

// loadAverage is the 1-, 5- and 15-minute load average ("?" if unknown).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// runSideBySide measures berth and distribution, one after the other, and
// prints their table.
func runSideBySide(ctx context.Context, o options, dir string) error {

	starters := []struct {
		name  string
		start func(context.Context, string, string) (*server, error)
		bin   string
	}{
		{"berth", startBerth, o.berthBin},
		{"distribution", startDistribution, o.distBin},
	}
	results := map[string]result{}
	for _, st := range starters {
		if o.only != "" && o.only != st.name {
			continue
		}
		sdir := filepath.Join(dir, st.name)
		if err := os.MkdirAll(sdir, 0o700); err != nil {
			return err
		}
		srv, err := st.start(ctx, st.bin, sdir)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "measuring %s at %s\n", st.name, srv.url)
		r, err := measure(ctx, srv, o)
		srv.stop()
		if err != nil {
			return fmt.Errorf("%s: %w (log: %s)", st.name, err, filepath.Join(sdir, st.name+".log"))
		}
		results[st.name] = r
	}
	printTable(os.Stdout, results["berth"], results["distribution"], o)
	return nil
}

func findDistribution() (string, error) {
	if p, err := exec.LookPath("registry"); err == nil {
		return p, nil
	}
	gobin := os.Getenv("GOBIN")
	if gobin == "" {
		out, err := exec.Command("go", "env", "GOPATH").Output()
		if err != nil {
			return "", err
		}
		gobin = filepath.Join(strings.TrimSpace(string(out)), "bin")
	}
	p := filepath.Join(gobin, "registry")
	if _, err := os.Stat(p); err != nil {
		return "", errors.New("distribution registry not found: go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2")
	}
	return p, nil
}

func measure(ctx context.Context, srv *server, o options) (result, error) {
	var r result
	c := newClient(srv)

	// Blob push and pull throughput.
	blobs := make([][]byte, o.blobs)
	for i := range blobs {
		blobs[i] = make([]byte, o.blobMB<<20)
		_, _ = rand.Read(blobs[i])
	}
	var err error
	var rt retries
	defer func() {
		r.retried = rt.counts()
		r.retried.explain(srv.logPath)
	}()
	if r.pushMBs, err = pushBlobs(ctx, c, "bench/blobs", blobs, o.workers, &rt); err != nil {
		return r, err
	}
	total := float64(o.blobs * o.blobMB) // MiB
	start := time.Now()
	err = runParallel(ctx, len(blobs), o.workers, func(ctx context.Context, i int) error {
		resp, err := c.do(ctx, http.MethodGet, "/v2/bench/blobs/blobs/"+digestOf(blobs[i]), nil, 0, nil)
		if err != nil {
			return err
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || n != int64(len(blobs[i])) {
			return fmt.Errorf("GET blob: %s, %d bytes", resp.Status, n)
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("blob pull: %w", err)
	}
	r.pullMBs = total / time.Since(start).Seconds()

	// Manifest request rates on one image.
	if err := c.pushSmallImage(ctx, "bench/manifests", "v1"); err != nil {
		return r, fmt.Errorf("manifest setup: %w", err)
	}
	accept := map[string]string{"Accept": "application/vnd.oci.image.manifest.v1+json"}
	for _, m := range []struct {
		method string
		out    *rateResult
	}{{http.MethodHead, &r.head}, {http.MethodGet, &r.get}} {
		res, err := rate(ctx, srv, o.smallWorkers, o.duration, func(ctx context.Context) error {
			resp, err := c.do(ctx, m.method, "/v2/bench/manifests/manifests/v1", nil, 0, accept)
			if err != nil {
				return err
			}
			drain(resp)
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("%s manifest: %s", m.method, resp.Status)
			}
			return nil
		})
		if err != nil {
			return r, err
		}
		*m.out = res
	}

	// Small-image pushes as the repository grows.
	sr, err := pushSmallImages(ctx, c, "bench/small", o.tags, o.smallWorkers, o.bucket, &rt)
	if err != nil {
		return r, err
	}
	r.smallRate, r.smallFirst, r.smallEnd = sr.rate, sr.first, sr.last
	return r, nil
}

// pushBlobs pushes blobs into repo on workers goroutines and returns the
// throughput in MiB/s.
func pushBlobs(ctx context.Context, c *client, repo string, blobs [][]byte, workers int, rt *retries) (float64, error) {
	start := time.Now()
	err := runParallel(ctx, len(blobs), workers, func(ctx context.Context, i int) error {
		return rt.do(ctx, func() error { return c.pushBlob(ctx, repo, blobs[i]) })
	})
	if err != nil {
		return 0, fmt.Errorf("blob push: %w", err)
	}
	var total float64
	for _, b := range blobs {
		total += float64(len(b)) / (1 << 20)
	}
	return total / time.Since(start).Seconds(), nil
}

// smallResult is the small-image push rate over all the tags, and in the
// first and the last bucket of them.
type smallResult struct {
	rate, first, last float64 // images/s
}

// pushSmallImages pushes n small images by tag into repo on workers
// goroutines, and reports the rate every bucket tags on stderr.
func pushSmallImages(ctx context.Context, c *client, repo string, n, workers, bucket int, rt *retries) (smallResult, error) {
	var (
		mu          sync.Mutex // guards done, bucketStart and rates
		done        int
		bucketStart = time.Now()
		rates       []float64
	)
	start := time.Now()
	err := runParallel(ctx, n, workers, func(ctx context.Context, i int) error {
		if err := rt.do(ctx, func() error { return c.pushSmallImage(ctx, repo, fmt.Sprintf("t%05d", i)) }); err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if done++; done%bucket == 0 {
			now := time.Now()
			rates = append(rates, float64(bucket)/now.Sub(bucketStart).Seconds())
			bucketStart = now
			fmt.Fprintf(os.Stderr, "  %s: %d small images pushed (%.0f/s)\n", c.srv.name, done, rates[len(rates)-1])
		}
		return nil
	})
	if err != nil {
		return smallResult{}, fmt.Errorf("small-image push: %w", err)
	}
	r := smallResult{rate: float64(n) / time.Since(start).Seconds()}
	if len(rates) > 0 {
		r.first, r.last = rates[0], rates[len(rates)-1]
	}
	return r, nil
}

// rate runs fn on `workers` goroutines for d and measures requests per
// second, latency percentiles and the server's CPU time per request.
func rate(ctx context.Context, srv *server, workers int, d time.Duration, fn func(context.Context) error) (rateResult, error) {
	var lat latencies
	var n atomic.Int64
	cpu0, err := srv.cpuSeconds()
	if err != nil {
		return rateResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	err = runParallel(ctx, 1<<40, workers, func(ctx context.Context, _ int) error {
		t := time.Now()
		if err := fn(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		lat.add(time.Since(t))
		n.Add(1)
		return nil
	})
	elapsed := time.Since(start)
	if err != nil {
		return rateResult{}, err
	}
	cpu1, err := srv.cpuSeconds()
	if err != nil {
		return rateResult{}, err
	}
	count := float64(n.Load())
	return rateResult{
		perSec: count / elapsed.Seconds(),
		p50:    lat.percentile(0.50),
		p99:    lat.percentile(0.99),
		cpuUS:  (cpu1 - cpu0) * 1e6 / count,
	}, nil
}

func printTable(w io.Writer, b, d result, o options) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "metric\tberth\tdistribution\tberth/distribution\ttarget\t")
	row := func(name string, bv, dv float64, unit, target string) {
		ratio := "-"
		if dv > 0 {
			ratio = fmt.Sprintf("%.2f×", bv/dv)
		}
		fmt.Fprintf(tw, "%s\t%.1f %s\t%.1f %s\t%s\t%s\t\n", name, bv, unit, dv, unit, ratio, target)
	}
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	row("blob push (fsync)", b.pushMBs, d.pushMBs, "MiB/s", "≥ 1.20×")
	row("blob pull", b.pullMBs, d.pullMBs, "MiB/s", "")
	row("manifest HEAD", b.head.perSec, d.head.perSec, "req/s", "")
	row("  HEAD p50", ms(b.head.p50), ms(d.head.p50), "ms", "")
	row("  HEAD p99", ms(b.head.p99), ms(d.head.p99), "ms", "")
	row("  HEAD server CPU", b.head.cpuUS, d.head.cpuUS, "µs/req", "≤ 0.25×")
	row("manifest GET", b.get.perSec, d.get.perSec, "req/s", "")
	row("  GET p50", ms(b.get.p50), ms(d.get.p50), "ms", "")
	row("  GET p99", ms(b.get.p99), ms(d.get.p99), "ms", "")
	row("  GET server CPU", b.get.cpuUS, d.get.cpuUS, "µs/req", "≤ 0.25×")
	row(fmt.Sprintf("small-image push (%d tags)", o.tags), b.smallRate, d.smallRate, "img/s", "≥ 4×")
	row(fmt.Sprintf("  first %d tags", o.bucket), b.smallFirst, d.smallFirst, "img/s", "")
	row(fmt.Sprintf("  last %d tags", o.bucket), b.smallEnd, d.smallEnd, "img/s", "flat")
	tw.Flush()
	if b.smallFirst > 0 {
		fmt.Fprintf(w, "\nberth small-image push rate, last bucket / first bucket: %.2f (1.00 is flat)\n", b.smallEnd/b.smallFirst)
	}
	printRetries(w, "berth", b.retried)
	printRetries(w, "distribution", d.retried)
}

// printRetries says which temporary failures (429, 5xx) a registry's
// pushes were retried after, if any.
func printRetries(w io.Writer, name string, f failures) {
	if f.total() == 0 {
		return
	}
	fmt.Fprintf(w, "%s: pushes retried after temporary failures (as docker retries them):\n", name)
	f.print(w)
}
