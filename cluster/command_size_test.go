package cluster

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-registry/berth/oci"
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
