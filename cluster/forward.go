package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/berth-registry/berth/oci"
)

// PeerClient carries this node's requests to another node's internal API:
// writes forwarded to the leader, read-index requests, status, and
// membership changes. The default one speaks HTTP to the address gossip
// reports (see InternalHandler); cluster/clustertest calls nodes in process.
type PeerClient interface {
	// Apply asks the leader to to commit the encoded command. It returns
	// the log index the command was applied at and apply's own verdict.
	// err reports that the request failed: it wraps ErrNotLeader when to
	// is not (or no longer) the leader and never enqueued the command.
	Apply(ctx context.Context, to string, cmd []byte) (Applied, error)
	// ReadIndex asks the leader to for an index that covers every write
	// it has acknowledged.
	ReadIndex(ctx context.Context, to string) (uint64, error)
	// Status returns node to's own view of itself; with hash it includes
	// the hash of its applied state.
	Status(ctx context.Context, to string, hash bool) (NodeStatus, error)
	// RemoveServer asks the leader to to remove server id from the Raft
	// configuration.
	RemoveServer(ctx context.Context, to, id string) error
}

// Applied is the outcome of a committed command: the log index it was
// applied at, and why apply rejected it (nil when it was applied). A
// rejected command still took its index and changed nothing.
type Applied struct {
	Index    uint64
	Rejected error
}

// Bounds of internal API requests.
const (
	// maxCommandSize holds the put_manifest command of any manifest the
	// registry accepts: the payload base64-encoded (4/3 of its size) and
	// its annotations again in the record, where JSON may escape a byte
	// as six ("<" is \u003c), so at most 7.4 times the manifest.
	maxCommandSize   = 8 * oci.MaxManifestSize
	peerDialTimeout  = time.Second
	peerStatusWait   = 2 * time.Second
	maxInternalReply = 1 << 20
)

// httpPeers is the PeerClient over HTTP, signed with the cluster secret.
type httpPeers struct {
	self   string
	key    []byte
	lookup func(id string) (Member, bool)
	client *http.Client
}

// newPeerHTTPClient returns an HTTP client of requests to peers. It has no
// overall timeout (a blob may take long); dialing and the wait for the
// response header are bounded: by headerTimeout, which must cover what the
// peer does before it answers (storing a pushed blob; only opening one that
// is fetched).
func newPeerHTTPClient(headerTimeout time.Duration) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:           (&net.Dialer{Timeout: peerDialTimeout, KeepAlive: 15 * time.Second}).DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: headerTimeout,
	}}
}

func newHTTPPeers(self string, key []byte, lookup func(string) (Member, bool), client *http.Client) *httpPeers {
	return &httpPeers{self: self, key: key, lookup: lookup, client: client}
}

// wireReply is the body of every internal API answer that is not a blob.
type wireReply struct {
	Index uint64      `json:"index,omitempty"`
	Error *wireError  `json:"error,omitempty"`
	Node  *NodeStatus `json:"node,omitempty"`
}

type wireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func toWire(err error) *wireError {
	if err == nil {
		return nil
	}
	return &wireError{Code: wireCode(err), Message: err.Error()}
}

func (e *wireError) err() error {
	if e == nil {
		return nil
	}
	return fromWire(e.Code, e.Message)
}

// url returns the internal API URL of path on node id.
func (p *httpPeers) url(id, path string, q url.Values) (string, error) {
	m, ok := p.lookup(id)
	if !ok || m.HTTPAddr == "" {
		return "", fmt.Errorf("node %s: address unknown: %w", id, ErrNoLeader)
	}
	u := "http://" + m.HTTPAddr + InternalPrefix + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u, nil
}

// do sends a signed request and decodes the wireReply. A request that never
// reached the peer (it could not be dialed) wraps errNotSent; one that was
// sent and got no answer (the peer died, the connection broke) has an
// unknown outcome and wraps oci.ErrUnavailable, so that the client is told
// to retry (503), not that the registry failed (500).
func (p *httpPeers) do(ctx context.Context, method, id, path string, q url.Values, body []byte) (wireReply, error) {
	u, err := p.url(id, path, q)
	if err != nil {
		return wireReply{}, err
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return wireReply{}, err
	}
	sign(req, p.key, p.self, time.Now())
	resp, err := p.client.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return wireReply{}, fmt.Errorf("node %s: %w: %w", id, errNotSent, err)
		}
		return wireReply{}, fmt.Errorf("node %s: %w: %w", id, oci.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	var rep wireReply
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxInternalReply)).Decode(&rep); err != nil {
		return wireReply{}, fmt.Errorf("node %s: %s %s: status %s: %w: %w", id, method, path, resp.Status, oci.ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		if rep.Error == nil {
			return rep, fmt.Errorf("node %s: %s %s: %s", id, method, path, resp.Status)
		}
		return rep, rep.Error.err()
	}
	return rep, nil
}

// errNotSent marks a request that never left this node, so a retry cannot
// apply a command twice.
var errNotSent = errors.New("request not sent")

func (p *httpPeers) Apply(ctx context.Context, to string, cmd []byte) (Applied, error) {
	rep, err := p.do(ctx, http.MethodPost, to, "apply", nil, cmd)
	if err != nil {
		return Applied{}, err
	}
	return Applied{Index: rep.Index, Rejected: rep.Error.err()}, nil
}

func (p *httpPeers) ReadIndex(ctx context.Context, to string) (uint64, error) {
	rep, err := p.do(ctx, http.MethodGet, to, "readindex", nil, nil)
	return rep.Index, err
}

func (p *httpPeers) Status(ctx context.Context, to string, hash bool) (NodeStatus, error) {
	q := url.Values{}
	if hash {
		q.Set("hash", "true")
	}
	rep, err := p.do(ctx, http.MethodGet, to, "status", q, nil)
	if err != nil {
		return NodeStatus{}, err
	}
	if rep.Node == nil {
		return NodeStatus{}, fmt.Errorf("node %s: status without a node", to)
	}
	return *rep.Node, nil
}

func (p *httpPeers) RemoveServer(ctx context.Context, to, id string) error {
	_, err := p.do(ctx, http.MethodPost, to, "remove", url.Values{"id": {id}}, nil)
	return err
}
