package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/berth-registry/berth/oci"
)

// Bounds of the regions scenario.
const (
	regionsConverge = 3 * time.Minute
	regionFaultMin  = 4 * time.Second
	regionFaultMax  = 15 * time.Second
)

// regionArgs make recoveries quick: short leases, retries at most 2 s
// apart, reconciliation every 3 s.
var regionArgs = []string{"--replication-lease", "3s", "--replication-retry-max", "2s", "--reconcile-interval", "3s"}

// TestRegions is the multi-region scenario: three single-node regions in
// a chain r1 → r2 → r3 and a dual-master pair d1 ⇄ d2, each a berth
// cluster of its own, with event policies that propagate deletes. A
// workload pushes to r1, and pushes conflicting writes and deletes of the
// same tags on both sides of the pair, while a seeded schedule cuts
// regions off the network, freezes and kills them. After the heal: every
// image acknowledged at r1 is at r2 and r3 with its digest; d1 and d2 hold
// the same tags, digests and versions; no log shows a panic.
//
// CHAOS_REGIONS_DURATION (default 2m) is the fault phase; CHAOS_SEED
// replays it; go test -run TestRegions runs it alone.
func TestRegions(t *testing.T) {
	cfg := chaosConfig(t)
	ctx := testContext(t)
	env := startEnv(t, ctx, cfg)
	dur := 2 * time.Minute
	if s := os.Getenv("CHAOS_REGIONS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CHAOS_REGIONS_DURATION: %v", err)
		}
		dur = d
	}
	r := &Report{
		Scenario: "regions: chain r1 → r2 → r3, dual-master d1 ⇄ d2",
		Seed:     cfg.Seed,
		Replay:   fmt.Sprintf("CHAOS_SEED=%d CHAOS_REGIONS_DURATION=%s make chaos", cfg.Seed, dur),
		Image:    cfg.Image,
		Nodes:    5,
		Planned:  dur,
	}
	defer finish(t, cfg, env, r)

	regions := map[string]*Node{}
	var all []*Node
	for _, name := range []string{"r1", "r2", "r3", "d1", "d2"} {
		c, err := env.StartCluster(ctx, ClusterSpec{Name: name, Nodes: 1, Args: regionArgs})
		if err != nil {
			r.Fail("start region %s: %v", name, err)
			return
		}
		regions[name] = c.Nodes[0]
		all = append(all, c.Nodes[0])
	}
	link := func(from, to string) error {
		n := regions[to]
		if err := adminAPI(ctx, regions[from], env.Password, http.MethodPost, "endpoints", map[string]any{
			"name": to, "url": fmt.Sprintf("http://%s:%d", n.Name, httpPort), "user": "admin", "password": env.Password,
		}); err != nil {
			return err
		}
		return adminAPI(ctx, regions[from], env.Password, http.MethodPost, "policies", map[string]any{
			"name": "to-" + to, "endpoint": to, "trigger": "event", "delete": true,
		})
	}
	for _, l := range [][2]string{{"r1", "r2"}, {"r2", "r3"}, {"d1", "d2"}, {"d2", "d1"}} {
		if err := link(l[0], l[1]); err != nil {
			r.Fail("policy %s → %s: %v", l[0], l[1], err)
			return
		}
	}

	client := NewClient(env.Password)
	defer client.Close()
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 7))
	var (
		mu       sync.Mutex
		chain    = map[string]Image{} // tag → what r1 acknowledged
		pairOps  int
		failures int
	)
	workCtx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		wrng := rand.New(rand.NewPCG(uint64(cfg.Seed), 11))
		for i := 0; workCtx.Err() == nil; i++ {
			img, err := random.Image(512, 1)
			if err != nil {
				continue
			}
			tag := "t" + strconv.Itoa(i)
			if err := client.Push(workCtx, regions["r1"], "chain/app", tag, img); err == nil {
				if im, err := describe(img, "chain/app", tag); err == nil {
					mu.Lock()
					chain[tag] = im
					mu.Unlock()
				}
			} else {
				mu.Lock()
				failures++
				mu.Unlock()
			}
			// The pair: the same few tags written and deleted on both sides.
			side := regions[[]string{"d1", "d2"}[wrng.IntN(2)]]
			ptag := "p" + strconv.Itoa(wrng.IntN(6))
			if wrng.IntN(4) == 0 {
				err = deleteTag(workCtx, side, env.Password, "pair/app", ptag)
			} else if img2, ierr := random.Image(256, 1); ierr == nil {
				err = client.Push(workCtx, side, "pair/app", ptag, img2)
			}
			mu.Lock()
			pairOps++
			if err != nil {
				failures++
			}
			mu.Unlock()
			waitUntil(workCtx, time.Now().Add(200*time.Millisecond))
		}
	})

	// Faults: one or two regions at a time cut off, frozen or killed.
	phaseStart := time.Now()
	var injected []string
	var fwg sync.WaitGroup
	busy := map[*Node]bool{}
	var bmu sync.Mutex
	for time.Since(phaseStart) < dur && ctx.Err() == nil {
		waitUntil(ctx, time.Now().Add(time.Duration(2+rng.IntN(4))*time.Second))
		n := all[rng.IntN(len(all))]
		bmu.Lock()
		if busy[n] || len(busy) >= 2 {
			bmu.Unlock()
			continue
		}
		busy[n] = true
		bmu.Unlock()
		kind := []string{"partition", "pause", "kill"}[rng.IntN(3)]
		hold := regionFaultMin + time.Duration(rng.Int64N(int64(regionFaultMax-regionFaultMin)))
		injected = append(injected, fmt.Sprintf("%6s %-9s %s for %s", time.Since(phaseStart).Round(time.Second), kind, n.Short, hold.Round(time.Second)))
		fwg.Go(func() {
			defer func() { bmu.Lock(); delete(busy, n); bmu.Unlock() }()
			var err error
			switch kind {
			case "partition":
				if err = n.Disconnect(ctx); err == nil {
					waitUntil(ctx, time.Now().Add(hold))
					err = n.Connect(ctx)
				}
			case "pause":
				if err = n.Pause(ctx); err == nil {
					waitUntil(ctx, time.Now().Add(hold))
					err = n.Unpause(ctx)
				}
			case "kill":
				if err = n.Kill(ctx); err == nil {
					waitUntil(ctx, time.Now().Add(hold))
					err = n.Start(ctx)
				}
			}
			if err != nil {
				t.Logf("%s of %s: %v", kind, n.Short, err)
			}
		})
	}
	fwg.Wait()
	stopWork()
	wg.Wait()
	r.Ran = time.Since(phaseStart)
	for _, in := range injected {
		r.Note("fault %s", in)
	}
	if did, err := HealAll(ctx, all); err != nil {
		r.Fail("heal: %v", err)
		return
	} else if len(did) > 0 {
		r.Note("the final heal had to: %s", strings.Join(did, ", "))
	}
	healed := time.Now()

	mu.Lock()
	want := make([]Image, 0, len(chain))
	for _, im := range chain {
		want = append(want, im)
	}
	r.Note("workload: %d images acknowledged at r1, %d writes and deletes on the pair, %d refused or failed during faults", len(want), pairOps, failures)
	mu.Unlock()

	// Convergence: the chain carries every image, the pair agrees.
	var lastErr error
	converged := pollUntil(ctx, regionsConverge, func() bool {
		for _, name := range []string{"r2", "r3"} {
			for _, im := range want {
				if _, _, err := client.Manifest(ctx, regions[name], im.Repo, im.Digest.String()); err != nil {
					lastErr = fmt.Errorf("%s lacks %s: %v", name, im, err)
					return false
				}
				d, _, err := headTag(ctx, regions[name], env.Password, im.Repo, im.Tag)
				if err != nil || d != im.Digest.String() {
					lastErr = fmt.Errorf("%s: %s:%s is %q (%v), want %s", name, im.Repo, im.Tag, d, err, im.Digest)
					return false
				}
			}
		}
		m1, err1 := pairState(ctx, regions["d1"], env.Password)
		m2, err2 := pairState(ctx, regions["d2"], env.Password)
		if err1 != nil || err2 != nil {
			lastErr = fmt.Errorf("read the pair: %v %v", err1, err2)
			return false
		}
		if !mapsEqual(m1, m2) {
			lastErr = fmt.Errorf("d1 %v\nd2 %v", m1, m2)
			return false
		}
		return true
	})
	r.Convergence = time.Since(healed)
	if !converged {
		r.Fail("regions did not converge within %s of the heal: %v", regionsConverge, lastErr)
	} else {
		r.Note("converged %s after the heal", r.Convergence.Round(time.Millisecond))
	}
	r.Acked = len(want)
	r.Images = CheckImages(ctx, client, []*Node{regions["r2"], regions["r3"]}, want)
	if r.Images.LostImages > 0 {
		r.Fail("%d of %d images acknowledged at r1 are not served intact by r2 and r3; first ones:\n%s",
			r.Images.LostImages, len(want), strings.Join(r.Images.Lost[:min(10, len(r.Images.Lost))], "\n"))
	}
	crashes, err := CheckLogs(ctx, all, artifactDir(t, cfg, env))
	r.Crashes = crashes
	if err != nil {
		r.Fail("read the container logs: %v", err)
	}
	if len(crashes) > 0 {
		r.Fail("%d log lines show a panic, a fatal error or a data race", len(crashes))
	}
}

// adminAPI calls n's management API as admin.
func adminAPI(ctx context.Context, n *Node, password, method, path string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, n.URL()+"/api/v1/"+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.SetBasicAuth("admin", password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg)
	}
	return nil
}

func regionRequest(ctx context.Context, n *Node, password, method, path string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	req, err := http.NewRequestWithContext(ctx, method, n.URL()+path, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.SetBasicAuth("admin", password)
	req.Header.Set("Accept", oci.MediaTypeImageManifest+", "+oci.MediaTypeImageIndex+", "+oci.MediaTypeDockerManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// deleteTag deletes repo:tag at n (gone already is fine).
func deleteTag(ctx context.Context, n *Node, password, repo, tag string) error {
	resp, err := regionRequest(ctx, n, password, http.MethodDelete, "/v2/"+repo+"/manifests/"+tag)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusNotFound {
		return fmt.Errorf("DELETE %s:%s: %s", repo, tag, resp.Status)
	}
	return nil
}

// headTag returns the digest and version of repo:tag at n ("" absent).
func headTag(ctx context.Context, n *Node, password, repo, tag string) (string, string, error) {
	resp, err := regionRequest(ctx, n, password, http.MethodHead, "/v2/"+repo+"/manifests/"+tag)
	if err != nil {
		return "", "", err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.Header.Get("Docker-Content-Digest"), resp.Header.Get(oci.HeaderTagVersion), nil
	case http.StatusNotFound:
		return "", "", nil
	}
	return "", "", fmt.Errorf("HEAD %s:%s: %s", repo, tag, resp.Status)
}

// pairState is pair/app's tags at n, each with its digest and version.
func pairState(ctx context.Context, n *Node, password string) (map[string]string, error) {
	out := map[string]string{}
	resp, err := regionRequest(ctx, n, password, http.MethodGet, "/v2/pair/app/tags/list")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return out, nil
	}
	var list struct{ Tags []string }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		return nil, err
	}
	slices.Sort(list.Tags)
	for _, tag := range list.Tags {
		d, v, err := headTag(ctx, n, password, "pair/app", tag)
		if err != nil {
			return nil, err
		}
		if d != "" {
			out[tag] = d + " " + v
		}
	}
	return out, nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
