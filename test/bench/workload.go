package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// client speaks the OCI distribution API with plain net/http, so that the
// bench measures the servers and not a client library.
type client struct {
	srv  *server
	http *http.Client
}

func newClient(s *server) *client {
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute, DisableCompression: true}
	return &client{srv: s, http: &http.Client{Transport: tr}}
}

func (c *client) do(ctx context.Context, method, u string, body io.Reader, size int64, hdr map[string]string) (*http.Response, error) {
	if len(u) > 0 && u[0] == '/' {
		u = c.srv.url + u
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if c.srv.user != "" {
		req.SetBasicAuth(c.srv.user, c.srv.password)
	}
	return c.http.Do(req)
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// statusError is an answer with another status than the one expected.
type statusError struct {
	op     string // "PUT upload"
	code   int
	status string
	reason string // the OCI error's code and message, or the start of the body
	// requestID is the answer's X-Request-Id: the server logs the
	// request's errors with it.
	requestID string
}

func (e *statusError) Error() string {
	if e.reason == "" {
		return e.op + ": " + e.status
	}
	return e.op + ": " + e.status + ": " + e.reason
}

// expect drains resp and returns a *statusError unless its status is want.
func expect(resp *http.Response, op string, want int) error {
	if resp.StatusCode == want {
		drain(resp)
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	drain(resp)
	e := &statusError{op: op, code: resp.StatusCode, status: resp.Status, reason: strings.TrimSpace(string(b)), requestID: resp.Header.Get("X-Request-Id")}
	var oci struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if json.Unmarshal(b, &oci) == nil && len(oci.Errors) > 0 {
		e.reason = oci.Errors[0].Code + " " + oci.Errors[0].Message
	} else if len(e.reason) > 200 {
		e.reason = e.reason[:200]
	}
	return e
}

// temporary reports whether err is an answer a client retries: 429 or 5xx.
func temporary(err error) bool {
	var se *statusError
	return errors.As(err, &se) && (se.code == http.StatusTooManyRequests || se.code >= 500)
}

// Retries of a temporary failure, as docker does them.
const (
	retryAttempts = 5
	retryBackoff  = 50 * time.Millisecond
)

// retries runs writes, retrying temporary failures, and counts them by
// error.
type retries struct {
	mu     sync.Mutex
	failed failures
}

// do runs fn until it succeeds, fails otherwise than temporarily, or has
// failed retryAttempts times.
func (r *retries) do(ctx context.Context, fn func() error) error {
	backoff := retryBackoff
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || !temporary(err) || attempt == retryAttempts || ctx.Err() != nil {
			return err
		}
		r.mu.Lock()
		r.failed.add(err)
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// counts returns the retried failures.
func (r *retries) counts() failures {
	r.mu.Lock()
	defer r.mu.Unlock()
	var f failures
	f.merge(r.failed)
	return f
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// pushBlob uploads a blob the way docker does for a layer: POST to open a
// session, PATCH the bytes streamed, PUT with the digest.
func (c *client) pushBlob(ctx context.Context, repo string, data []byte) error {
	resp, err := c.do(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, 0, nil)
	if err != nil {
		return err
	}
	if err := expect(resp, "POST upload", http.StatusAccepted); err != nil {
		return err
	}
	loc, err := c.location(resp)
	if err != nil {
		return err
	}
	resp, err = c.do(ctx, http.MethodPatch, loc, bytes.NewReader(data), int64(len(data)), map[string]string{"Content-Type": "application/octet-stream"})
	if err != nil {
		return err
	}
	if err := expect(resp, "PATCH upload", http.StatusAccepted); err != nil {
		return err
	}
	if loc, err = c.location(resp); err != nil {
		return err
	}
	return c.putDigest(ctx, loc, digestOf(data), nil)
}

// pushSmallBlob uploads a small blob as docker does when the blob is small:
// HEAD to see whether it exists, POST, then PUT with the bytes and digest.
func (c *client) pushSmallBlob(ctx context.Context, repo string, data []byte) (string, error) {
	d := digestOf(data)
	resp, err := c.do(ctx, http.MethodHead, "/v2/"+repo+"/blobs/"+d, nil, 0, nil)
	if err != nil {
		return "", err
	}
	drain(resp)
	if resp.StatusCode == http.StatusOK {
		return d, nil
	}
	resp, err = c.do(ctx, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, 0, nil)
	if err != nil {
		return "", err
	}
	if err := expect(resp, "POST upload", http.StatusAccepted); err != nil {
		return "", err
	}
	loc, err := c.location(resp)
	if err != nil {
		return "", err
	}
	return d, c.putDigest(ctx, loc, d, data)
}

func (c *client) putDigest(ctx context.Context, loc, d string, data []byte) error {
	u, err := url.Parse(loc)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("digest", d)
	u.RawQuery = q.Encode()
	var body io.Reader
	if data != nil {
		body = bytes.NewReader(data)
	}
	resp, err := c.do(ctx, http.MethodPut, u.String(), body, int64(len(data)), map[string]string{"Content-Type": "application/octet-stream"})
	if err != nil {
		return err
	}
	return expect(resp, "PUT upload", http.StatusCreated)
}

func (c *client) location(resp *http.Response) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", fmt.Errorf("%s %s: no Location", resp.Request.Method, resp.Request.URL.Path)
	}
	base, _ := url.Parse(c.srv.url)
	u, err := base.Parse(loc)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}

func (c *client) putManifest(ctx context.Context, repo, ref string, body []byte) error {
	resp, err := c.do(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, bytes.NewReader(body), int64(len(body)),
		map[string]string{"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
	if err != nil {
		return err
	}
	return expect(resp, "PUT manifest", http.StatusCreated)
}

// imageManifest builds an OCI image manifest for a config and one layer.
func imageManifest(config, layer []byte) []byte {
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digestOf(config), "size": len(config)},
		"layers":        []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digestOf(layer), "size": len(layer)}},
	}
	b, _ := json.Marshal(m)
	return b
}

// pushSmallImage pushes a unique small image (config + 1 KiB layer) by tag.
func (c *client) pushSmallImage(ctx context.Context, repo, tag string) error {
	layer := make([]byte, 1024)
	_, _ = rand.Read(layer)
	config := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[%q]},"tag":%q}`, digestOf(layer), tag))
	if _, err := c.pushSmallBlob(ctx, repo, config); err != nil {
		return err
	}
	if _, err := c.pushSmallBlob(ctx, repo, layer); err != nil {
		return err
	}
	return c.putManifest(ctx, repo, tag, imageManifest(config, layer))
}

// runParallel runs fn for i in [0,n) on `workers` goroutines and returns the
// first error.
func runParallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// latencies collects request durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) percentile(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	i := int(p * float64(len(l.d)-1))
	return l.d[i]
}
