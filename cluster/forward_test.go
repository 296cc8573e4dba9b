package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// TestForwardCutOffIsUnavailable checks that a forwarded write whose leader
// dies before it answers (the connection breaks) fails as unavailable, the
// error the registry answers with 503 and the client retries, and is not
// retried by propose, since the leader may have applied it.
func TestForwardCutOffIsUnavailable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	lookup := func(id string) (Member, bool) { return Member{NodeInfo: NodeInfo{ID: id, HTTPAddr: addr}}, true }
	p := newHTTPPeers("n2", []byte("0123456789abcdef0123456789abcdef"), lookup, &http.Client{})
	_, err := p.Apply(context.Background(), "n1", []byte(`{"op":"put_user"}`))
	if err == nil {
		t.Fatal("Apply through a connection the leader closed succeeded")
	}
	if !errors.Is(err, oci.ErrUnavailable) {
		t.Errorf("Apply through a connection the leader closed: %v, want it to wrap oci.ErrUnavailable", err)
	}
	if retryable(err) {
		t.Errorf("Apply through a connection the leader closed: %v is retryable, but the leader may have applied it", err)
	}
}

// TestWireCodes: a rejection keeps its sentinel across a forwarded write.
func TestWireCodes(t *testing.T) {
	for _, s := range []error{oci.ErrNotFound, oci.ErrDenied, oci.ErrManifestBlobUnknown, ErrBadCommand,
		oci.ErrSuperseded, oci.ErrPreconditionFailed, policy.ErrInvalid, ErrUnsafe, ErrNotLeader, oci.ErrUnavailable} {
		err := fmt.Errorf("context: %w", s)
		if got := toWire(err).err(); !errors.Is(got, s) || got.Error() != err.Error() {
			t.Errorf("%v across the wire is %v", err, got)
		}
	}
}
