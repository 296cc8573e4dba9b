package replicate

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-registry/berth/oci"
	"github.com/berth-registry/berth/policy"
)

// Bounds of the conversation with an endpoint.
const (
	// requestTimeout bounds every request but blob bodies.
	requestTimeout = 30 * time.Second
	// maxErrorBody bounds the error body read from an endpoint.
	maxErrorBody = 64 << 10
	// seenBlobs bounds the blobs remembered per endpoint for mounts.
	seenBlobs = 4096
)

// manifestAccept lists the manifest media types a copy asks for.
var manifestAccept = strings.Join([]string{
	oci.MediaTypeImageManifest, oci.MediaTypeImageIndex,
	oci.MediaTypeDockerManifest, oci.MediaTypeDockerList,
}, ", ")

// Remote talks to one endpoint: the OCI Distribution API, with basic or
// token auth (go-containerregistry's transport), and berth's tag-version
// headers when the endpoint is a berth cluster.
type Remote struct {
	ep     policy.Endpoint
	base   *url.URL
	reg    name.Registry
	auth   authn.Authenticator
	inner  http.RoundTripper
	logger *slog.Logger

	// ChunkSize is the size of the PATCH requests of a blob larger than
	// it; smaller blobs go in one PUT.
	ChunkSize int64

	mu       sync.Mutex
	projects map[string]time.Time    // project → when it was last made sure of (zero: it exists)
	clients  map[string]*http.Client // scope set → authenticated client
	seen     map[oci.Digest]string   // blob → a repository holding it there
	order    []oci.Digest            // seen, oldest first
}

// NewRemote returns a client of endpoint ep with its opened password. rt
// carries the requests (nil: a default transport honouring ep.Insecure).
func NewRemote(ep policy.Endpoint, password string, rt http.RoundTripper, logger *slog.Logger) (*Remote, error) {
	u, err := url.Parse(ep.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("%w: endpoint url %q", policy.ErrInvalid, ep.URL)
	}
	opts := []name.Option{}
	if u.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: endpoint host %q: %v", policy.ErrInvalid, u.Host, err)
	}
	if rt == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 32
		if ep.Insecure {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
		}
		rt = t
	}
	var auth authn.Authenticator = authn.Anonymous
	if ep.User != "" {
		auth = &authn.Basic{Username: ep.User, Password: password}
	}
	return &Remote{
		ep: ep, base: &url.URL{Scheme: u.Scheme, Host: u.Host}, reg: reg, auth: auth, inner: rt,
		logger:    logger.With("endpoint", ep.Name),
		ChunkSize: 16 << 20,
		clients:   map[string]*http.Client{},
		seen:      map[oci.Digest]string{},
		projects:  map[string]time.Time{},
	}, nil
}

// EnsureProject makes sure the project of repo exists at a berth
// endpoint, creating it (private) through the endpoint's management API
// when it does not: berth refuses pushes into a project that does not
// exist, as Harbor does, and Harbor's replication creates it the same
// way. A failure here is not the copy's: it only logs, and the push then
// says what is wrong.
func (r *Remote) EnsureProject(ctx context.Context, repo string) {
	project, ok := policy.ProjectOf(repo)
	if !ok || !r.isBerth() {
		return
	}
	r.mu.Lock()
	last, tried := r.projects[project]
	if tried && (last.IsZero() || time.Since(last) < ensureProjectRetry) {
		r.mu.Unlock()
		return
	}
	r.projects[project] = time.Now()
	r.mu.Unlock()
	if err := r.ensureProject(ctx, project); err != nil {
		// An endpoint without the management API (or without the right
		// to create projects) is asked again only after a while.
		r.logger.Warn("could not make sure the destination project exists", "project", project, "error", err)
		return
	}
	r.mu.Lock()
	r.projects[project] = time.Time{}
	r.mu.Unlock()
}

// ensureProjectRetry is how long a failed EnsureProject is not repeated.
const ensureProjectRetry = time.Minute

// ensureProject looks project up at the endpoint and creates it, private,
// when it is not there.
func (r *Remote) ensureProject(ctx context.Context, project string) error {
	_, err := r.api(ctx, "look up project "+project, http.MethodGet, "projects/"+url.PathEscape(project), nil, http.StatusOK)
	var se *StatusError
	switch {
	case err == nil:
		return nil // it is there
	case !errors.As(err, &se) || se.Status != http.StatusNotFound:
		return err
	}
	body, err := json.Marshal(map[string]any{"name": project, "public": false})
	if err != nil {
		return err
	}
	status, err := r.api(ctx, "create project "+project, http.MethodPost, "projects", body,
		http.StatusCreated, http.StatusOK, http.StatusConflict)
	if status == http.StatusCreated {
		r.logger.Info("created the destination project", "project", project)
	}
	return err
}

// api sends one request to path under the endpoint's management API
// (berth's /api/v1/), with the endpoint's credentials as basic auth and
// body as JSON, and returns the status, one of ok; other statuses are a
// *StatusError.
func (r *Remote) api(ctx context.Context, op, method, path string, body []byte, ok ...int) (int, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, cancel, err := r.request(ctx, method, "/api/v1/"+path, rd)
	if err != nil {
		return 0, err
	}
	defer cancel()
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cfg, err := r.auth.Authorization(); err == nil && cfg.Username != "" {
		req.SetBasicAuth(cfg.Username, cfg.Password)
	}
	resp, err := r.do(&http.Client{Transport: r.inner}, req, op, ok...)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Endpoint is the endpoint r talks to.
func (r *Remote) Endpoint() policy.Endpoint { return r.ep }

// isBerth reports whether the endpoint keeps tag versions.
func (r *Remote) isBerth() bool { return r.ep.Type == policy.EndpointBerth }

// client returns an HTTP client authenticated for scopes (each
// "repository:<name>:<actions>"), made once per scope set.
func (r *Remote) client(ctx context.Context, scopes ...string) (*http.Client, error) {
	slices.Sort(scopes)
	k := strings.Join(scopes, " ")
	r.mu.Lock()
	c := r.clients[k]
	r.mu.Unlock()
	if c != nil {
		return c, nil
	}
	pctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	t, err := transport.NewWithContext(pctx, r.reg, r.auth, r.inner, scopes)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", r.ep.URL, err)
	}
	c = &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return nil }}
	r.mu.Lock()
	if len(r.clients) > 256 {
		clear(r.clients)
	}
	r.clients[k] = c
	r.mu.Unlock()
	return c, nil
}

func pullScope(repo string) string { return "repository:" + repo + ":pull" }
func pushScope(repo string) string { return "repository:" + repo + ":pull,push" }

// url is the absolute URL of an API path (or of a Location an endpoint
// returned, which may be relative).
func (r *Remote) url(ref string) (string, error) {
	u, err := r.base.Parse(ref)
	if err != nil {
		return "", permanentf("endpoint %s gave a bad location %q: %v", r.ep.Name, ref, err)
	}
	return u.String(), nil
}

// do sends one request with client c and returns the response, whose body
// the caller closes. Statuses not in ok become a *StatusError.
func (r *Remote) do(c *http.Client, req *http.Request, op string, ok ...int) (*http.Response, error) {
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if slices.Contains(ok, resp.StatusCode) {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, newStatusError(op, resp)
}

// request builds a request to path (or an absolute URL) with a timeout
// unless body streams a blob.
func (r *Remote) request(ctx context.Context, method, path string, body io.Reader) (*http.Request, context.CancelFunc, error) {
	u, err := r.url(path)
	if err != nil {
		return nil, nil, err
	}
	cancel := func() {}
	if body == nil || isSmall(body) {
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return req, cancel, nil
}

func isSmall(body io.Reader) bool {
	_, ok := body.(*bytes.Reader)
	return ok
}

// Ping checks that the endpoint answers the API's base with the
// endpoint's credentials.
func (r *Remote) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	// Authenticating for a scope is the check: the token service (or
	// basic auth) must accept the credentials.
	c, err := r.client(ctx)
	if err != nil {
		return err
	}
	req, cancel2, err := r.request(ctx, http.MethodGet, "/v2/", nil)
	if err != nil {
		return err
	}
	defer cancel2()
	resp, err := r.do(c, req, "ping", http.StatusOK)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Head returns the descriptor of repo:ref at the endpoint and the version
// the endpoint holds (berth only); found is false when it is absent, and
// the version is then the tombstone's of a deleted tag.
func (r *Remote) Head(ctx context.Context, repo, ref string) (oci.Descriptor, oci.TagVersion, bool, error) {
	c, err := r.client(ctx, pullScope(repo))
	if err != nil {
		return oci.Descriptor{}, oci.TagVersion{}, false, err
	}
	req, cancel, err := r.request(ctx, http.MethodHead, "/v2/"+repo+"/manifests/"+ref, nil)
	if err != nil {
		return oci.Descriptor{}, oci.TagVersion{}, false, err
	}
	defer cancel()
	req.Header.Set("Accept", manifestAccept)
	resp, err := r.do(c, req, "HEAD "+repo+":"+ref, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return oci.Descriptor{}, oci.TagVersion{}, false, err
	}
	resp.Body.Close()
	var v oci.TagVersion
	if r.isBerth() {
		v, _ = oci.ParseTagVersion(resp.Header.Get(oci.HeaderTagVersion))
	}
	if resp.StatusCode == http.StatusNotFound {
		return oci.Descriptor{}, v, false, nil
	}
	d, err := oci.ParseDigest(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		if oci.IsDigestReference(ref) {
			d = oci.Digest(ref)
		} else {
			// A registry that does not say: get the bytes and hash them.
			mt, body, gerr := r.GetManifest(ctx, repo, ref)
			if gerr != nil {
				return oci.Descriptor{}, v, false, gerr
			}
			return oci.Descriptor{MediaType: mt, Digest: oci.DigestOf(body), Size: int64(len(body))}, v, true, nil
		}
	}
	return oci.Descriptor{MediaType: resp.Header.Get("Content-Type"), Digest: d, Size: resp.ContentLength}, v, true, nil
}

// GetManifest returns the media type and bytes of repo:ref.
func (r *Remote) GetManifest(ctx context.Context, repo, ref string) (string, []byte, error) {
	c, err := r.client(ctx, pullScope(repo))
	if err != nil {
		return "", nil, err
	}
	req, cancel, err := r.request(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+ref, nil)
	if err != nil {
		return "", nil, err
	}
	defer cancel()
	req.Header.Set("Accept", manifestAccept)
	resp, err := r.do(c, req, "GET "+repo+":"+ref, http.StatusOK)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, oci.MaxManifestSize+1))
	if err != nil {
		return "", nil, fmt.Errorf("GET %s:%s: %w", repo, ref, err)
	}
	if len(body) > oci.MaxManifestSize {
		return "", nil, permanentf("GET %s:%s: manifest larger than %d bytes", repo, ref, oci.MaxManifestSize)
	}
	return resp.Header.Get("Content-Type"), body, nil
}

// indexJSON is the part of an OCI index the referrers answers need.
type indexJSON struct {
	SchemaVersion int              `json:"schemaVersion"`
	MediaType     string           `json:"mediaType"`
	Manifests     []oci.Descriptor `json:"manifests"`
}

// Referrers lists the referrers of subject in repo at the endpoint, through
// the referrers API, or the fallback tag where the endpoint lacks the API
// (supported false).
func (r *Remote) Referrers(ctx context.Context, repo string, subject oci.Digest) ([]oci.Descriptor, bool, error) {
	c, err := r.client(ctx, pullScope(repo))
	if err != nil {
		return nil, false, err
	}
	req, cancel, err := r.request(ctx, http.MethodGet, "/v2/"+repo+"/referrers/"+string(subject), nil)
	if err != nil {
		return nil, false, err
	}
	defer cancel()
	req.Header.Set("Accept", oci.MediaTypeImageIndex)
	resp, err := r.do(c, req, "referrers of "+string(subject), http.StatusOK, http.StatusNotFound)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK && strings.HasPrefix(resp.Header.Get("Content-Type"), oci.MediaTypeImageIndex) {
		var idx indexJSON
		if err := json.NewDecoder(io.LimitReader(resp.Body, oci.MaxManifestSize)).Decode(&idx); err != nil {
			return nil, true, permanentf("referrers of %s in %s: %v", subject, repo, err)
		}
		return idx.Manifests, true, nil
	}
	idx, _, err := r.fallbackIndex(ctx, repo, subject)
	return idx.Manifests, false, err
}

// fallbackIndex reads the referrers fallback index of subject (the tag
// sha256-<hex>); found is false when there is none.
func (r *Remote) fallbackIndex(ctx context.Context, repo string, subject oci.Digest) (indexJSON, bool, error) {
	tag := policy.AccessoryTag(subject, "")
	_, _, found, err := r.Head(ctx, repo, tag)
	if err != nil || !found {
		return indexJSON{SchemaVersion: 2, MediaType: oci.MediaTypeImageIndex, Manifests: []oci.Descriptor{}}, false, err
	}
	_, body, err := r.GetManifest(ctx, repo, tag)
	if err != nil {
		return indexJSON{}, false, err
	}
	var idx indexJSON
	if err := json.Unmarshal(body, &idx); err != nil {
		return indexJSON{}, false, permanentf("referrers fallback tag %s in %s: %v", tag, repo, err)
	}
	return idx, true, nil
}

// addFallbackReferrer lists desc in the fallback index of subject, for an
// endpoint without the referrers API.
func (r *Remote) addFallbackReferrer(ctx context.Context, repo string, subject oci.Digest, desc oci.Descriptor) error {
	idx, _, err := r.fallbackIndex(ctx, repo, subject)
	if err != nil {
		return err
	}
	for _, m := range idx.Manifests {
		if m.Digest == desc.Digest {
			return nil
		}
	}
	idx.SchemaVersion, idx.MediaType = 2, oci.MediaTypeImageIndex
	idx.Manifests = append(idx.Manifests, desc)
	body, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	_, err = r.PutManifest(ctx, repo, policy.AccessoryTag(subject, ""), oci.MediaTypeImageIndex, body, oci.TagVersion{})
	return err
}

// PutManifest stores body as repo:ref, with the version of the write when
// it is not zero (berth endpoints keep the higher one). It reports whether
// the endpoint processed the manifest's subject (OCI-Subject). An endpoint
// holding a newer version answers 409: the error wraps oci.ErrSuperseded.
func (r *Remote) PutManifest(ctx context.Context, repo, ref, mediaType string, body []byte, v oci.TagVersion) (bool, error) {
	c, err := r.client(ctx, pushScope(repo))
	if err != nil {
		return false, err
	}
	req, cancel, err := r.request(ctx, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	defer cancel()
	req.Header.Set("Content-Type", mediaType)
	if !v.IsZero() && r.isBerth() {
		req.Header.Set(oci.HeaderTagVersion, v.String())
	}
	op := "PUT " + repo + ":" + ref
	resp, err := c.Do(req)
	if err != nil {
		return false, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK:
		if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != string(oci.DigestOf(body)) {
			return false, permanentf("%s: the endpoint stored digest %s, want %s", op, got, oci.DigestOf(body))
		}
		return resp.Header.Get("OCI-Subject") != "", nil
	case resp.StatusCode == http.StatusConflict && resp.Header.Get(oci.HeaderTagVersion) != "":
		return false, fmt.Errorf("%s: the endpoint holds version %s: %w", op, resp.Header.Get(oci.HeaderTagVersion), oci.ErrSuperseded)
	}
	return false, newStatusError(op, resp)
}

// DeleteTag removes repo:tag at the endpoint while it points to ifDigest
// (otherwise oci.ErrPreconditionFailed; a plain registry is asked first).
// A berth endpoint given the delete's version v instead keeps whichever of
// the delete and the tag's last write is newer, refusing an older delete
// (oci.ErrSuperseded). A tag already gone is done.
func (r *Remote) DeleteTag(ctx context.Context, repo, tag string, ifDigest oci.Digest, v oci.TagVersion) error {
	if !r.isBerth() {
		desc, _, found, err := r.Head(ctx, repo, tag)
		if err != nil || !found {
			return err
		}
		if desc.Digest != ifDigest {
			return fmt.Errorf("%s:%s points to %s: %w", repo, tag, desc.Digest, oci.ErrPreconditionFailed)
		}
	}
	c, err := r.client(ctx, pushScope(repo))
	if err != nil {
		return err
	}
	req, cancel, err := r.request(ctx, http.MethodDelete, "/v2/"+repo+"/manifests/"+tag, nil)
	if err != nil {
		return err
	}
	defer cancel()
	if r.isBerth() {
		// Between berth clusters the version orders a delete against the
		// writes of the tag: the later one wins, whatever the tag points
		// to, so that both sides of a pair agree. Without a version (a tag
		// written before versions) the digest must still match.
		if v.IsZero() {
			req.Header.Set(oci.HeaderIfDigest, string(ifDigest))
		} else {
			req.Header.Set(oci.HeaderTagVersion, v.String())
		}
	}
	op := "DELETE " + repo + ":" + tag
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusAccepted, http.StatusOK, http.StatusNoContent, http.StatusNotFound:
		return nil
	case http.StatusPreconditionFailed:
		return fmt.Errorf("%s: %w", op, oci.ErrPreconditionFailed)
	case http.StatusConflict:
		if resp.Header.Get(oci.HeaderTagVersion) != "" {
			return fmt.Errorf("%s: the endpoint holds version %s: %w", op, resp.Header.Get(oci.HeaderTagVersion), oci.ErrSuperseded)
		}
	case http.StatusBadRequest, http.StatusMethodNotAllowed:
		if !r.isBerth() {
			// A registry that deletes manifests only by digest (the
			// distribution spec makes tag deletes optional).
			return r.DeleteManifest(ctx, repo, ifDigest)
		}
	}
	return newStatusError(op, resp)
}

// DeleteManifest removes repo@d at the endpoint; one already gone is done.
func (r *Remote) DeleteManifest(ctx context.Context, repo string, d oci.Digest) error {
	c, err := r.client(ctx, pushScope(repo))
	if err != nil {
		return err
	}
	req, cancel, err := r.request(ctx, http.MethodDelete, "/v2/"+repo+"/manifests/"+string(d), nil)
	if err != nil {
		return err
	}
	defer cancel()
	resp, err := r.do(c, req, "DELETE "+repo+"@"+string(d), http.StatusAccepted, http.StatusOK, http.StatusNoContent, http.StatusNotFound)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// HasBlob reports whether repo has blob d at the endpoint.
func (r *Remote) HasBlob(ctx context.Context, repo string, d oci.Digest) (bool, error) {
	c, err := r.client(ctx, pushScope(repo))
	if err != nil {
		return false, err
	}
	req, cancel, err := r.request(ctx, http.MethodHead, "/v2/"+repo+"/blobs/"+string(d), nil)
	if err != nil {
		return false, err
	}
	defer cancel()
	resp, err := r.do(c, req, "HEAD blob "+string(d), http.StatusOK, http.StatusNotFound)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		r.saw(d, repo)
		return true, nil
	}
	return false, nil
}

// saw remembers that repo holds blob d at the endpoint, for mounts.
func (r *Remote) saw(d oci.Digest, repo string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.seen[d]; !ok {
		r.order = append(r.order, d)
		if len(r.order) > seenBlobs {
			delete(r.seen, r.order[0])
			r.order = r.order[1:]
		}
	}
	r.seen[d] = repo
}

// holder is a repository known to hold blob d at the endpoint ("" none).
func (r *Remote) holder(d oci.Digest) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[d]
}

// StatusError is an answer of an endpoint that is not what the protocol
// wants, with the OCI error code it carried.
type StatusError struct {
	Op         string
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s: %d %s", e.Op, e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		msg += ": " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// newStatusError reads the OCI error body of resp.
func newStatusError(op string, resp *http.Response) *StatusError {
	e := &StatusError{Op: op, Status: resp.StatusCode}
	if s := resp.Header.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			e.RetryAfter = time.Duration(n) * time.Second
		} else if t, err := http.ParseTime(s); err == nil {
			e.RetryAfter = time.Until(t)
		}
	}
	var body struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if json.Unmarshal(b, &body) == nil && len(body.Errors) > 0 {
		e.Code, e.Message = body.Errors[0].Code, body.Errors[0].Message
	}
	return e
}

// errPermanent marks a failure that no retry can cure.
var errPermanent = errors.New("permanent")

func permanentf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errPermanent}, args...)...)
}

// IsTemporary reports whether a failed attempt may succeed later without
// anyone changing the policy: network failures, a connection cut mid-body,
// timeouts, and the statuses 401 (credentials may be fixed), 408, 429 and
// 5xx. Other statuses, and what the copier finds wrong with the content,
// are permanent.
func IsTemporary(err error) bool {
	if err == nil || errors.Is(err, errPermanent) || errors.Is(err, policy.ErrInvalid) {
		return false
	}
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status == http.StatusUnauthorized || se.Status == http.StatusRequestTimeout ||
			se.Status == http.StatusTooManyRequests || se.Status >= 500
	}
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusRequestTimeout ||
			te.StatusCode == http.StatusTooManyRequests || te.StatusCode >= 500 || te.StatusCode == 0
	}
	if errors.Is(err, oci.ErrNotFound) || errors.Is(err, oci.ErrUnsupported) {
		return false
	}
	var ne net.Error
	var ue *url.Error
	return errors.As(err, &ne) || errors.As(err, &ue) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, oci.ErrUnavailable)
}

// RetryAfter is the wait an endpoint asked for with a 429 or 503 (0: none).
func RetryAfter(err error) time.Duration {
	var se *StatusError
	if errors.As(err, &se) {
		return se.RetryAfter
	}
	return 0
}
