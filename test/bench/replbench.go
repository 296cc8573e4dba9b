package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// replResult is the replication table: berth's engine against skopeo sync
// copying the same set between two berths, and berth's event latency.
type replResult struct {
	images, bytes         int64
	berthTime, skopeoTime time.Duration
	latency               *latencies
	latencyN              int
}

// measureReplication loads a set of images into a berth a, then times (1)
// a manual replication policy copying all of it to a fresh berth b and (2)
// `skopeo sync` copying the same set to another fresh berth; then it
// measures, with an event policy, the time from a push at a to the tag
// answering at b.
func measureReplication(ctx context.Context, o options, dir string) (replResult, error) {
	r := replResult{latency: &latencies{}}
	start := func(name string) (*server, error) {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
		s, err := startBerth(ctx, o.berthBin, d)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", name, err)
		}
		return s, nil
	}
	a, err := start("repl-a")
	if err != nil {
		return r, err
	}
	defer a.stop()
	b, err := start("repl-b")
	if err != nil {
		return r, err
	}
	defer b.stop()
	b2, err := start("repl-skopeo")
	if err != nil {
		return r, err
	}
	defer b2.stop()

	// The set: images of 3 layers of 1 to 8 MiB, and tiny images.
	ca := newClient(a)
	var repos []string
	for i := range o.replImages {
		repo := fmt.Sprintf("bench/img-%d", i)
		var layers [][]byte
		for j := range 3 {
			l := make([]byte, (1+(i*3+j)%8)<<20)
			_, _ = rand.Read(l)
			if err := ca.pushBlob(ctx, repo, l); err != nil {
				return r, err
			}
			layers = append(layers, l)
			r.bytes += int64(len(l))
		}
		config := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","n":%d}`, i))
		if _, err := ca.pushSmallBlob(ctx, repo, config); err != nil {
			return r, err
		}
		if err := ca.putManifest(ctx, repo, "v1", multiLayerManifest(config, layers)); err != nil {
			return r, err
		}
		repos = append(repos, repo)
	}
	for i := range o.replSmall {
		repo := fmt.Sprintf("small/s-%d", i)
		if err := ca.pushSmallImage(ctx, repo, "v1"); err != nil {
			return r, err
		}
		r.bytes += 1024
		repos = append(repos, repo)
	}
	r.images = int64(len(repos))

	// berth: one manual run of a policy copying everything.
	if err := api(ctx, a, http.MethodPost, "endpoints", map[string]any{"name": "b", "url": b.url, "user": b.user, "password": b.password}, nil); err != nil {
		return r, err
	}
	if err := api(ctx, a, http.MethodPost, "policies", map[string]any{"name": "all", "endpoint": "b", "trigger": "manual", "repos": "{bench,small}/**"}, nil); err != nil {
		return r, err
	}
	t0 := time.Now()
	var run struct{ Execution uint64 }
	if err := api(ctx, a, http.MethodPost, "policies/all/run", nil, &run); err != nil {
		return r, err
	}
	for {
		var ex struct {
			Status    string
			Succeeded int
			Failed    int
		}
		if err := api(ctx, a, http.MethodGet, fmt.Sprintf("executions/%d", run.Execution), nil, &ex); err != nil {
			return r, err
		}
		if ex.Status != "running" {
			if ex.Failed > 0 || int64(ex.Succeeded) != r.images {
				return r, fmt.Errorf("replication execution %s: %d succeeded, %d failed of %d", ex.Status, ex.Succeeded, ex.Failed, r.images)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.berthTime = time.Since(t0)

	// skopeo sync of the same set, from a YAML list of the images.
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		return r, fmt.Errorf("skopeo not found (make bench installs it with apt-get): %w", err)
	}
	host := strings.TrimPrefix(a.url, "http://")
	var y strings.Builder
	fmt.Fprintf(&y, "%s:\n  tls-verify: false\n  credentials:\n    username: %s\n    password: %s\n  images:\n", host, a.user, a.password)
	for _, repo := range repos {
		fmt.Fprintf(&y, "    %s: [\"v1\"]\n", repo)
	}
	yamlPath := filepath.Join(dir, "skopeo-sync.yaml")
	if err := os.WriteFile(yamlPath, []byte(y.String()), 0o600); err != nil {
		return r, err
	}
	t0 = time.Now()
	cmd := exec.CommandContext(ctx, skopeo, "sync", "--src", "yaml", "--dest", "docker",
		"--dest-tls-verify=false", "--dest-creds", b2.user+":"+b2.password, yamlPath, strings.TrimPrefix(b2.url, "http://")+"/mirror")
	var errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &errOut
	if err := cmd.Run(); err != nil {
		return r, fmt.Errorf("skopeo sync: %w: %s", err, lastLines(errOut.String(), 5))
	}
	r.skopeoTime = time.Since(t0)

	// Event latency: push at a, poll b until the tag answers.
	if err := api(ctx, a, http.MethodPost, "policies", map[string]any{"name": "events", "endpoint": "b", "trigger": "event", "repos": "lat/**"}, nil); err != nil {
		return r, err
	}
	cb := newClient(b)
	for i := range o.replLatency {
		tag := fmt.Sprintf("t%d", i)
		if err := ca.pushSmallImage(ctx, "lat/app", tag); err != nil {
			return r, err
		}
		pushed := time.Now()
		deadline := pushed.Add(30 * time.Second)
		for {
			resp, err := cb.do(ctx, http.MethodHead, "/v2/lat/app/manifests/"+tag, nil, 0, nil)
			if err == nil {
				drain(resp)
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				return r, fmt.Errorf("lat/app:%s not at b after 30 s", tag)
			}
			time.Sleep(5 * time.Millisecond)
		}
		r.latency.add(time.Since(pushed))
		r.latencyN++
	}
	return r, nil
}

// multiLayerManifest is an OCI image manifest of config and layers.
func multiLayerManifest(config []byte, layers [][]byte) []byte {
	var ls []any
	for _, l := range layers {
		ls = append(ls, map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digestOf(l), "size": len(l)})
	}
	b, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digestOf(config), "size": len(config)},
		"layers":        ls,
	})
	return b
}

// api calls the management API of s as its admin.
func api(ctx context.Context, s *server, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.url+"/api/v1/"+path, body)
	if err != nil {
		return err
	}
	req.SetBasicAuth(s.user, s.password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func printReplication(w io.Writer, r replResult) {
	mib := float64(r.bytes) / (1 << 20)
	fmt.Fprintf(w, "\nreplication a → b: %d artifacts, %.0f MiB (berth: a manual policy run; skopeo: sync of the same list)\n", r.images, mib)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "metric\tberth\tskopeo sync\tberth/skopeo\ttarget\t")
	bMB, sMB := mib/r.berthTime.Seconds(), mib/r.skopeoTime.Seconds()
	check := func(ok bool) string {
		if ok {
			return " ✓"
		}
		return " ✗"
	}
	fmt.Fprintf(tw, "throughput\t%.1f MiB/s\t%.1f MiB/s\t%.2f×\t≥ 2×%s\t\n", bMB, sMB, bMB/sMB, check(bMB/sMB >= 2))
	bA, sA := float64(r.images)/r.berthTime.Seconds(), float64(r.images)/r.skopeoTime.Seconds()
	fmt.Fprintf(tw, "artifacts\t%.1f /s\t%.1f /s\t%.2f×\t≥ 2×%s\t\n", bA, sA, bA/sA, check(bA/sA >= 2))
	fmt.Fprintf(tw, "wall time\t%s\t%s\t\t\t\n", r.berthTime.Round(time.Millisecond), r.skopeoTime.Round(time.Millisecond))
	p50, p99 := r.latency.percentile(0.50), r.latency.percentile(0.99)
	fmt.Fprintf(tw, "event latency p50 (%d pushes)\t%s\t\t\t≤ 1 s%s\t\n", r.latencyN, p50.Round(time.Millisecond), check(p50 <= time.Second))
	fmt.Fprintf(tw, "event latency p99\t%s\t\t\t≤ 3 s%s\t\n", p99.Round(time.Millisecond), check(p99 <= 3*time.Second))
	tw.Flush()
}
