package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"

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
		&cli.StringFlag{Name: "user", EnvVars: []string{"BERTH_USER"}, Value: adminUser, Usage: "admin user name"},
		&cli.StringFlag{Name: "password", EnvVars: []string{"BERTH_PASSWORD"}, Usage: "password (default: read from <data>/admin.password)"},
		&cli.StringFlag{Name: "data", EnvVars: []string{"BERTH_DATA"}, Value: DefaultConfig().Data, Usage: "the node's data `DIR`, to read admin.password from"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: outputTable, Usage: "table or json"},
	}
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
// command. The server, user and password come from the flags (or their
// BERTH_* variables), else from what `berth login` saved, else the
// defaults; a password may also be read from a local node's data
// directory.
func clientOf(c *cli.Context) (apiClient, string, error) {
	output := c.String("output")
	if output != outputTable && output != outputJSON {
		return apiClient{}, "", fmt.Errorf("output %q: want table or json", output)
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
			a.password = saved.Password
		}
	}
	if a.password == "" {
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

// apiClient calls a node's management API with basic auth.
type apiClient struct {
	server, user, password string
	http                   *http.Client // nil: http.DefaultClient
}

// do sends a request to path (relative to /api/v1/) and decodes a 2xx JSON
// answer into out; other answers become errors carrying the server's message.
func (a apiClient) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	base, err := url.Parse(a.server)
	if err != nil || base.Scheme == "" || base.Host == "" {
		return fmt.Errorf("server %q: want a URL like http://127.0.0.1:5000", a.server)
	}
	rel, err := url.Parse(path)
	if err != nil {
		return err
	}
	u := base.JoinPath(api.Prefix, rel.Path)
	u.RawQuery = rel.RawQuery
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	req.SetBasicAuth(a.user, a.password)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	client := a.http
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, u.Redacted(), err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, u.Redacted(), err)
	}
	if resp.StatusCode/100 != 2 {
		var e api.ErrorResponse
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return fmt.Errorf("%s %s: %s: %s", method, u.Redacted(), resp.Status, msg)
	}
	if out == nil || len(b) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, u.Redacted(), err)
	}
	return nil
}
