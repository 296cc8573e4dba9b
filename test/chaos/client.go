package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// adminUser is the account that may push.
const adminUser = "admin"

// The bounds of one client request. A paused or partitioned node does not
// answer at all, so every attempt needs a deadline of its own.
const (
	dialTimeout    = 2 * time.Second
	headerTimeout  = 10 * time.Second
	attemptTimeout = 20 * time.Second // one push: a few blobs and a manifest
)

// manifestAccept is the Accept header of manifest GETs: every type a
// pushed image may have.
var manifestAccept = strings.Join([]string{
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// Client pushes to and pulls from nodes as the admin, over plain HTTP.
// Each call is one attempt: retrying (elsewhere) is the caller's choice.
type Client struct {
	password string
	http     *http.Client
}

// NewClient returns a client with the admin password.
func NewClient(password string) *Client {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: dialTimeout}).DialContext,
		ResponseHeaderTimeout: headerTimeout,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       30 * time.Second,
	}
	return &Client{password: password, http: &http.Client{Transport: tr}}
}

// Close drops idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Push writes img to repo:tag on node n, in one attempt bounded by
// attemptTimeout (go-containerregistry's own retries are off).
func (c *Client) Push(ctx context.Context, n *Node, repo, tag string, img v1.Image) error {
	ref, err := name.NewTag(n.Host()+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	return remote.Write(ref, img,
		remote.WithContext(ctx),
		remote.WithAuth(&authn.Basic{Username: adminUser, Password: c.password}),
		remote.WithTransport(c.http.Transport),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}))
}

// StatusError is an HTTP answer other than the one expected.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%d %s: %s", e.Code, http.StatusText(e.Code), e.Body)
}

// Manifest GETs repo's manifest ref (a tag or a digest) from node n and
// returns its bytes and the Docker-Content-Digest header.
func (c *Client) Manifest(ctx context.Context, n *Node, repo, ref string) ([]byte, string, error) {
	resp, err := c.get(ctx, n, "/v2/"+repo+"/manifests/"+ref, manifestAccept)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, "", fmt.Errorf("manifest %s:%s from %s: %w", repo, ref, n.Short, err)
	}
	return body, resp.Header.Get("Docker-Content-Digest"), nil
}

// Blob GETs repo's blob d from node n and checks that it hashes to d.
func (c *Client) Blob(ctx context.Context, n *Node, repo string, d v1.Hash) error {
	resp, err := c.get(ctx, n, "/v2/"+repo+"/blobs/"+d.String(), "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	h := sha256.New()
	if _, err := io.Copy(h, resp.Body); err != nil {
		return fmt.Errorf("blob %s@%s from %s: %w", repo, d, n.Short, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.String() {
		return &WrongContentError{fmt.Sprintf("blob %s@%s from %s hashes to %s", repo, d, n.Short, got)}
	}
	return nil
}

// get sends one authenticated GET bounded by attemptTimeout; an answer
// other than 200 is a *StatusError. The caller closes the body.
func (c *Client) get(ctx context.Context, n *Node, path, accept string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.URL()+path, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	req.SetBasicAuth(adminUser, c.password)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("GET %s from %s: %w", path, n.Short, err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		cancel()
		return nil, &StatusError{Code: resp.StatusCode, Body: strings.TrimSpace(string(b))}
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// WrongContentError is an answer with other bytes than were pushed.
type WrongContentError struct{ msg string }

func (e *WrongContentError) Error() string { return e.msg }

// IsWrongContent reports whether err is a *WrongContentError.
func IsWrongContent(err error) bool {
	var wc *WrongContentError
	return errors.As(err, &wc)
}

// statusCode is the HTTP status of an error answer, 0 when err is not one
// (a connection error, a timeout).
func statusCode(err error) int {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// Temporary reports whether a failed request may succeed when tried again,
// on the same node or another: no answer at all (refused, reset, timed
// out: a node that is down, frozen or cut off), 408, 429 or a 5xx. Other
// answers (4xx) are the server's considered refusal, and wrong content is
// never temporary.
func Temporary(err error) bool {
	if IsWrongContent(err) {
		return false
	}
	code := statusCode(err)
	return code == 0 || code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}

// IsNotFound reports whether err is a 404 answer.
func IsNotFound(err error) bool { return statusCode(err) == http.StatusNotFound }
