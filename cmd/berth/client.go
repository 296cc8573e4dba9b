package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/api"
)

// Output formats of client commands.
const (
	outputTable = "table"
	outputJSON  = "json"
)

// clientFlags are the flags of every command that calls a node's
// management API.
func clientFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "server", EnvVars: []string{"BERTH_SERVER"}, Value: "http://127.0.0.1:5000", Usage: "`URL` of the node"},
		&cli.StringFlag{Name: "user", EnvVars: []string{"BERTH_USER"}, Value: adminUser, Usage: "user name"},
		&cli.StringFlag{Name: "password", EnvVars: []string{"BERTH_PASSWORD"}, Usage: "password, for HTTP basic auth (default: the saved login, else <data>/admin.password)"},
		&cli.StringFlag{Name: "data", EnvVars: []string{"BERTH_DATA"}, Value: DefaultConfig().Data, Usage: "the node's data `DIR`, to read admin.password from"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: outputTable, Usage: "table or json"},
	}
}

// serverClientFlags are clientFlags for a command whose own --user and
// --password mean something else (a filter, an endpoint's credentials):
// the node's are --server-user and --server-password (BERTH_USER,
// BERTH_PASSWORD), which clientOf then reads.
func serverClientFlags(userUsage, passwordUsage string) []cli.Flag {
	var out []cli.Flag
	for _, f := range clientFlags() {
		switch f.Names()[0] {
		case "user":
			out = append(out, &cli.StringFlag{Name: "server-user", EnvVars: []string{"BERTH_USER"}, Value: adminUser, Usage: userUsage})
		case "password":
			out = append(out, &cli.StringFlag{Name: "server-password", EnvVars: []string{"BERTH_PASSWORD"}, Usage: passwordUsage})
		default:
			out = append(out, f)
		}
	}
	return out
}

// clientFrom checks a client command's arguments and flags (clientFlags)
// and returns the API client and the output format.
func clientFrom(c *cli.Context, name string) (apiClient, string, error) {
	if c.NArg() > 0 {
		return apiClient{}, "", fmt.Errorf("%s takes no arguments, got %q", name, c.Args().Slice())
	}
	return clientOf(c)
}

// clientOf returns the API client and the output format of a client
// command. Credentials, first found first used:
//
//   - --user and --password (or BERTH_USER and BERTH_PASSWORD): HTTP basic
//     auth, as scripts and the first admin use it;
//   - what `berth login` saved for the server and user: its refresh token,
//     traded for short-lived Bearer access tokens (a login saved before
//     token auth holds a password, used with basic auth until the next
//     `berth login`);
//   - admin with the password in a local node's data directory (--data).
//
// The server comes from --server (BERTH_SERVER), else the saved login,
// else the default.
func clientOf(c *cli.Context) (apiClient, string, error) {
	output, err := outputOf(c)
	if err != nil {
		return apiClient{}, "", err
	}
	userFlag, passwordFlag := "user", "password"
	if c.IsSet("server-user") || c.IsSet("server-password") || c.String("server-user") != "" {
		// endpoint add: --user and --password are the endpoint's.
		userFlag, passwordFlag = "server-user", "server-password"
	}
	a := apiClient{server: c.String("server"), user: c.String(userFlag), password: c.String(passwordFlag)}
	saved, err := loadLogin()
	if err != nil {
		return apiClient{}, "", err
	}
	if saved.Server != "" && (!c.IsSet("server") || sameServer(saved.Server, a.server)) {
		if !c.IsSet("server") {
			a.server = saved.Server
		}
		if !c.IsSet(userFlag) && saved.User != "" {
			a.user = saved.User
		}
		if a.password == "" && a.user == saved.User {
			switch {
			case saved.RefreshToken != "":
				a.tokens = newTokenSource(a.server, a.user, saved.RefreshToken)
				a.tokens.keep = func(refresh string) error {
					saved.RefreshToken = refresh
					_, err := saveLogin(saved)
					return err
				}
			default:
				a.password = saved.Password
			}
		}
	}
	if a.password == "" && a.tokens == nil {
		p, err := readPasswordFile(filepath.Join(c.String("data"), adminPasswordFile))
		if errors.Is(err, fs.ErrNotExist) {
			return apiClient{}, "", errors.New("no password: use --password or BERTH_PASSWORD, `berth login`, or --data with the node's data directory")
		}
		if err != nil {
			return apiClient{}, "", err
		}
		a.password = p
	}
	return a, output, nil
}

// outputOf returns the output format of a client command (--output).
func outputOf(c *cli.Context) (string, error) {
	output := c.String("output")
	if output != outputTable && output != outputJSON {
		return "", fmt.Errorf("output %q: want table or json", output)
	}
	return output, nil
}

// apiClient calls a node's management API, with HTTP basic auth or, after
// `berth login`, Bearer access tokens.
type apiClient struct {
	server, user, password string
	// tokens, when set, authenticates instead of the password.
	tokens *tokenSource
}

// registryAuth is how registry clients (go-containerregistry, cosign)
// authenticate as a: basic, or the refresh token as docker's identity
// token, which they trade at the token service as a does.
func (a apiClient) registryAuth() authn.Authenticator {
	if a.tokens != nil {
		a.tokens.mu.Lock()
		defer a.tokens.mu.Unlock()
		return authn.FromConfig(authn.AuthConfig{Username: a.user, IdentityToken: a.tokens.refresh})
	}
	return &authn.Basic{Username: a.user, Password: a.password}
}

// do sends a request to path (relative to /api/v1/) with in, when not
// nil, as its JSON body, and decodes a 2xx JSON answer into out; other
// answers become errors carrying the server's message.
func (a apiClient) do(ctx context.Context, method, path string, in, out any) error {
	_, err := a.send(ctx, method, path, in, out)
	return err
}

// send is do that also returns the answer's header (a Link to the next
// page). With tokens, a 401 is tried once more with a new access token:
// the server may have dropped the one held (a key rotation).
func (a apiClient) send(ctx context.Context, method, path string, in, out any) (http.Header, error) {
	base, err := serverURL(a.server)
	if err != nil {
		return nil, err
	}
	rel, err := url.Parse(path)
	if err != nil {
		return nil, err
	}
	u := base.JoinPath(api.Prefix, rel.Path)
	u.RawQuery = rel.RawQuery
	var payload []byte
	if in != nil {
		if payload, err = json.Marshal(in); err != nil {
			return nil, err
		}
	}
	for attempt := 1; ; attempt++ {
		var body io.Reader
		if in != nil {
			body = bytes.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
		if err != nil {
			return nil, err
		}
		bearer := ""
		if a.tokens != nil {
			if bearer, err = a.tokens.token(ctx); err != nil {
				return nil, err
			}
			req.Header.Set("Authorization", "Bearer "+bearer)
		} else {
			req.SetBasicAuth(a.user, a.password)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		resp, b, err := exchange(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusUnauthorized && bearer != "" {
			a.tokens.forget(bearer)
			if attempt == 1 {
				continue
			}
			return nil, fmt.Errorf("%s %s: %s: %w", method, u.Redacted(), resp.Status, a.tokens.expired(errorMessage(b)))
		}
		if resp.StatusCode/100 != 2 {
			return nil, fmt.Errorf("%s %s: %s: %s", method, u.Redacted(), resp.Status, errorMessage(b))
		}
		if out == nil || len(b) == 0 {
			return resp.Header, nil
		}
		if err := json.Unmarshal(b, out); err != nil {
			return nil, fmt.Errorf("%s %s: decode answer: %w", method, u.Redacted(), err)
		}
		return resp.Header, nil
	}
}

// serverURL parses the URL of a node (--server, a saved login).
func serverURL(server string) (*url.URL, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("server %q: want a URL like http://127.0.0.1:5000", server)
	}
	return u, nil
}

// exchange sends req and returns the answer with its body, read whole (up
// to 1 MiB) and closed.
func exchange(req *http.Request) (*http.Response, []byte, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: read answer: %w", req.Method, req.URL.Redacted(), err)
	}
	return resp, b, nil
}
