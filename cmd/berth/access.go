package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// Helpers of the access commands (project, member, user, robot, quota,
// immutable, retention, audit): each is a thin client of one or two
// /api/v1 endpoints (api/DESIGN.md).

// call is one run of an access command: its checked arguments and output
// format, and the API client, made on first use so that a bad argument is
// reported before missing credentials.
type call struct {
	*cli.Context
	m      *Main
	args   []string
	output string
	client *apiClient
}

// action makes the Action of a command taking exactly the named arguments.
func (m *Main) action(fn func(*call) error, names ...string) cli.ActionFunc {
	return func(c *cli.Context) error {
		a, err := args(c, names...)
		if err != nil {
			return err
		}
		output, err := outputOf(c)
		if err != nil {
			return err
		}
		return fn(&call{Context: c, m: m, args: a, output: output})
	}
}

// api returns the command's API client.
func (c *call) api() (apiClient, error) {
	if c.client == nil {
		a, _, err := clientOf(c.Context)
		if err != nil {
			return apiClient{}, err
		}
		c.client = &a
	}
	return *c.client, nil
}

// do sends in (as JSON, unless nil) to path and decodes the answer into out.
func (c *call) do(method, path string, in, out any) error {
	_, err := c.send(method, path, in, out)
	return err
}

// send is do that returns the answer's header.
func (c *call) send(method, path string, in, out any) (http.Header, error) {
	a, err := c.api()
	if err != nil {
		return nil, err
	}
	return a.send(c.Context.Context, method, path, in, out)
}

// show GETs path and prints the answer: as JSON, or as table writes it.
func show[T any](c *call, path string, table func(io.Writer, T) error) error {
	var v T
	if err := c.do(http.MethodGet, path, nil, &v); err != nil {
		return err
	}
	return c.print(v, func(w io.Writer) error { return table(w, v) })
}

// listPages reads every page of a list endpoint paged with page and
// page_size (GET /projects, GET /users). It gives up after maxListPages,
// rather than loop on a server that ignores page.
func listPages[T any](c *call, path string, q url.Values) ([]T, error) {
	const size = 100
	if q == nil {
		q = url.Values{}
	}
	q.Set("page_size", strconv.Itoa(size))
	all := []T{} // [] in JSON, not null
	for page := 1; ; page++ {
		if page > maxListPages {
			return nil, fmt.Errorf("GET %s: more than %d pages of %d; is the server ignoring page=?", path, maxListPages, size)
		}
		q.Set("page", strconv.Itoa(page))
		var items []T
		if err := c.do(http.MethodGet, path+"?"+q.Encode(), nil, &items); err != nil {
			return nil, err
		}
		all = append(all, items...)
		if len(items) < size {
			return all, nil
		}
	}
}

// maxListPages bounds the pages listPages reads.
const maxListPages = 10_000

// print writes v as JSON, or as table writes it.
func (c *call) print(v any, table func(w io.Writer) error) error {
	if c.output == outputJSON {
		return writeJSONOut(c.m.Stdout, v)
	}
	return table(c.m.Stdout)
}

// done reports a change whose answer is empty: msg in a table, nothing in
// JSON (the exit status says it).
func (c *call) done(format string, a ...any) error {
	if c.output == outputJSON {
		return nil
	}
	_, err := fmt.Fprintf(c.m.Stdout, format+"\n", a...)
	return err
}

// pathOf joins escaped path segments.
func pathOf(segments ...string) string {
	for i, s := range segments {
		segments[i] = url.PathEscape(s)
	}
	return strings.Join(segments, "/")
}

// repeated is a flag value that each use appends to. Unlike
// cli.StringSliceFlag it does not split at commas: retention rules and
// robot permissions hold commas.
type repeated []string

func (r *repeated) Set(s string) error { *r = append(*r, s); return nil }
func (r *repeated) String() string     { return strings.Join(*r, " ") }

func repeatedFlag(name, usage string) *cli.GenericFlag {
	return &cli.GenericFlag{Name: name, Value: &repeated{}, Usage: usage, DefaultText: "none"}
}

func repeatedValues(c *cli.Context, name string) []string {
	if r, ok := c.Generic(name).(*repeated); ok {
		return *r
	}
	return nil
}

// parseBool reads a true|false argument.
func parseBool(what, s string) (bool, error) {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("%s %q: want true or false", what, s)
	}
	return b, nil
}

// parseID reads a positive number argument.
func parseID(what, s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%s %q: want a positive number", what, s)
	}
	return id, nil
}

// writeSecretFile writes secret to path, readable by this user only,
// replacing what was there.
func writeSecretFile(path, secret string) error {
	if path == "" {
		return errors.New("empty secret file name")
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".berth-secret-*") // 0600
	if err != nil {
		return fmt.Errorf("write secret: %w", err)
	}
	_, werr := f.WriteString(secret + "\n")
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write secret: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write secret: %w", err)
	}
	return nil
}
