package cluster

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
	"github.com/hashicorp/raft"
)

// testSeed returns BERTH_TEST_SEED or a fresh seed, and logs it so that a
// failure can be replayed.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BERTH_TEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("BERTH_TEST_SEED: %v", err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with BERTH_TEST_SEED=%d)", seed, seed)
	return seed
}

// randomLog builds n raft entries over a small universe of repositories,
// tags, blobs and manifests, so that commands collide: re-puts, tag moves,
// deletes of indexed children, unlinks of referenced blobs, and some
// commands that are rejected. It applies them to a scratch state machine
// as it goes, so that workers' updates mostly name tasks their claims hold.
func randomLog(t testing.TB, rng *rand.Rand, n int) []*raft.Log {
	scratch := newHarness(t)
	repos := []string{"a", "a/b", "ab", "lib/x"}
	tags := []string{"latest", "v1", "v2", "sha256-x.sig"}
	type known struct {
		rec     oci.Record
		payload []byte
	}
	var made []known
	logs := make([]*raft.Log, 0, n)
	for i := 0; i < n; i++ {
		repo := repos[rng.IntN(len(repos))]
		var c command
		switch p := rng.IntN(140); {
		case p < 35 || len(made) == 0:
			var blobs, children []oci.Digest
			for j := rng.IntN(4); j > 0; j-- {
				blobs = append(blobs, blobDigest(rng.IntN(12)))
			}
			var subject oci.Digest
			if len(made) > 0 && rng.IntN(4) == 0 {
				k := made[rng.IntN(len(made))]
				if rng.IntN(2) == 0 {
					children = append(children, k.rec.Digest)
				} else {
					subject = k.rec.Digest
				}
			}
			rec, payload := manifest(repo, strconv.Itoa(rng.IntN(40)), blobs, children, subject)
			made = append(made, known{rec, payload})
			tag := ""
			if rng.IntN(2) == 0 {
				tag = tags[rng.IntN(len(tags))]
			}
			c = versionAtRandom(rng, i, putCmd(rec, payload, tag))
		case p < 45:
			k := made[rng.IntN(len(made))] // re-put a known manifest, maybe in another repo
			rec := k.rec
			rec.Repo = repo
			c = versionAtRandom(rng, i, putCmd(rec, k.payload, tags[rng.IntN(len(tags))]))
		case p < 60:
			c = versionAtRandom(rng, i, command{Op: opDeleteManifest, Repo: repo, Digest: made[rng.IntN(len(made))].rec.Digest})
		case p < 70:
			c = versionAtRandom(rng, i, command{Op: opDeleteTag, Repo: repo, Tag: tags[rng.IntN(len(tags))]})
			if rng.IntN(4) == 0 {
				c.IfDigest = made[rng.IntN(len(made))].rec.Digest
			}
		case p < 82:
			c = command{Op: opLinkBlob, Repo: repo, Digest: blobDigest(rng.IntN(12)), Size: rng.Int64N(1000), Time: int64(i)}
		case p < 87:
			c = command{Op: opUnlinkBlob, Repo: repo, Digest: blobDigest(rng.IntN(12))}
		case p < 92:
			// GC's unlink keeps links made at or after its cutoff.
			c = command{Op: opUnlinkBlobs, Digests: []oci.Digest{blobDigest(rng.IntN(12)), blobDigest(rng.IntN(12))}, Time: int64(rng.IntN(i + 1))}
		case p < 94:
			c = command{Op: opPutUser, Name: fmt.Sprintf("u%d", rng.IntN(3)), Hash: []byte{byte(i)}, Admin: rng.IntN(2) == 0}
		case p < 96:
			c = randomAccess(rng, i)
		case p < 100:
			c = command{Op: opDeleteManifest, Repo: "Bad Repo", Digest: "x"} // rejected
		default:
			running, err := scratch.f.indexedTasks(bucketTasksRunning, func(policy.Task) bool { return true })
			if err != nil {
				t.Fatal(err)
			}
			c = randomReplication(rng, i, repo, tags, made[rng.IntN(len(made))].rec.Digest, running)
		}
		b, _ := encodeCommand(c)
		typ := raft.LogCommand
		if rng.IntN(50) == 0 {
			typ, b = raft.LogConfiguration, nil
		}
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: 1, Type: typ, Data: b})
		scratch.f.Apply(logs[len(logs)-1])
	}
	return logs
}

// versionAtRandom makes c, a put or delete, a local write of cluster "ca"
// at time i, or a write replicated from "cb" with a random version, or
// leaves it without versions (a command from before them).
func versionAtRandom(rng *rand.Rand, i int, c command) command {
	switch rng.IntN(3) {
	case 0:
		c.Origin, c.Time = "ca", int64(i)*1e6
	case 1:
		c.Origin, c.Time = "ca", int64(i)*1e6
		if c.Op != opDeleteManifest {
			c.Version = oci.TagVersion{HLC: uint64(1+rng.IntN(i+1)) << 16, Origin: "cb"}
		}
	}
	return c
}

// randomReplication returns a replication command over a small universe
// of rules and ids, so that claims collide, leases expire, updates come
// under stale claims, and executions are stopped and pruned.
func randomReplication(rng *rand.Rand, i int, repo string, tags []string, d oci.Digest, running []policy.Task) command {
	now := int64(i)
	rules := []policy.Rule{
		{Name: "ev", Endpoint: "m", Repos: "a/**", Trigger: policy.TriggerEvent, Delete: true, Enabled: true, Concurrency: 2},
		{Name: "lax", Endpoint: "m", Trigger: policy.TriggerEvent, Enabled: true, DestPrefix: "x"},
		{Name: "man", Endpoint: "m", Trigger: policy.TriggerManual, Enabled: rng.IntN(2) == 0},
		{Name: "lost", Endpoint: "nowhere", Trigger: policy.TriggerEvent, Enabled: true}, // rejected
	}
	names := []string{"ev", "lax", "man", "lost"}
	task := func() policy.Task {
		t := policy.Task{Kind: policy.TaskCopy, Repo: repo, Tag: tags[rng.IntN(len(tags))], Digest: d}
		if rng.IntN(3) == 0 {
			t.Kind, t.Tag = policy.TaskDelete, ""
		}
		return t
	}
	var ts []policy.Task
	for j := rng.IntN(4); j > 0; j-- {
		ts = append(ts, task())
	}
	claim := func() string { return fmt.Sprintf("c%d", rng.IntN(8)) }
	switch rng.IntN(12) {
	case 0:
		return command{Op: opPutEndpoint, Endpoint: &policy.Endpoint{Name: "m", URL: "https://m.example", Type: policy.EndpointBerth}, Time: now}
	case 1:
		r := rules[rng.IntN(len(rules))]
		return command{Op: opPutRule, Rule: &r, Time: now}
	case 2:
		switch rng.IntN(4) {
		case 0:
			return command{Op: opDeleteEndpoint, Name: "m"}
		case 1:
			return command{Op: opDeleteRule, Name: names[rng.IntN(len(names))], Time: now}
		}
		r := rules[rng.IntN(len(rules))]
		return command{Op: opPutRule, Rule: &r, Time: now}
	case 3:
		return command{Op: opStartExecution, Name: names[rng.IntN(len(names))], Trigger: policy.TriggerManual,
			Token: fmt.Sprintf("t%d", rng.IntN(20)), Tasks: ts, Done: rng.IntN(3) > 0, Time: now}
	case 4:
		return command{Op: opAddTasks, Exec: uint64(1 + rng.IntN(20)), Tasks: ts, Done: rng.IntN(2) == 0, Time: now}
	case 5, 6, 7:
		return command{Op: opClaimTasks, Node: fmt.Sprintf("n%d", rng.IntN(3)), Claim: claim(), Max: rng.IntN(4), Time: now, Until: now + int64(1+rng.IntN(30))}
	case 8, 9:
		statuses := []string{policy.StatusRunning, policy.StatusRetrying, policy.StatusSucceeded, policy.StatusFailed}
		var us []policy.TaskUpdate
		for j := 1 + rng.IntN(3); j > 0; j-- {
			u := policy.TaskUpdate{
				ID: uint64(1 + rng.IntN(40)), Claim: claim(), Status: statuses[rng.IntN(len(statuses))],
				Bytes: rng.Int64N(100), Error: "e", NextAttempt: now + rng.Int64N(10), LeaseUntil: now + rng.Int64N(30),
			}
			if len(running) > 0 && rng.IntN(4) > 0 {
				t := running[rng.IntN(len(running))]
				u.ID, u.Claim = t.ID, t.Claim
			}
			us = append(us, u)
		}
		return command{Op: opUpdateTasks, Updates: us, Time: now}
	case 10:
		return command{Op: opStopExecution, Exec: uint64(1 + rng.IntN(20)), Time: now}
	default:
		if rng.IntN(2) == 0 {
			return command{Op: opPurgeTombstones, Time: rng.Int64N(now+1) * 1e6}
		}
		return command{Op: opPruneHistory, Time: rng.Int64N(now + 1), Keep: rng.IntN(6)}
	}
}

// applyInBatches applies logs in random-sized batches.
func applyInBatches(rng *rand.Rand, f *fsm, logs []*raft.Log) []any {
	var resp []any
	for len(logs) > 0 {
		k := 1 + rng.IntN(min(len(logs), 64))
		resp = append(resp, f.ApplyBatch(logs[:k])...)
		logs = logs[k:]
	}
	return resp
}

func TestSameLogSameState(t *testing.T) {
	seed := testSeed(t)
	logs := randomLog(t, rand.New(rand.NewPCG(seed, 1)), 1500)

	a, b := newHarness(t), newHarness(t)
	var respA []any
	for _, l := range logs {
		respA = append(respA, a.f.Apply(l))
	}
	respB := applyInBatches(rand.New(rand.NewPCG(seed, 2)), b.f, logs)

	var rejected int
	for i := range respA {
		if fmt.Sprint(respA[i]) != fmt.Sprint(respB[i]) {
			t.Fatalf("entry %d: response %v one by one, %v in batches", i+1, respA[i], respB[i])
		}
		if respA[i] != nil {
			rejected++
		}
	}
	t.Logf("%d entries, %d rejected", len(logs), rejected)
	if rejected == 0 || rejected == len(logs) {
		t.Fatalf("the random log should mix accepted and rejected commands (%d rejected)", rejected)
	}
	hash := a.hash()
	if b.hash() != hash {
		t.Fatal("two state machines fed the same log differ")
	}
	checkInvariants(t, a.f)

	// A replay of the whole log (a restart) changes nothing.
	applyInBatches(rand.New(rand.NewPCG(seed, 3)), a.f, logs)
	if a.hash() != hash || a.f.applied.Load() != uint64(len(logs)) {
		t.Fatal("replaying the log changed the state")
	}

	// A machine restored from a snapshot taken half way, then fed the rest
	// of the log (including the entries the snapshot already holds), ends
	// equal too.
	c := newHarness(t)
	half := len(logs) / 2
	applyInBatches(rand.New(rand.NewPCG(seed, 4)), c.f, logs[:half])
	d := newHarness(t)
	if err := d.f.Restore(nopCloser(snapshotBytes(t, c.f))); err != nil {
		t.Fatal(err)
	}
	applyInBatches(rand.New(rand.NewPCG(seed, 5)), d.f, logs[half-10:])
	if d.hash() != hash {
		t.Fatal("snapshot + rest of log differs from the full log")
	}
}

// randomAccess is a command of the access model: projects (with quotas
// small enough to refuse pushes, and immutability rules), members, audit
// events and pull counts, audit pruning, retention runs.
func randomAccess(rng *rand.Rand, i int) command {
	projects := []string{"a", "lib"}
	p := projects[rng.IntN(len(projects))]
	switch rng.IntN(7) {
	case 5:
		return command{Op: opPruneAudit, Keep: rng.IntN(4), Time: int64(rng.IntN(i + 1))}
	case 0:
		return command{Op: opPutProject, Create: true, Time: int64(i), Project: &policy.Project{Name: p,
			Quota: policy.Quota{Storage: rng.Int64N(3000) - 1, Count: rng.Int64N(6) - 1}}}
	case 1:
		return command{Op: opPutProject, Fields: []string{FieldImmutable}, Time: int64(i), Project: &policy.Project{Name: p,
			Immutable: []policy.ImmutableRule{{Repos: "**", Tags: "v*", Disabled: rng.IntN(2) == 0}}}}
	case 2:
		return command{Op: opPutMember, Create: rng.IntN(2) == 0, Member: &policy.Member{Project: p,
			User: fmt.Sprintf("u%d", rng.IntN(3)), Role: policy.Roles[rng.IntN(len(policy.Roles))]}}
	case 3:
		return command{Op: opAppendAudit, Time: int64(i), Events: []policy.AuditEvent{{Actor: "u0", Op: policy.AuditPull, Project: p}},
			Pulls: []PullCount{{Repo: p + "/x", Digest: blobDigest(rng.IntN(12)), Count: 1, Last: int64(i)}}}
	case 4:
		return command{Op: opDeleteProject, Name: p}
	}
	return command{Op: opPutRetentionRun, Run: &policy.RetentionRun{ID: uint64(i + 1), Project: p, Status: policy.RunSucceeded}}
}
