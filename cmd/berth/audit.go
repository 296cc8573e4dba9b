package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/policy"
)

// auditPageMax is the most events asked for in one page.
const auditPageMax = 500

// nextBefore returns the before= of the Link rel="next" in h, or "" when
// there is no next page. Only that parameter is taken from the link: the
// next request is this client's own query with it, never a URL the
// server chose.
func nextBefore(h http.Header) string {
	for _, v := range h.Values("Link") {
		for link := range strings.SplitSeq(v, ",") {
			target, params, ok := strings.Cut(link, ";")
			if !ok || !hasRelNext(params) {
				continue
			}
			target = strings.Trim(strings.TrimSpace(target), "<>")
			u, err := url.Parse(target)
			if err != nil {
				continue
			}
			if b := u.Query().Get("before"); b != "" {
				return b
			}
		}
	}
	return ""
}

func hasRelNext(params string) bool {
	for p := range strings.SplitSeq(params, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, "rel") && strings.Trim(v, `"`) == "next" {
			return true
		}
	}
	return false
}

func (m *Main) auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "the audit log, newest first: who did what, when, from where (admin; with --project, that project's log)",
		Description: "Times are RFC 3339, a date, or a duration ago: --since 24h, --since 7d,\n" +
			"--since 2025-01-02T15:04:05Z. Operations: push, pull, delete, create, update,\n" +
			"login_failed, quota, retention. Resource types: artifact, tag, project, member,\n" +
			"user, robot, immutable_rule, retention_policy, quota, token_key, account.",
		Flags: append(auditClientFlags(),
			&cli.StringFlag{Name: "user", Usage: "only what `NAME` (a user or robot) did"},
			&cli.StringFlag{Name: "project", Usage: "only events in `PROJECT`"},
			&cli.StringFlag{Name: "operation", Usage: "only this operation (push, pull, delete, create, ...)"},
			&cli.StringFlag{Name: "resource-type", Usage: "only this resource type (artifact, tag, member, ...)"},
			&cli.StringFlag{Name: "resource", Usage: "only resources starting with `TEXT` (a repository)"},
			&cli.StringFlag{Name: "since", Usage: "only events from `TIME` on"},
			&cli.StringFlag{Name: "until", Usage: "only events before `TIME`"},
			&cli.IntFlag{Name: "limit", Value: 50, Usage: "at most `N` events (with --all: the page size)"},
			&cli.BoolFlag{Name: "all", Usage: "every event that matches, page after page"},
		),
		Action: m.action(func(c *call) error {
			q, err := auditQuery(c.Context, time.Now())
			if err != nil {
				return err
			}
			limit, all := c.Int("limit"), c.Bool("all")
			if limit < 1 {
				return fmt.Errorf("limit %d: want at least 1", limit)
			}
			events := []policy.AuditEvent{} // [] in JSON, not null
			for {
				size := min(limit, auditPageMax)
				if !all {
					size = min(limit-len(events), auditPageMax)
				}
				q.Set("limit", strconv.Itoa(size))
				var page []policy.AuditEvent
				h, err := c.send(http.MethodGet, "audit?"+q.Encode(), nil, &page)
				if err != nil {
					return err
				}
				events = append(events, page...)
				before := nextBefore(h)
				if before == "" || len(page) == 0 || (!all && len(events) >= limit) {
					break
				}
				if before == q.Get("before") {
					return fmt.Errorf("audit: the server sent the same next page twice (before=%s)", before)
				}
				q.Set("before", before)
			}
			if !all && len(events) > limit {
				events = events[:limit]
			}
			return c.print(events, func(w io.Writer) error { return printAudit(w, events) })
		}),
	}
}

// auditClientFlags are the client flags of `audit`, whose --user filters
// the log.
func auditClientFlags() []cli.Flag {
	return serverClientFlags("user name at --server (for basic auth)", "password at --server (default: the saved login)")
}

// auditQuery makes the query of GET /audit from the flags; times are sent
// in RFC 3339.
func auditQuery(c *cli.Context, now time.Time) (url.Values, error) {
	q := url.Values{}
	for flag, param := range map[string]string{
		"user": "user", "project": "project", "operation": "operation",
		"resource-type": "resource_type", "resource": "resource",
	} {
		if v := c.String(flag); v != "" {
			q.Set(param, v)
		}
	}
	for _, flag := range []string{"since", "until"} {
		if v := c.String(flag); v != "" {
			t, err := parseTime(v, now)
			if err != nil {
				return nil, fmt.Errorf("--%s: %w", flag, err)
			}
			q.Set(flag, t.UTC().Format(time.RFC3339Nano))
		}
	}
	return q, nil
}

func printAudit(w io.Writer, events []policy.AuditEvent) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tACTOR\tADDRESS\tOPERATION\tTYPE\tRESOURCE\tPROJECT\tCOUNT\tDETAIL")
	for _, e := range events {
		count := max(e.Count, 1)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", when(e.Time), e.Actor, dash(e.Addr), e.Op, e.Resource, dash(e.Target), dash(e.Project), count, e.Detail)
	}
	return tw.Flush()
}
