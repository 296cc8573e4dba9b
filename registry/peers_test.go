package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/berth-registry/berth/oci"
)

// fakePeers is the rest of a cluster as a test scripts it.
type fakePeers struct {
	mu         sync.Mutex
	replicated []oci.Digest
	replicate  error
	content    map[oci.Digest][]byte // what peers hold (what FetchBlob serves)
	repairs    []oci.Digest

	tag    string
	owners map[string]string // tag → host:port
}

func (p *fakePeers) ReplicateBlob(_ context.Context, d oci.Digest, _ int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.replicated = append(p.replicated, d)
	return p.replicate
}

func (p *fakePeers) FetchBlob(_ context.Context, d oci.Digest) (io.ReadCloser, int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.content[d]
	if !ok {
		return nil, 0, fmt.Errorf("no peer has %s: %w", d, oci.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

func (p *fakePeers) StatBlob(_ context.Context, d oci.Digest) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.content[d]
	if !ok {
		return 0, oci.ErrNotFound
	}
	return int64(len(b)), nil
}

func (p *fakePeers) RepairBlob(d oci.Digest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.repairs = append(p.repairs, d)
}

func (p *fakePeers) UploadTag() string { return p.tag }

func (p *fakePeers) UploadOwner(tag string) (string, bool) {
	a, ok := p.owners[tag]
	return a, ok
}

func (p *fakePeers) CountUploadProxied() {}

var (
	_ BlobPeers    = (*fakePeers)(nil)
	_ UploadRouter = (*fakePeers)(nil)
)

func clusteredRegistry(t *testing.T, tag string) (*testRegistry, *fakePeers) {
	t.Helper()
	tr := newTestRegistry(t, testOpts{})
	p := &fakePeers{content: map[oci.Digest][]byte{}, tag: tag, owners: map[string]string{}}
	tr.reg.JoinCluster(p, p)
	return tr, p
}

// TestUploadReplicatedBeforeLinked: a blob is acknowledged only once the
// write quorum holds it; when that fails, the upload fails and the blob is
// not linked.
func TestUploadReplicatedBeforeLinked(t *testing.T) {
	tr, p := clusteredRegistry(t, "0a0a0a0a")
	d := tr.pushBlob(t, "app", []byte("durable on two nodes"))
	if len(p.replicated) != 1 || p.replicated[0] != d {
		t.Fatalf("replicated %v, want [%s]", p.replicated, d)
	}
	p.replicate = fmt.Errorf("blob durable on 1 of 2 nodes: %w", oci.ErrUnavailable)
	lost := []byte("no quorum for me")
	ld := oci.DigestOf(lost)
	resp := tr.do(t, http.MethodPost, "/v2/app/blobs/uploads/?digest="+ld.String(), lost)
	wantError(t, resp, http.StatusServiceUnavailable, codeUnavailable)
	wantError(t, tr.do(t, http.MethodGet, "/v2/app/blobs/"+ld.String(), nil), http.StatusNotFound, codeBlobUnknown)
	// A chunked upload is replicated too, when it finishes.
	p.replicate = nil
	loc := tr.startSession(t, "app")
	if !strings.Contains(loc, "/0a0a0a0a-") {
		t.Fatalf("session %s does not carry the node's tag", loc)
	}
	wantStatus(t, tr.do(t, http.MethodPut, loc+"?digest="+ld.String(), lost), http.StatusCreated)
	if len(p.replicated) != 3 || p.replicated[2] != ld {
		t.Fatalf("replicated %v", p.replicated)
	}
}

// TestBlobReadFromPeer: a linked blob this node does not hold is served from
// a peer (HEAD by size, GET streamed) and kept here.
func TestBlobReadFromPeer(t *testing.T) {
	tr, p := clusteredRegistry(t, "0b0b0b0b")
	content := bytes.Repeat([]byte("layer data "), 300_000) // 3.3 MB: more than is held back
	d := tr.pushBlob(t, "app", content)
	if err := tr.reg.blobs.Delete(d); err != nil {
		t.Fatal(err)
	}
	p.content[d] = content

	head := tr.do(t, http.MethodHead, "/v2/app/blobs/"+d.String(), nil)
	wantStatus(t, head, http.StatusOK)
	wantHeader(t, head, "Content-Length", fmt.Sprint(len(content)))
	if len(p.repairs) != 1 || p.repairs[0] != d {
		t.Fatalf("HEAD of a missing blob queued repairs %v", p.repairs)
	}
	get := tr.do(t, http.MethodGet, "/v2/app/blobs/"+d.String(), nil)
	wantStatus(t, get, http.StatusOK)
	if !bytes.Equal(get.body, content) {
		t.Fatalf("streamed body: %d bytes, want the blob's %d", len(get.body), len(content))
	}
	if !storeHas(t, tr.reg.blobs, d) {
		t.Fatal("the blob read from a peer was not kept")
	}

	// A range of a missing blob is fetched whole, then served.
	if err := tr.reg.blobs.Delete(d); err != nil {
		t.Fatal(err)
	}
	part := tr.do(t, http.MethodGet, "/v2/app/blobs/"+d.String(), nil, withHeader("Range", "bytes=10-19"))
	wantStatus(t, part, http.StatusPartialContent)
	if !bytes.Equal(part.body, content[10:20]) {
		t.Fatalf("range = %q", part.body)
	}
	// A manifest may reference a blob only a peer holds.
	if err := tr.reg.blobs.Delete(d); err != nil {
		t.Fatal(err)
	}
	if err := tr.reg.blobPresent(t.Context(), d); err != nil {
		t.Fatalf("blob held by a peer not present: %v", err)
	}
}

// TestCorruptPeerBlobNeverServed: a peer that sends bytes that do not hash
// to the digest gets the response cut before its end, and nothing is kept.
func TestCorruptPeerBlobNeverServed(t *testing.T) {
	tr, p := clusteredRegistry(t, "0c0c0c0c")
	content := bytes.Repeat([]byte("good "), 600_000)
	d := tr.pushBlob(t, "app", content)
	if err := tr.reg.blobs.Delete(d); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(content)
	bad[len(bad)-1] ^= 1
	p.content[d] = bad

	req, err := http.NewRequest(http.MethodGet, tr.srv.URL+"/v2/app/blobs/"+d.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(adminUser, adminPass)
	resp, err := tr.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr == nil || len(got) >= len(content) {
		t.Fatalf("client read %d of %d bytes without error (%v): a corrupt blob was served whole", len(got), len(content), rerr)
	}
	if len(got) > len(content)-tailHold {
		t.Fatalf("client got %d bytes: more than all but the held-back tail", len(got))
	}
	if storeHas(t, tr.reg.blobs, d) {
		t.Fatal("a corrupt copy was kept")
	}
}

// TestUploadProxiedToOwner: an upload session opened on one node is
// continued through another, which proxies every request to the owner.
func TestUploadProxiedToOwner(t *testing.T) {
	a, pa := clusteredRegistry(t, "aaaaaaaa")
	b, pb := clusteredRegistry(t, "bbbbbbbb")
	ua, _ := url.Parse(a.srv.URL)
	ub, _ := url.Parse(b.srv.URL)
	pa.owners["bbbbbbbb"] = ub.Host
	pb.owners["aaaaaaaa"] = ua.Host

	loc := a.startSession(t, "app")
	chunk1, chunk2 := []byte("first half, "), []byte("second half")
	patch := b.do(t, http.MethodPatch, loc, chunk1, withHeader("Content-Range", fmt.Sprintf("0-%d", len(chunk1)-1)))
	wantStatus(t, patch, http.StatusAccepted)
	wantHeader(t, patch, "Range", fmt.Sprintf("0-%d", len(chunk1)-1))
	wantStatus(t, b.do(t, http.MethodGet, loc, nil), http.StatusNoContent)
	all := append(bytes.Clone(chunk1), chunk2...)
	d := oci.DigestOf(all)
	wantStatus(t, b.do(t, http.MethodPut, loc+"?digest="+d.String(), chunk2,
		withHeader("Content-Range", fmt.Sprintf("%d-%d", len(chunk1), len(all)-1))), http.StatusCreated)
	// The owner stored and linked it; the proxy did not.
	if !storeHas(t, a.reg.blobs, d) || storeHas(t, b.reg.blobs, d) {
		t.Fatalf("blob on owner %v, on proxy %v", storeHas(t, a.reg.blobs, d), storeHas(t, b.reg.blobs, d))
	}
	// A session of a node that is gone is unknown; so is one proxied to a
	// node that does not hold it.
	gone := strings.Replace(loc, "/aaaaaaaa-", "/cccccccc-", 1)
	wantError(t, b.do(t, http.MethodGet, gone, nil), http.StatusNotFound, codeBlobUploadUnknown)
	wantError(t, a.do(t, http.MethodGet, strings.Replace(loc, "/aaaaaaaa-", "/bbbbbbbb-", 1), nil, withHeader(headerProxied, "bbbbbbbb")),
		http.StatusNotFound, codeBlobUploadUnknown)
}
