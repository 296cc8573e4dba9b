package registry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
)

// Log keys used across the package.
const (
	keyRequestID = "request_id"
	keyError     = "err"
	keyMethod    = "method"
	keyRoute     = "route"
	keyPath      = "path"
	keyStatus    = "status"
	keyDuration  = "duration"
	keyBytesIn   = "bytes_in"
	keyBytesOut  = "bytes_out"
	keyRemote    = "remote"
	keyRepo      = "repo"
	keyDigest    = "digest"
	keyComponent = "component"
)

// headerRequestID carries the request id in and out.
const headerRequestID = "X-Request-Id"

// maxRequestIDLength bounds a client-supplied request id; a longer or
// non-printable one is replaced by a generated id.
const maxRequestIDLength = 128

// maxLoggedPath bounds the path written to the access log.
const maxLoggedPath = 512

// routeOther labels requests whose handler named no route and matched no
// ServeMux pattern, so that raw paths never become label values.
const routeOther = "other"

// requestInfo travels in the request context from Middleware to the
// handlers: the request id, and the route template the handler fills in.
type requestInfo struct {
	id    string
	route string
}

type ctxKey struct{}

func infoFrom(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(ctxKey{}).(*requestInfo)
	return info
}

// RequestID returns the request id Middleware gave the request's context,
// or "" outside Middleware.
func RequestID(ctx context.Context) string {
	if info := infoFrom(ctx); info != nil {
		return info.id
	}
	return ""
}

// SetRoute names the route template of a request (for example "manifests")
// for the metrics and the access log. Handlers outside this package that are
// not mounted on a ServeMux pattern call it; others are labelled by their
// pattern.
func SetRoute(r *http.Request, route string) {
	if info := infoFrom(r.Context()); info != nil {
		info.route = route
	}
}

// httpMetrics are the collectors of Middleware.
type httpMetrics struct {
	duration *prometheus.HistogramVec
	bytesIn  *prometheus.CounterVec
	bytesOut *prometheus.CounterVec
}

func newHTTPMetrics(reg prometheus.Registerer) *httpMetrics {
	m := &httpMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "berth_http_request_duration_seconds",
			Help:    "Duration of HTTP requests by route template, method and status.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"route", "method", "status"}),
		bytesIn: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_http_request_bytes_total",
			Help: "Bytes of request bodies read, by route template and method.",
		}, []string{"route", "method"}),
		bytesOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "berth_http_response_bytes_total",
			Help: "Bytes of response bodies written, by route template and method.",
		}, []string{"route", "method"}),
	}
	if reg != nil {
		m.duration = registerOrExisting(reg, m.duration)
		m.bytesIn = registerOrExisting(reg, m.bytesIn)
		m.bytesOut = registerOrExisting(reg, m.bytesOut)
	}
	return m
}

// registerOrExisting registers c, or returns the equal collector that is
// already registered (two handlers built on one registry share it).
func registerOrExisting[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a programming error: two different collectors under one name
	}
	return c
}

// Middleware gives every request an id (the client's X-Request-Id when it is
// sane, else a generated one; echoed in the response), writes one access log
// line per request with that id, and records
// berth_http_request_duration_seconds{route,method,status} and the bytes in
// and out. cmd wraps the whole ServeMux in it.
func Middleware(next http.Handler, logger *slog.Logger, reg prometheus.Registerer) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := newHTTPMetrics(reg)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get(headerRequestID)
		if !validRequestID(id) {
			id = uuid.NewString()
		}
		info := &requestInfo{id: id}
		w.Header().Set(headerRequestID, id)
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, info))
		body := &countingBody{ReadCloser: r.Body}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = body
		}
		rw := &responseRecorder{ResponseWriter: w}
		defer func() {
			route := info.route
			if route == "" {
				route = routeOther
				if r.Pattern != "" {
					route = r.Pattern
				}
			}
			status := rw.status
			if status == 0 {
				status = http.StatusOK
			}
			method := methodLabel(r.Method)
			elapsed := time.Since(start)
			m.duration.WithLabelValues(route, method, strconv.Itoa(status)).Observe(elapsed.Seconds())
			m.bytesIn.WithLabelValues(route, method).Add(float64(body.n))
			m.bytesOut.WithLabelValues(route, method).Add(float64(rw.n))
			path := r.URL.Path
			if len(path) > maxLoggedPath {
				path = path[:maxLoggedPath]
			}
			logger.LogAttrs(r.Context(), slog.LevelInfo, "request",
				slog.String(keyRequestID, id),
				slog.String(keyMethod, method),
				slog.String(keyRoute, route),
				slog.String(keyPath, path),
				slog.Int(keyStatus, status),
				slog.Int64(keyBytesIn, body.n),
				slog.Int64(keyBytesOut, rw.n),
				slog.Duration(keyDuration, elapsed),
				slog.String(keyRemote, r.RemoteAddr),
			)
		}()
		next.ServeHTTP(rw, r)
	})
}

// validRequestID accepts short printable ASCII ids.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLength {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// methodLabel keeps the method label set bounded.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// countingBody counts the bytes read from a request body.
type countingBody struct {
	io.ReadCloser
	n int64
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n += int64(n)
	return n, err
}

// responseRecorder captures the status and counts the body bytes. It keeps
// io.ReaderFrom (so blob downloads still use sendfile) and Flush, and
// unwraps for http.ResponseController.
type responseRecorder struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *responseRecorder) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseRecorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *responseRecorder) ReadFrom(src io.Reader) (int64, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := w.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(writerOnly{w.ResponseWriter}, src)
	}
	w.n += n
	return n, err
}

func (w *responseRecorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *responseRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// writerOnly hides ReadFrom so io.Copy does not recurse.
type writerOnly struct{ io.Writer }
