package api_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/berth-registry/berth/api"
)

// TestOpenAPI: the served document is OpenAPI 3, documents every route
// and method the handler serves under /api/v1 and nothing else, and every
// reference in it resolves.
func TestOpenAPI(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := api.New(&fakeGC{}, users(), api.Info{}, logger).
		WithCluster(fakeCluster{}).WithReplication(emptyRepl{})
	rec := do(t, h, http.MethodGet, "/api/v1/openapi.json", "", nil)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET openapi.json: %d %v", rec.Code, rec.Header())
	}
	var doc map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi %q", v)
	}

	// The Harbor-compatible routes are described by harbor.json
	// (TestHarborDocument), not by this document.
	var routes []string
	for _, r := range api.Routes(h) {
		if !strings.Contains(r, " "+api.HarborPrefix) {
			routes = append(routes, r)
		}
	}
	checkDocument(t, doc, routes)
	if len(routes) < 60 {
		t.Errorf("only %d routes: is the handler complete?", len(routes))
	}
}

// checkDocument checks that the OpenAPI document doc describes every
// route of routes and nothing else, each operation with a summary, an
// x-permission and responses, its path parameters declared, and that
// every reference in it resolves.
func checkDocument(t *testing.T, doc map[string]any, routes []string) {
	t.Helper()
	methods := []string{"get", "put", "post", "delete", "patch", "head", "options"}
	var documented []string
	paths, _ := doc["paths"].(map[string]any)
	wildcard := regexp.MustCompile(`\{([a-z_]+)\}`)
	for path, item := range paths {
		ops, _ := item.(map[string]any)
		for m, o := range ops {
			if !slices.Contains(methods, m) {
				continue
			}
			documented = append(documented, strings.ToUpper(m)+" "+path)
			op, _ := o.(map[string]any)
			if op["x-permission"] == nil || op["responses"] == nil || op["summary"] == nil {
				t.Errorf("%s %s: want summary, x-permission and responses", m, path)
			}
			// Every wildcard of the path is a declared path parameter.
			declared := map[string]bool{}
			params, _ := op["parameters"].([]any)
			for _, p := range params {
				pm, _ := resolve(t, doc, p).(map[string]any)
				if pm["in"] == "path" {
					declared[pm["name"].(string)] = true
				}
			}
			for _, w := range wildcard.FindAllStringSubmatch(path, -1) {
				if !declared[w[1]] {
					t.Errorf("%s %s: path parameter %s is not declared", m, path, w[1])
				}
			}
		}
	}
	for _, r := range routes {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not documented", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(routes, d) {
			t.Errorf("%s is documented but not routed", d)
		}
	}

	// Every $ref resolves.
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if _, ok := x["$ref"]; ok {
				resolve(t, doc, x)
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(doc)
}

// resolve follows v's $ref, if it has one, within doc.
func resolve(t *testing.T, doc map[string]any, v any) any {
	t.Helper()
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	ref, ok := m["$ref"].(string)
	if !ok {
		return v
	}
	var cur any = doc
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		next, ok := cur.(map[string]any)[part]
		if !ok {
			t.Errorf("$ref %s does not resolve", ref)
			return nil
		}
		cur = next
	}
	return cur
}

// readDocument reads the API document name (openapi.json, harbor.json).
func readDocument(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return doc
}

// operation is the operation of route ("METHOD /path") in doc, or nil.
func operation(doc map[string]any, route string) map[string]any {
	method, path, _ := strings.Cut(route, " ")
	paths, _ := doc["paths"].(map[string]any)
	item, _ := paths[path].(map[string]any)
	op, _ := item[strings.ToLower(method)].(map[string]any)
	return op
}
