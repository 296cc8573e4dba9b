package cluster

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// TestLargestManifestFitsACommand checks that the put_manifest command of a
// manifest as large as the registry accepts, made of annotations that JSON
// escapes the most, is not refused as too large.
func TestLargestManifestFitsACommand(t *testing.T) {
	for _, fill := range []string{"A", "<"} {
		head := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
			`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + strings.Repeat("a", 64) + `","size":2},` +
			`"layers":[],"annotations":{"a":"`
		tail := `"}}`
		body := []byte(head + strings.Repeat(fill, oci.MaxManifestSize-len(head)-len(tail)) + tail)
		m, err := oci.ParseManifest("application/vnd.oci.image.manifest.v1+json", body)
		if err != nil {
			t.Fatalf("fill %q: parse: %v", fill, err)
		}
		d := oci.Digest("sha256:" + strings.Repeat("b", 64))
		rec := oci.NewRecord("big/repo", d, int64(len(body)), m, 1)
		b, err := encodeCommand(command{Op: opPutManifest, Record: &rec, Payload: body, Tag: "latest"})
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > maxCommandSize {
			t.Errorf("fill %q: a %d-byte manifest makes a %d-byte command, over maxCommandSize %d", fill, len(body), len(b), maxCommandSize)
		}
		if !json.Valid(b) {
			t.Errorf("fill %q: the command is not JSON", fill)
		}
	}
}

// TestLargestTaskChunksFitACommand checks that a chunk of tasks or updates
// as large as the node sends, with every field at its longest, is not
// refused as too large.
func TestLargestTaskChunksFitACommand(t *testing.T) {
	name := strings.Repeat("a/", oci.MaxNameLength/2) + "a"
	task := policy.Task{
		Policy: strings.Repeat("p", policy.MaxName), Endpoint: strings.Repeat("e", policy.MaxName), Kind: policy.TaskCopy,
		Repo: name, Tag: strings.Repeat("t", 128), Digest: oci.DigestOf(nil), DestRepo: name,
		Version: oci.TagVersion{HLC: 1<<64 - 1, Origin: strings.Repeat("o", 64)},
	}
	tasks := make([]policy.Task, taskChunk)
	for i := range tasks {
		tasks[i] = task
	}
	long := strings.Repeat("<", policy.MaxError) // JSON escapes it as six bytes
	updates := make([]policy.TaskUpdate, updateChunk)
	for i := range updates {
		updates[i] = policy.TaskUpdate{ID: 1<<64 - 1, Claim: strings.Repeat("c", maxClaimID), Status: policy.StatusFailed, Error: long, Note: long}
	}
	for _, c := range []command{
		{Op: opStartExecution, Name: task.Policy, Trigger: policy.TriggerManual, Token: strings.Repeat("k", 32), Tasks: tasks},
		{Op: opUpdateTasks, Updates: updates},
	} {
		b, err := encodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > maxCommandSize {
			t.Errorf("%s: %d bytes, over maxCommandSize %d", c.Op, len(b), maxCommandSize)
		}
	}
}
