package registry

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/berth-registry/berth/policy"
)

// The cost of one authorization decision on the pull path, by kind of
// credential: what token auth adds to every request. Compare runs with
// benchstat:
//
//	go test -run '^$' -bench Authorize -count 6 ./registry/ | tee new.txt
func BenchmarkAuthorize(b *testing.B) {
	tr := newTestRegistry(b, testOpts{})
	tr.newAccessAuth(b, true, nil)
	ctx := context.Background()
	for _, p := range []policy.Project{{Name: "priv", Quota: policy.NoQuota}, {Name: "pub", Public: true, Quota: policy.NoQuota}} {
		if _, err := tr.node.CreateProject(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := tr.node.CreateUser(ctx, policy.User{Name: "dev"}, passwordOf("dev"), false); err != nil {
		b.Fatal(err)
	}
	if err := tr.node.PutMember(ctx, policy.Member{Project: "priv", User: "dev", Role: policy.RoleDeveloper}, true); err != nil {
		b.Fatal(err)
	}
	token := func() string {
		q := url.Values{"service": {"berth"}, "scope": {"repository:priv/app:pull"}}
		req := httptest.NewRequest(http.MethodGet, TokenPath+"?"+q.Encode(), nil)
		req.SetBasicAuth("dev", passwordOf("dev"))
		rec := httptest.NewRecorder()
		tr.access.TokenHandler().ServeHTTP(rec, req)
		var tok tokenResponse
		if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &tok) != nil {
			b.Fatalf("token: %d %s", rec.Code, rec.Body)
		}
		return tok.Token
	}
	need := Access{Repo: "priv/app", Action: ActionPull}
	authorize := func(b *testing.B, req *http.Request, need Access) {
		if _, err := tr.access.Authorize(req, need); err != nil {
			b.Fatal(err)
		}
	}
	request := func(repo, header string) *http.Request {
		req := httptest.NewRequest(http.MethodHead, "/v2/"+repo+"/manifests/v1", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		return req
	}

	b.Run("anonymous public", func(b *testing.B) {
		req := request("pub/app", "")
		for b.Loop() {
			authorize(b, req, Access{Repo: "pub/app", Action: ActionPull})
		}
	})
	b.Run("basic cached", func(b *testing.B) {
		req := request(need.Repo, "")
		req.SetBasicAuth("dev", passwordOf("dev"))
		authorize(b, req, need) // the one bcrypt comparison
		for b.Loop() {
			authorize(b, req, need)
		}
	})
	b.Run("bearer cached", func(b *testing.B) {
		req := request(need.Repo, "Bearer "+token())
		for b.Loop() {
			authorize(b, req, need)
		}
	})
	b.Run("bearer first use", func(b *testing.B) {
		// Each token once: the key lookup, the Ed25519 verification and the
		// claims' checks, with the verified-token cache full after the
		// first 4096 (as on a busy registry).
		toks := make([]*http.Request, 0, 4096)
		for range cap(toks) {
			toks = append(toks, request(need.Repo, "Bearer "+token()))
		}
		i := 0
		for b.Loop() {
			if i == len(toks) {
				b.StopTimer()
				for j := range toks {
					toks[j] = request(need.Repo, "Bearer "+token())
				}
				i = 0
				b.StartTimer()
			}
			authorize(b, toks[i], need)
			i++
		}
	})
}
