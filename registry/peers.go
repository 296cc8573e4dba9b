package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"time"

	"github.com/berth-registry/berth/oci"
)

// BlobPeers are the other nodes of a cluster as blobs need them;
// *cluster.Node implements it. A one-node registry has none.
type BlobPeers interface {
	// ReplicateBlob makes a blob that is durable here durable on as many
	// other nodes as the blob write quorum asks. An upload is acknowledged
	// only after it returns nil.
	ReplicateBlob(ctx context.Context, d oci.Digest, size int64) error
	// FetchBlob opens a blob at a peer that holds it; the caller verifies
	// what it reads. It wraps oci.ErrNotFound when no peer has it.
	FetchBlob(ctx context.Context, d oci.Digest) (io.ReadCloser, int64, error)
	// StatBlob returns the size of a blob at a peer.
	StatBlob(ctx context.Context, d oci.Digest) (int64, error)
	// RepairBlob asks for a blob to be fetched here in the background.
	RepairBlob(d oci.Digest)
}

// UploadRouter tells which node holds an upload session: a session belongs
// to the node that opened it, and the others proxy its requests there.
// *cluster.Node implements it.
type UploadRouter interface {
	// UploadTag is this node's tag, the first 8 characters of the ids of
	// the sessions it opens.
	UploadTag() string
	// UploadOwner returns the HTTP address (host:port) of the node whose
	// tag is tag.
	UploadOwner(tag string) (string, bool)
	// CountUploadProxied counts one proxied request.
	CountUploadProxied()
}

// headerProxied marks an upload request proxied from another node: the
// owner never proxies it again.
const headerProxied = "X-Berth-Proxied-By"

// JoinCluster makes the registry one node of a cluster: uploads are
// replicated to peers before they are acknowledged, blobs missing here are
// read from peers, and upload requests for sessions of other nodes are
// proxied to them. Call it before serving.
func (reg *Registry) JoinCluster(blobs BlobPeers, uploads UploadRouter) {
	reg.peers = blobs
	reg.router = uploads
	if uploads != nil {
		reg.uploads.SetIDPrefix(uploads.UploadTag())
		reg.proxy = &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) {
				pr.Out.URL.Scheme = "http"
				pr.Out.URL.Host = pr.In.Context().Value(proxyTargetKey{}).(string)
				pr.Out.Host = pr.In.Host
				pr.Out.Header.Set(headerProxied, uploads.UploadTag())
				pr.SetXForwarded()
			},
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				reg.logFor(r).Warn("proxy upload request to its node", keyError, err)
				reg.writeError(w, r, newAPIError(codeUnavailable, "the node holding this upload cannot be reached; retry, or start the upload again"))
			},
		}
	}
}

// Blobs returns the registry's blob store (for the cluster's blob repair).
func (reg *Registry) Blobs() *BlobStore { return reg.blobs }

type proxyTargetKey struct{}

// proxyUpload forwards a request for an upload session that another node
// holds, and reports whether it did (or answered the request itself).
func (reg *Registry) proxyUpload(w http.ResponseWriter, r *http.Request, rt route) bool {
	if reg.router == nil || len(rt.arg) < uploadTagLen || !validUploadID(rt.arg) {
		return false
	}
	tag := rt.arg[:uploadTagLen]
	if tag == reg.router.UploadTag() {
		return false
	}
	if r.Header.Get(headerProxied) != "" {
		// Proxied here, but not ours: the session is unknown.
		reg.writeError(w, r, ErrUploadUnknown)
		return true
	}
	addr, ok := reg.router.UploadOwner(tag)
	if !ok {
		reg.writeError(w, r, withDetail(ErrUploadUnknown, "the node that opened this upload is gone; start the upload again"))
		return true
	}
	reg.router.CountUploadProxied()
	r = r.WithContext(context.WithValue(r.Context(), proxyTargetKey{}, addr))
	reg.proxy.ServeHTTP(w, r)
	return true
}

// replicate makes a blob just stored here durable on the write quorum of
// the cluster before the upload is acknowledged.
func (reg *Registry) replicate(ctx context.Context, d oci.Digest, size int64) error {
	if reg.peers == nil {
		return nil
	}
	return reg.peers.ReplicateBlob(ctx, d, size)
}

// remoteStat returns the size of a blob that the state links but this node
// does not hold, from a peer, and queues it for repair here.
func (reg *Registry) remoteStat(ctx context.Context, d oci.Digest) (int64, error) {
	if reg.peers == nil {
		return 0, oci.ErrNotFound
	}
	size, err := reg.peers.StatBlob(ctx, d)
	if err != nil {
		return 0, err
	}
	reg.peers.RepairBlob(d)
	return size, nil
}

// fetchRemote stores blob d from a peer (verified, durable) and returns it
// opened. Concurrent requests for the same blob share one fetch.
func (reg *Registry) fetchRemote(ctx context.Context, d oci.Digest) error {
	if reg.peers == nil {
		return oci.ErrNotFound
	}
	call, leader := reg.fetches.start(d)
	if !leader {
		select {
		case <-call.done:
			return call.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	defer reg.fetches.finish(d, call)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), remoteFetchTimeout)
	defer cancel()
	body, _, err := reg.peers.FetchBlob(ctx, d)
	if err != nil {
		call.err = err
		return err
	}
	defer body.Close()
	_, call.err = reg.blobs.Put(ctx, d, body, reg.cfg.MaxBlobSize)
	return call.err
}

// streamRemote answers a GET of blob d, which this node lacks, by streaming
// it from a peer to the client while storing it here. The store verifies
// the digest as the bytes pass; the last part of the body is held back
// until it has, so that a client never receives the whole of a blob that
// does not match its digest (the connection is cut instead).
func (reg *Registry) streamRemote(w http.ResponseWriter, r *http.Request, d oci.Digest) {
	ctx := r.Context()
	if r.Header.Get("Range") != "" {
		// A range of a blob we lack: fetch all of it, then serve the range.
		if err := reg.fetchRemote(ctx, d); err != nil {
			reg.writeError(w, r, notFoundAs(err, errBlobUnknown))
			return
		}
		reg.serveLocalBlob(w, r, d)
		return
	}
	// The fetch outlives a client that goes away: the blob is wanted here
	// anyway.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), remoteFetchTimeout)
	defer cancel()
	body, size, err := reg.peers.FetchBlob(fctx, d)
	if err != nil {
		reg.writeError(w, r, notFoundAs(err, errBlobUnknown))
		return
	}
	defer body.Close()
	if size >= 0 {
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	}
	w.WriteHeader(http.StatusOK)
	tw := &tailWriter{w: w, hold: tailHold}
	// The store keeps the blob whatever the client does: a client that goes
	// away must not cost the fetch.
	_, err = reg.blobs.Put(fctx, d, io.TeeReader(body, tw), reg.cfg.MaxBlobSize)
	if err != nil {
		reg.logFor(r).Warn("blob from a peer failed; cutting the response", keyDigest, d, keyError, err)
		panic(http.ErrAbortHandler)
	}
	tw.flush()
}

// remoteFetchTimeout bounds reading one blob from a peer.
const remoteFetchTimeout = 30 * time.Minute

// tailHold is how much of a streamed blob is held back until its digest
// is verified.
const tailHold = 1 << 20

// tailWriter writes everything but the last hold bytes it was given; flush
// writes those. Write errors (the client went away) are remembered, never
// returned, so the copy into the store goes on.
type tailWriter struct {
	w    io.Writer
	hold int
	buf  []byte
	err  error
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.hold; over > 0 {
		if t.err == nil {
			_, t.err = t.w.Write(t.buf[:over])
		}
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailWriter) flush() {
	if t.err == nil && len(t.buf) > 0 {
		_, t.err = t.w.Write(t.buf)
	}
	t.buf = nil
}

// fetchGroup lets concurrent fetches of one blob share the first.
type fetchGroup struct {
	mu    sync.Mutex
	calls map[oci.Digest]*fetchCall
}

type fetchCall struct {
	done chan struct{}
	err  error
}

func (g *fetchGroup) start(d oci.Digest) (*fetchCall, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.calls[d]; ok {
		return c, false
	}
	if g.calls == nil {
		g.calls = map[oci.Digest]*fetchCall{}
	}
	c := &fetchCall{done: make(chan struct{})}
	g.calls[d] = c
	return c, true
}

func (g *fetchGroup) finish(d oci.Digest, c *fetchCall) {
	g.mu.Lock()
	delete(g.calls, d)
	g.mu.Unlock()
	close(c.done)
}

// blobPresent reports whether blob d can be served: stored here, or (in a
// cluster) at a peer. A blob linked in the state was acknowledged durable
// on the write quorum, so a peer has it while this node catches up.
func (reg *Registry) blobPresent(ctx context.Context, d oci.Digest) error {
	_, _, err := reg.blobs.Stat(d)
	if err == nil || !errors.Is(err, oci.ErrNotFound) || reg.peers == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = reg.remoteStat(ctx, d)
	return err
}

// Content is the registry as replication reads it: the state's manifests,
// tags, referrers and catalog, and the blobs (from a peer when this node
// lacks one).
type Content struct {
	State
	reg *Registry
}

// Content returns the registry's content for replication.
func (reg *Registry) Content() Content { return Content{State: reg.state, reg: reg} }

// OpenBlob opens blob d for reading from offset: from this node's store,
// else fetched from a peer (and kept here) first. It returns the reader and
// the blob's full size.
func (c Content) OpenBlob(ctx context.Context, d oci.Digest, offset int64) (io.ReadCloser, int64, error) {
	reg := c.reg
	f, size, err := reg.blobs.Open(d)
	if errors.Is(err, oci.ErrNotFound) && reg.peers != nil {
		if err = reg.fetchRemote(ctx, d); err == nil {
			f, size, err = reg.blobs.Open(d)
		}
	}
	if err != nil {
		return nil, 0, err
	}
	if offset < 0 || offset > size {
		f.Close()
		return nil, 0, fmt.Errorf("open blob %s at %d: %w", d, offset, ErrRangeInvalid)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("open blob %s at %d: %w", d, offset, err)
	}
	return f, size, nil
}
