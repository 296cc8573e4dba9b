package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
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
	drain(resp)
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST upload: %s", resp.Status)
	}
	loc, err := c.location(resp)
	if err != nil {
		return err
	}
	resp, err = c.do(ctx, http.MethodPatch, loc, bytes.NewReader(data), int64(len(data)), map[string]string{"Content-Type": "application/octet-stream"})
	if err != nil {
		return err
	}
	drain(resp)
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("PATCH upload: %s", resp.Status)
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
	drain(resp)
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("POST upload: %s", resp.Status)
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
	drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT upload: %s", resp.Status)
	}
	return nil
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
	drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT manifest: %s", resp.Status)
	}
	return nil
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
