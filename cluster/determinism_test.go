package cluster

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/berth-registry/berth/oci"
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
// commands that are rejected.
func randomLog(rng *rand.Rand, n int) []*raft.Log {
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
		switch p := rng.IntN(100); {
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
			c = putCmd(rec, payload, tag)
		case p < 45:
			k := made[rng.IntN(len(made))] // re-put a known manifest, maybe in another repo
			rec := k.rec
			rec.Repo = repo
			c = putCmd(rec, k.payload, tags[rng.IntN(len(tags))])
		case p < 60:
			c = command{Op: opDeleteManifest, Repo: repo, Digest: made[rng.IntN(len(made))].rec.Digest}
		case p < 70:
			c = command{Op: opDeleteTag, Repo: repo, Tag: tags[rng.IntN(len(tags))]}
		case p < 82:
			c = command{Op: opLinkBlob, Repo: repo, Digest: blobDigest(rng.IntN(12)), Size: rng.Int64N(1000), Time: int64(i)}
		case p < 87:
			c = command{Op: opUnlinkBlob, Repo: repo, Digest: blobDigest(rng.IntN(12))}
		case p < 92:
			// GC's unlink keeps links made at or after its cutoff.
			c = command{Op: opUnlinkBlobs, Digests: []oci.Digest{blobDigest(rng.IntN(12)), blobDigest(rng.IntN(12))}, Time: int64(rng.IntN(i + 1))}
		case p < 96:
			c = command{Op: opPutUser, Name: fmt.Sprintf("u%d", rng.IntN(3)), Hash: []byte{byte(i)}, Admin: rng.IntN(2) == 0}
		default:
			c = command{Op: opDeleteManifest, Repo: "Bad Repo", Digest: "x"} // rejected
		}
		b, _ := encodeCommand(c)
		typ := raft.LogCommand
		if rng.IntN(50) == 0 {
			typ, b = raft.LogConfiguration, nil
		}
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Term: 1, Type: typ, Data: b})
	}
	return logs
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
	logs := randomLog(rand.New(rand.NewPCG(seed, 1)), 1500)

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
