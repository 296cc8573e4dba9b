package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/berth-registry/berth/oci"
)

// LocalBlobs is this node's blob store as the cluster needs it: to serve
// peers, to store what it receives (verified against the digest), and to
// see what it lacks. *registry.BlobStore implements it.
type LocalBlobs interface {
	// Stat returns a blob's size; the error wraps oci.ErrNotFound when the
	// store does not hold it.
	Stat(d oci.Digest) (int64, time.Time, error)
	// Open opens a blob for reading.
	Open(d oci.Digest) (*os.File, int64, error)
	// Put stores r as blob d, durably, once it hashes to d (otherwise the
	// error wraps oci.ErrDigestInvalid and nothing is kept).
	Put(ctx context.Context, d oci.Digest, r io.Reader, maxSize int64) (int64, error)
	// Touch refreshes a blob's mtime (garbage collection's grace period).
	Touch(d oci.Digest) error
}

// BlobConfig tunes blob replication between peers.
type BlobConfig struct {
	// WriteQuorum is the number of nodes a blob must be durable on before
	// an upload is acknowledged. 0 means 2 on a cluster of two or more
	// nodes and 1 on one node; it never exceeds the cluster's size.
	WriteQuorum int
	// MaxBlobSize bounds a blob received from a peer.
	MaxBlobSize int64
	// RepairInterval is how often every referenced blob is checked for
	// presence, besides the blobs of each manifest as it is applied.
	RepairInterval time.Duration
	// RepairWorkers is the number of blobs fetched from peers at once.
	RepairWorkers int
}

// DefaultBlobConfig returns the defaults.
func DefaultBlobConfig() BlobConfig {
	return BlobConfig{MaxBlobSize: 10 << 30, RepairInterval: time.Minute, RepairWorkers: 4}
}

// Validate reports the first invalid field.
func (c BlobConfig) Validate() error {
	switch {
	case c.WriteQuorum < 0:
		return fmt.Errorf("%w: blob write quorum %d must not be negative", ErrConfig, c.WriteQuorum)
	case c.MaxBlobSize <= 0:
		return fmt.Errorf("%w: max blob size must be positive", ErrConfig)
	case c.RepairInterval <= 0:
		return fmt.Errorf("%w: repair interval must be positive", ErrConfig)
	case c.RepairWorkers <= 0:
		return fmt.Errorf("%w: repair workers must be positive", ErrConfig)
	}
	return nil
}

// Bounds of blob repair.
const (
	repairBackoffMin = 250 * time.Millisecond
	repairBackoffMax = 30 * time.Second
	repairQueueMax   = 1 << 20
)

// blobRepair moves blobs between this node and its peers: it pushes new
// uploads to enough peers for the write quorum, serves the blobs peers ask
// for, and fetches the referenced blobs this node lacks.
type blobRepair struct {
	n     *Node
	store LocalBlobs
	cfg   BlobConfig

	mu      sync.Mutex
	queue   map[oci.Digest]*repairItem
	full    bool          // a full scan is due (the queue overflowed, or at start)
	wake    chan struct{} // signalled when work arrives
	ctx     context.Context
	cancel  context.CancelFunc
	workers sync.WaitGroup
}

type repairItem struct {
	attempts int
	next     time.Time
	busy     bool
}

// AttachBlobs gives the node its blob store: from then on it serves blobs
// to peers, replicates uploads (ReplicateBlob) and repairs what it lacks.
// Call it once, before serving.
func (n *Node) AttachBlobs(store LocalBlobs, cfg BlobConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if n.repair != nil {
		return errors.New("cluster: blobs already attached")
	}
	b := &blobRepair{n: n, store: store, cfg: cfg, queue: map[oci.Digest]*repairItem{}, full: true, wake: make(chan struct{}, 1)}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	n.repair = b
	n.fsm.onApplied = b.enqueue
	b.workers.Go(b.scanLoop)
	for range cfg.RepairWorkers {
		b.workers.Go(b.work)
	}
	return nil
}

func (b *blobRepair) stop() {
	b.cancel()
	b.workers.Wait()
}

func (b *blobRepair) backlog() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// enqueue queues blobs to check; it runs on raft's FSM goroutine, so it
// only records them.
func (b *blobRepair) enqueue(ds []oci.Digest) {
	b.mu.Lock()
	for _, d := range ds {
		if _, ok := b.queue[d]; ok {
			continue
		}
		if len(b.queue) >= repairQueueMax {
			b.full = true
			break
		}
		b.queue[d] = &repairItem{}
	}
	b.mu.Unlock()
	b.signal()
}

func (b *blobRepair) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// scanLoop queues every referenced blob the store lacks, at start and then
// every RepairInterval (or sooner when the queue overflowed).
func (b *blobRepair) scanLoop() {
	t := time.NewTicker(b.cfg.RepairInterval)
	defer t.Stop()
	for {
		b.mu.Lock()
		full := b.full
		b.full = false
		b.mu.Unlock()
		if full {
			b.scan()
		}
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
			b.mu.Lock()
			b.full = true
			b.mu.Unlock()
		}
	}
}

func (b *blobRepair) scan() {
	refs, err := b.n.fsm.referencedBlobs()
	if err != nil {
		b.n.logger.Warn("blob repair: read referenced blobs", "error", err)
		return
	}
	var missing []oci.Digest
	for d := range refs {
		if _, _, err := b.store.Stat(d); errors.Is(err, oci.ErrNotFound) {
			missing = append(missing, d)
		}
	}
	if len(missing) > 0 {
		b.n.logger.Info("blob repair: blobs to fetch from peers", "count", len(missing))
		b.enqueue(missing)
	}
}

// work fetches queued blobs until the repair stops.
func (b *blobRepair) work() {
	for {
		d, ok := b.take()
		if !ok {
			var wait <-chan time.Time
			if next := b.nextDue(); !next.IsZero() {
				wait = time.After(time.Until(next))
			}
			select {
			case <-b.ctx.Done():
				return
			case <-b.wake:
			case <-wait:
			}
			continue
		}
		b.repairOne(d)
	}
}

// take picks a queued blob that is due and not being fetched.
func (b *blobRepair) take() (oci.Digest, bool) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	for d, it := range b.queue {
		if !it.busy && !it.next.After(now) {
			it.busy = true
			return d, true
		}
	}
	return "", false
}

// nextDue returns when the earliest waiting item is due (zero: none).
func (b *blobRepair) nextDue() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	var next time.Time
	for _, it := range b.queue {
		if !it.busy && (next.IsZero() || it.next.Before(next)) {
			next = it.next
		}
	}
	return next
}

// repairOne fetches d from a peer unless it is here already or no longer
// referenced; a failure retries later with exponential backoff and jitter.
func (b *blobRepair) repairOne(d oci.Digest) {
	done := func() {
		b.mu.Lock()
		delete(b.queue, d)
		b.mu.Unlock()
	}
	if _, _, err := b.store.Stat(d); err == nil {
		done()
		return
	}
	if !b.n.fsm.isReferenced(d) {
		done()
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Minute)
	err := b.fetchInto(ctx, d)
	cancel()
	if err == nil {
		done()
		return
	}
	b.mu.Lock()
	if it := b.queue[d]; it != nil {
		it.busy = false
		it.attempts++
		back := min(repairBackoffMax, repairBackoffMin<<min(it.attempts, 10))
		it.next = time.Now().Add(back/2 + rand.N(back/2+1))
		if it.attempts == 1 || it.attempts%10 == 0 {
			b.n.logger.Warn("blob repair: fetch failed; will retry", "digest", d, "attempts", it.attempts, "retry_in", back.String(), "error", err)
		}
	}
	b.mu.Unlock()
}

// fetchInto copies d from the first peer that has it into the local store,
// which verifies the digest: a corrupt copy is dropped and the next peer
// asked.
func (b *blobRepair) fetchInto(ctx context.Context, d oci.Digest) error {
	var errs []error
	for _, p := range b.peerCandidates() {
		body, _, err := b.open(ctx, p, d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		n, err := b.store.Put(ctx, d, body, b.cfg.MaxBlobSize)
		body.Close()
		if err != nil {
			result := "error"
			if errors.Is(err, oci.ErrDigestInvalid) {
				result = "corrupt"
				b.n.logger.Error("blob repair: a peer sent a blob that does not match its digest; asking another", "digest", d, "peer", p.ID)
			}
			b.n.metrics.blobTransfers.WithLabelValues("fetch", result).Inc()
			errs = append(errs, fmt.Errorf("from %s: %w", p.ID, err))
			continue
		}
		b.n.metrics.blobTransfers.WithLabelValues("fetch", "ok").Inc()
		b.n.metrics.blobBytes.WithLabelValues("fetch").Add(float64(n))
		return nil
	}
	if len(errs) == 0 {
		return fmt.Errorf("fetch blob %s: no peer to ask: %w", d, oci.ErrUnavailable)
	}
	return fmt.Errorf("fetch blob %s: %w", d, errors.Join(errs...))
}

// peerCandidates returns the other members that may hold blobs (alive or
// suspect, with an HTTP address), in random order, alive ones first.
func (b *blobRepair) peerCandidates() []Member {
	var out []Member
	for _, m := range b.n.Members() {
		if m.ID == b.n.cfg.NodeID || m.HTTPAddr == "" || (m.State != StateAlive && m.State != StateSuspect) {
			continue
		}
		out = append(out, m)
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	// Suspects last: they may be frozen or gone.
	slices.SortStableFunc(out, func(a, b Member) int {
		switch {
		case a.State == b.State:
			return 0
		case a.State == StateAlive:
			return -1
		}
		return 1
	})
	return out
}

// blobURL is a blob's internal API URL on member m.
func blobURL(m Member, d oci.Digest) string {
	return "http://" + m.HTTPAddr + InternalPrefix + "blobs/" + string(d)
}

// open starts reading blob d from peer m.
func (b *blobRepair) open(ctx context.Context, m Member, d oci.Digest) (io.ReadCloser, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, blobURL(m, d), nil)
	if err != nil {
		return nil, 0, err
	}
	sign(req, b.n.keys.api, b.n.cfg.NodeID, time.Now())
	resp, err := b.n.fetchClient.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("from %s: %w", m.ID, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil, 0, fmt.Errorf("from %s: %w", m.ID, oci.ErrNotFound)
		}
		return nil, 0, fmt.Errorf("from %s: %s", m.ID, resp.Status)
	}
	return resp.Body, resp.ContentLength, nil
}

// stat asks peer m for the size of blob d.
func (b *blobRepair) stat(ctx context.Context, m Member, d oci.Digest) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, blobURL(m, d), nil)
	if err != nil {
		return 0, err
	}
	sign(req, b.n.keys.api, b.n.cfg.NodeID, time.Now())
	resp, err := b.n.fetchClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.ContentLength, nil
	case http.StatusNotFound:
		return 0, oci.ErrNotFound
	}
	return 0, fmt.Errorf("%s", resp.Status)
}

// push sends the local blob d to peer m, which stores it durably after
// verifying it. A peer that has it already answers before the body is sent
// (Expect: 100-continue).
func (b *blobRepair) push(ctx context.Context, m Member, d oci.Digest) error {
	f, size, err := b.store.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, blobURL(m, d), onlyReader{f})
	if err != nil {
		return err
	}
	req.ContentLength = size
	req.Header.Set("Expect", "100-continue")
	req.Header.Set("Content-Type", "application/octet-stream")
	sign(req, b.n.keys.api, b.n.cfg.NodeID, time.Now())
	resp, err := b.n.client.Do(req)
	if err != nil {
		b.n.metrics.blobTransfers.WithLabelValues("push", "error").Inc()
		return fmt.Errorf("push blob %s to %s: %w", d, m.ID, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusCreated:
		b.n.metrics.blobTransfers.WithLabelValues("push", "ok").Inc()
		b.n.metrics.blobBytes.WithLabelValues("push").Add(float64(size))
		return nil
	case http.StatusOK:
		b.n.metrics.blobTransfers.WithLabelValues("push", "ok").Inc()
		return nil
	}
	b.n.metrics.blobTransfers.WithLabelValues("push", "error").Inc()
	return fmt.Errorf("push blob %s to %s: %s", d, m.ID, resp.Status)
}

// onlyReader hides *os.File's WriterTo and ReaderFrom, so that the HTTP
// client streams it as a plain reader (and sends its own Content-Length).
type onlyReader struct{ io.Reader }

// serveBlob answers a peer's GET, HEAD or PUT of blob ds.
func (b *blobRepair) serveBlob(w http.ResponseWriter, r *http.Request, ds string) {
	d, err := oci.ParseDigest(ds)
	if err != nil {
		http.Error(w, "bad digest", http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		f, size, err := b.store.Open(d)
		if err != nil {
			if errors.Is(err, oci.ErrNotFound) {
				http.NotFound(w, r)
				return
			}
			http.Error(w, "open blob", http.StatusInternalServerError)
			return
		}
		defer f.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		if r.Method == http.MethodHead {
			w.WriteHeader(http.StatusOK)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, f)
	case http.MethodPut:
		// Already here: refresh it and say so before the body comes.
		if _, _, err := b.store.Stat(d); err == nil {
			if err := b.store.Touch(d); err == nil {
				w.WriteHeader(http.StatusOK)
				return
			}
		}
		if r.ContentLength > b.cfg.MaxBlobSize {
			http.Error(w, "blob too large", http.StatusRequestEntityTooLarge)
			return
		}
		if _, err := b.store.Put(r.Context(), d, r.Body, b.cfg.MaxBlobSize); err != nil {
			if errors.Is(err, oci.ErrDigestInvalid) {
				b.n.logger.Error("a peer pushed a blob that does not match its digest", "digest", d)
				http.Error(w, "digest mismatch", http.StatusBadRequest)
				return
			}
			http.Error(w, "store blob", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusCreated)
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// writeQuorum is the number of nodes a new blob must be durable on.
func (b *blobRepair) writeQuorum(servers int) int {
	q := b.cfg.WriteQuorum
	if q == 0 {
		q = min(2, servers)
	}
	return max(1, min(q, servers))
}

// Blob pushes for the write quorum.
const (
	// pushHedgeAfter is how long a push may go unanswered before another
	// peer is tried besides: a frozen peer accepts the connection and never
	// answers.
	pushHedgeAfter = 2 * time.Second
	// pushMinRate bounds a push: it gives up after a minute plus the time
	// the blob takes at this rate.
	pushMinRate = 10 << 20
)

func pushTimeout(size int64) time.Duration {
	return time.Minute + time.Duration(size/pushMinRate)*time.Second
}

// ReplicateBlob makes the local, durable blob d durable on enough peers to
// meet the blob write quorum, before an upload is acknowledged. It pushes d
// to one peer more than the quorum needs beyond this node, alive peers
// first, and returns as soon as enough of them have stored it; a failed
// push, or one unanswered for pushHedgeAfter (a frozen peer), brings in the
// next peer. Pushes still running then finish in the background (they save
// those peers a repair fetch); the remaining nodes get the blob from the
// repair loop once a manifest references it. It fails (wrapping
// oci.ErrUnavailable) when too few peers could store it.
func (n *Node) ReplicateBlob(ctx context.Context, d oci.Digest, size int64) error {
	b := n.repair
	if b == nil {
		return nil
	}
	servers := n.configuredIDs()
	need := b.writeQuorum(len(servers)) - 1
	if need <= 0 {
		return nil
	}
	configured := map[string]bool{}
	for _, id := range servers {
		configured[id] = true
	}
	var cands []Member
	for _, m := range b.peerCandidates() {
		if configured[m.ID] {
			cands = append(cands, m)
		}
	}
	// Pushes run detached from the request, bounded by their own timeout,
	// so that one still running when the quorum is met can finish.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), pushTimeout(size))
	results := make(chan error, len(cands))
	launched, done, stored := 0, 0, 0
	launch := func() bool {
		if launched == len(cands) {
			return false
		}
		m := cands[launched]
		launched++
		go func() { results <- b.push(pctx, m, d) }()
		return true
	}
	for range min(len(cands), need+1) {
		launch()
	}
	// Once every push launched has answered, release their context.
	defer func() {
		left := launched - done
		go func() {
			for range left {
				<-results
			}
			cancel()
		}()
	}()
	hedge := time.NewTicker(pushHedgeAfter)
	defer hedge.Stop()
	var errs []error
	for stored < need && done < launched {
		select {
		case err := <-results:
			done++
			if err == nil {
				stored++
				continue
			}
			errs = append(errs, err)
			launch()
		case <-hedge.C:
			launch()
		case <-ctx.Done():
			return fmt.Errorf("replicate blob %s: %w: %w", d, oci.ErrUnavailable, ctx.Err())
		}
	}
	if stored < need {
		return fmt.Errorf("blob %s is durable on %d of the %d nodes the write quorum needs: %w: %w",
			d, stored+1, need+1, oci.ErrUnavailable, errors.Join(errs...))
	}
	return nil
}

// FetchBlob opens blob d at a peer that has it. The caller must verify what
// it reads (by storing it, which hashes it). It wraps oci.ErrNotFound when
// no peer has it.
func (n *Node) FetchBlob(ctx context.Context, d oci.Digest) (io.ReadCloser, int64, error) {
	b := n.repair
	if b == nil {
		return nil, 0, fmt.Errorf("blob %s: %w", d, oci.ErrNotFound)
	}
	var errs []error
	for _, m := range b.peerCandidates() {
		body, size, err := b.open(ctx, m, d)
		if err == nil {
			b.n.metrics.blobTransfers.WithLabelValues("fetch", "ok").Inc()
			return body, size, nil
		}
		errs = append(errs, err)
	}
	return nil, 0, fmt.Errorf("blob %s at peers: %w: %w", d, oci.ErrNotFound, errors.Join(errs...))
}

// StatBlob returns the size of blob d at a peer that has it.
func (n *Node) StatBlob(ctx context.Context, d oci.Digest) (int64, error) {
	b := n.repair
	if b == nil {
		return 0, fmt.Errorf("blob %s: %w", d, oci.ErrNotFound)
	}
	for _, m := range b.peerCandidates() {
		if size, err := b.stat(ctx, m, d); err == nil {
			return size, nil
		}
	}
	return 0, fmt.Errorf("blob %s at peers: %w", d, oci.ErrNotFound)
}

// RepairBlob queues d for the repair loop (a read found it missing here).
func (n *Node) RepairBlob(d oci.Digest) {
	if n.repair != nil {
		n.repair.enqueue([]oci.Digest{d})
	}
}

// uploadTag is the owner tag of node id in upload session ids: 8 hex
// digits, so that any node can tell which node holds a session.
func uploadTag(id string) string {
	h := sha256.Sum256([]byte("berth upload owner\x00" + id))
	return hex.EncodeToString(h[:4])
}

// UploadTag is this node's tag in the ids of the upload sessions it opens.
func (n *Node) UploadTag() string { return uploadTag(n.cfg.NodeID) }

// UploadOwner returns the HTTP address of the alive member whose upload
// tag is tag.
func (n *Node) UploadOwner(tag string) (string, bool) {
	for _, m := range n.Members() {
		if m.ID != n.cfg.NodeID && uploadTag(m.ID) == tag && m.HTTPAddr != "" && (m.State == StateAlive || m.State == StateSuspect) {
			return m.HTTPAddr, true
		}
	}
	return "", false
}

// CountUploadProxied counts an upload request proxied to its owner.
func (n *Node) CountUploadProxied() { n.metrics.forwarded.WithLabelValues("upload").Inc() }
