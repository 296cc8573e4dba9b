package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"text/tabwriter"
	"time"
)

// Targets of the cluster bench.
const (
	clusterPushTarget    = 0.70                   // cluster push throughput / single-node berth
	killTargetP99        = 2 * time.Second        // SIGKILL of the leader: writes resume within, p99
	handoverTargetMax    = 300 * time.Millisecond // SIGTERM of the leader: write unavailability
	targetSingle         = "1 node"
	targetLeader         = "leader"
	targetFollower       = "follower"
	probeBlobDescription = "a 64-byte blob upload (HEAD, POST, PUT) and a manifest PUT"
)

// clusterResult is what the cluster bench measured.
type clusterResult struct {
	nodes     int
	push      map[string]pushResult // by target
	kills     []outage
	handovers []outage
	wall      time.Duration
}

// measureCluster compares push throughput against one node of a cluster
// (its leader, then a follower) with single-node berth, then stops the
// leader of a cluster over and over (SIGKILL, then SIGTERM) and measures
// how long writes stop. Each part starts fresh processes in dir.
func measureCluster(ctx context.Context, o options, dir string) (clusterResult, error) {
	r := clusterResult{nodes: o.clusterNodes, push: map[string]pushResult{}}
	start := time.Now()
	defer func() { r.wall = time.Since(start) }()
	if o.clusterPush {
		if err := measureClusterPush(ctx, o, dir, &r); err != nil {
			return r, err
		}
	}
	if o.kills > 0 || o.handovers > 0 {
		cl, err := startCluster(ctx, o.berthBin, filepath.Join(dir, "cluster-failover"), o.clusterNodes, "info")
		if err != nil {
			return r, err
		}
		defer cl.stop()
		if o.kills > 0 {
			fmt.Fprintf(os.Stderr, "failover: %d × SIGKILL of the leader\n", o.kills)
			if r.kills, err = measureFailovers(ctx, cl, o.kills, syscall.SIGKILL); err != nil {
				return r, err
			}
		}
		if o.handovers > 0 {
			fmt.Fprintf(os.Stderr, "failover: %d × SIGTERM of the leader\n", o.handovers)
			if r.handovers, err = measureFailovers(ctx, cl, o.handovers, syscall.SIGTERM); err != nil {
				return r, err
			}
		}
	}
	return r, nil
}

// measureClusterPush runs the push workloads against single-node berth,
// the leader of a cluster and one of its followers, all running at once,
// in rounds that take turns (each round in another order), so that a
// change of the machine's load during the run weighs on all three alike.
func measureClusterPush(ctx context.Context, o options, dir string, r *clusterResult) error {
	rounds := max(1, o.clusterRounds)
	perRound := max(o.workers, o.blobs/rounds)
	blobs := make([][]byte, perRound)
	for i := range blobs {
		blobs[i] = make([]byte, o.blobMB<<20)
		_, _ = rand.Read(blobs[i])
	}
	sdir := filepath.Join(dir, "cluster-push-single")
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		return err
	}
	single, err := startBerth(ctx, o.berthBin, sdir)
	if err != nil {
		return err
	}
	defer single.stop()
	cl, err := startCluster(ctx, o.berthBin, filepath.Join(dir, "cluster-push"), o.clusterNodes, "warn")
	if err != nil {
		return err
	}
	defer cl.stop()
	names := []string{targetSingle, targetLeader, targetFollower}
	for round := range rounds {
		for i := range names {
			name := names[(i+round)%len(names)]
			t := pushTarget{name: name, srv: single, leader: single, nodes: []*server{single}}
			if name != targetSingle {
				// The leader may have changed since the last round
				// (an election when heartbeats were late): push to
				// whoever has the role now.
				leader, err := cl.waitHealthy(ctx, time.Minute)
				if err != nil {
					return err
				}
				t.srv, t.leader, t.nodes = leader, leader, cl.nodes
				if name == targetFollower {
					t.srv = cl.others(leader)[0]
				}
			}
			pr, err := measurePushes(ctx, t, round, blobs, max(1, o.clusterTags/rounds), o)
			if err != nil {
				return err
			}
			r.push[name] = r.push[name].add(pr)
		}
	}
	return nil
}

// printCluster prints the cluster push table and the failover
// distributions.
func printCluster(w io.Writer, r clusterResult, o options) {
	cores := runtime.NumCPU()
	if len(r.push) > 0 {
		fmt.Fprintf(w, "\n%d-node berth cluster (blob_write_quorum 2) against single-node berth, same workloads in %d rounds taking turns; "+
			"the %d nodes and this load generator share %d cores and one disk\n", r.nodes, o.clusterRounds, r.nodes, cores)
		single, leader, follower := r.push[targetSingle], r.push[targetLeader], r.push[targetFollower]
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "metric\t1 node\tleader\tleader/1 node\tfollower\tfollower/1 node\ttarget\t")
		ratio := func(a, b float64) string {
			if b <= 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f×", a/b)
		}
		row := func(name string, s, l, f float64, unit, target string) {
			fmt.Fprintf(tw, "%s\t%.1f %s\t%.1f %s\t%s\t%.1f %s\t%s\t%s\t\n", name, s, unit, l, unit, ratio(l, s), f, unit, ratio(f, s), target)
		}
		target := fmt.Sprintf("≥ %.2f×", clusterPushTarget)
		row(fmt.Sprintf("blob push (%d × %d MiB)", single.blobs, o.blobMB), single.blobMBs(), leader.blobMBs(), follower.blobMBs(), "MiB/s", target)
		row(fmt.Sprintf("small-image push (%d tags)", single.images), single.imageRate(), leader.imageRate(), follower.imageRate(), "img/s", target)
		pct := func(name string, s, l, f float64) {
			fmt.Fprintf(tw, "%s\t%.0f%%\t%.0f%%\t\t%.0f%%\t\t\t\n", name, 100*s, 100*l, 100*f)
		}
		fmt.Fprintf(tw, "  leader changes during the pushes\t-\t%.0f\t\t%.0f\t\t\t\n",
			leader.blob.newLeaders+leader.imgs.newLeaders, follower.blob.newLeaders+follower.imgs.newLeaders)
		pct(fmt.Sprintf("  CPU busy (%d cores), blobs", cores), single.blob.busy(), leader.blob.busy(), follower.blob.busy())
		pct(fmt.Sprintf("  CPU busy (%d cores), images", cores), single.imgs.busy(), leader.imgs.busy(), follower.imgs.busy())
		pct("  CPU pressure, blobs", single.blob.cpuStall, leader.blob.cpuStall, follower.blob.cpuStall)
		pct("  CPU pressure, images", single.imgs.cpuStall, leader.imgs.cpuStall, follower.imgs.cpuStall)
		pct("  IO pressure, blobs", single.blob.ioStall, leader.blob.ioStall, follower.blob.ioStall)
		pct("  IO pressure, images", single.imgs.ioStall, leader.imgs.ioStall, follower.imgs.ioStall)
		tw.Flush()
		fmt.Fprintln(w, "CPU busy: CPU time of the registry's processes and this load generator over wall time × cores; "+
			"pressure: share of the time some task of the machine, ours or another's, waited for a CPU or for I/O (Linux PSI)")
		for _, t := range []string{targetSingle, targetLeader, targetFollower} {
			printRetries(w, t+" ("+r.push[t].entry+")", r.push[t].retried)
		}
		printPushBreakdown(w, r, o)
	}
	if len(r.kills) > 0 {
		fmt.Fprintf(w, "\nfailover: %d × SIGKILL of the leader of a %d-node cluster (restarted after each); writes through a survivor, back to back: %s\n",
			len(r.kills), r.nodes, probeBlobDescription)
		printOutages(w, r.kills, syscall.SIGKILL)
	}
	if len(r.handovers) > 0 {
		fmt.Fprintf(w, "\nhandover: %d × SIGTERM of the leader of a %d-node cluster (it hands leadership over, then exits; restarted after each)\n",
			len(r.handovers), r.nodes)
		printOutages(w, r.handovers, syscall.SIGTERM)
	}
	if len(r.kills) > 0 || len(r.handovers) > 0 {
		fmt.Fprintf(w, "(the %d nodes and this load generator share %d cores: an election competes with the probe and the restarted node for CPU)\n", r.nodes, cores)
	}
}

// printOutages prints the distribution of the outages and of their parts,
// and what the failed writes were told.
func printOutages(w io.Writer, os []outage, sig syscall.Signal) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "metric\tp50\tp90\tp99\tmax\ttarget\t")
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
	row := func(name, target string, get func(outage) (time.Duration, bool)) {
		var ds []time.Duration
		for _, o := range os {
			if d, ok := get(o); ok {
				ds = append(ds, d)
			}
		}
		if len(ds) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t%s\t\n", name, target)
			return
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", name, ms(quantile(ds, 0.5)), ms(quantile(ds, 0.9)), ms(quantile(ds, 0.99)), ms(quantile(ds, 1)), target)
	}
	always := func(f func(outage) time.Duration) func(outage) (time.Duration, bool) {
		return func(o outage) (time.Duration, bool) { return f(o), true }
	}
	logged := func(f func(outage) time.Duration) func(outage) (time.Duration, bool) {
		return func(o outage) (time.Duration, bool) { d := f(o); return d, d > 0 }
	}
	if sig == syscall.SIGKILL {
		row("kill → a write succeeds", fmt.Sprintf("p99 ≤ %s", killTargetP99), always(func(o outage) time.Duration { return o.gap }))
		row("  kill → election starts (raft log)", "", logged(func(o outage) time.Duration { return o.detected }))
		row("  kill → new leader (log)", "", logged(func(o outage) time.Duration { return o.elected }))
	} else {
		row("write unavailability", fmt.Sprintf("≤ %s", handoverTargetMax), always(func(o outage) time.Duration { return o.gap }))
		row("  SIGTERM → new leader (log)", "", logged(func(o outage) time.Duration { return o.elected }))
		row("  SIGTERM → process exit", "", always(func(o outage) time.Duration { return o.exited }))
	}
	row("  that write: blob steps", "", always(func(o outage) time.Duration { return o.resumed.blob }))
	row("  that write: manifest PUT", "", always(func(o outage) time.Duration { return o.resumed.manifest }))
	tw.Flush()
	var errs failures
	failed, viaLead := 0, 0
	for _, o := range os {
		failed += o.failed
		errs.merge(o.errs)
		if o.viaLead {
			viaLead++
		}
	}
	restarts, refusals := 0, 0
	slowest := os[0]
	for _, o := range os {
		restarts += o.restarts
		refusals += o.refusals
		if o.gap > slowest.gap {
			slowest = o
		}
	}
	fmt.Fprintf(w, "raft logs: %d pre-votes refused because the voter still heard from a leader, %d elections timed out and began again\n", refusals, restarts)
	orNone := func(d time.Duration) string {
		if d == 0 {
			return "none logged"
		}
		return ms(d)
	}
	fmt.Fprintf(w, "slowest: %s via %s; election started after %s, new leader after %s (%d refused pre-votes, %d restarts)\n",
		ms(slowest.gap), slowest.via, orNone(slowest.detected), orNone(slowest.elected), slowest.refusals, slowest.restarts)
	if sig != syscall.SIGKILL {
		var no failures
		handed := 0
		for _, o := range os {
			switch {
			case o.handover == msgHandedOver:
				handed++
			case o.handover != "":
				no.add(errors.New(o.handover))
			}
		}
		fmt.Fprintf(w, "the stopped leader logged that it handed leadership over in %d of %d", handed, len(os))
		if no.total() == 0 {
			fmt.Fprintln(w)
		} else {
			fmt.Fprintln(w, "; it logged:")
			no.print(w)
		}
	}
	fmt.Fprintf(w, "the probe's node became the leader in %d of %d; %d writes failed in all", viaLead, len(os), failed)
	if failed == 0 {
		fmt.Fprintln(w)
		return
	}
	fmt.Fprintln(w, ":")
	errs.print(w)
}

// printPushBreakdown prints, for each push workload, where the time went:
// the mean server-side duration of each request kind on the node pushed to,
// the Raft apply and commit times, and the requests between nodes, from the
// nodes' own /metrics (counts are per image or per blob).
func printPushBreakdown(w io.Writer, r clusterResult, o options) {
	targets := []string{targetSingle, targetLeader, targetFollower}
	for _, wl := range []struct {
		name, unit string
		n          func(pushResult) int
		get        func(pushResult) usage
	}{
		{"blob push", "blob", func(p pushResult) int { return p.blobs }, func(p pushResult) usage { return p.blob }},
		{"small-image push", "image", func(p pushResult) int { return p.images }, func(p pushResult) usage { return p.imgs }},
	} {
		fmt.Fprintf(w, "\nwhere the time goes, %s: server-side mean, × requests per %s (from the nodes' /metrics)\n", wl.name, wl.unit)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprint(tw, "on\trequest")
		for _, t := range targets {
			fmt.Fprintf(tw, "\t%s (%s)", t, r.push[t].entry)
		}
		fmt.Fprintln(tw, "\t")
		row := func(on, name string, cell func(usage) histogram) {
			fmt.Fprintf(tw, "%s\t%s", on, name)
			for _, t := range targets {
				h := cell(wl.get(r.push[t]))
				if h.count == 0 {
					fmt.Fprint(tw, "\t-")
					continue
				}
				fmt.Fprintf(tw, "\t%.2f ms × %.2f", float64(h.mean.Microseconds())/1000, h.count/float64(wl.n(r.push[t])))
			}
			fmt.Fprintln(tw, "\t")
		}
		entryHTTP := func(method, route string) func(usage) histogram {
			return func(u usage) histogram {
				return u.metrics[roleEntry].hist("berth_http_request_duration_seconds", `method="`+method+`"`, `route="`+route+`"`)
			}
		}
		row("entry", "HEAD blob", entryHTTP("HEAD", "blobs"))
		row("entry", "POST upload", entryHTTP("POST", "uploads"))
		if wl.unit == "blob" {
			row("entry", "PATCH upload", entryHTTP("PATCH", "upload"))
		}
		row("entry", "PUT upload (fsync, quorum, link)", entryHTTP("PUT", "upload"))
		if wl.unit == "image" {
			row("entry", "PUT manifest", entryHTTP("PUT", "manifests"))
		}
		row("entry", "raft apply (propose→applied)", func(u usage) histogram {
			return u.metrics[roleEntry].hist("berth_raft_apply_duration_seconds")
		})
		row("leader", "raft commit", func(u usage) histogram {
			return u.metrics[roleLeader].hist("berth_raft_commit_duration_seconds")
		})
		row("leader", "internal POST (forwarded apply)", func(u usage) histogram {
			return u.metrics[roleLeader].hist("berth_http_request_duration_seconds", `method="POST"`, `route="`+internalRoute+`"`)
		})
		row("peers", "internal PUT blob (fsync)", func(u usage) histogram {
			return u.metrics[rolePeers].hist("berth_http_request_duration_seconds", `method="PUT"`, `route="`+internalRoute+`"`)
		})
		count := func(on, name string, get func(usage) float64) {
			fmt.Fprintf(tw, "%s\t%s", on, name)
			for _, t := range targets {
				if n := get(wl.get(r.push[t])); n > 0 {
					fmt.Fprintf(tw, "\t× %.2f", n/float64(wl.n(r.push[t])))
				} else {
					fmt.Fprint(tw, "\t-")
				}
			}
			fmt.Fprintln(tw, "\t")
		}
		count("entry", "blob pushes to a peer (write quorum)", func(u usage) float64 {
			return u.metrics[roleEntry].sum("berth_blob_transfers_total", `direction="push"`)
		})
		count("entry", "writes forwarded to the leader", func(u usage) float64 {
			return u.metrics[roleEntry].sum("berth_forwarded_requests_total", `kind="apply"`)
		})
		count("entry", "read-index requests to the leader", func(u usage) float64 {
			return u.metrics[roleEntry].sum("berth_forwarded_requests_total", `kind="readindex"`)
		})
		count("peers", "blob fetches by repair (a third copy)", func(u usage) float64 {
			return u.metrics[rolePeers].sum("berth_blob_transfers_total", `direction="fetch"`)
		})
		tw.Flush()
		fmt.Fprint(w, "CPU seconds, nodes + load generator, in wall seconds:")
		for _, t := range targets {
			u := wl.get(r.push[t])
			fmt.Fprintf(w, "  %s %.1f + %.1f in %.1f;", t, u.nodesCPU, u.benchCPU, u.wall.Seconds())
		}
		fmt.Fprintln(w)
	}
}

// internalRoute is the route label of the internal API in
// berth_http_request_duration_seconds.
const internalRoute = "/internal/v1/"
