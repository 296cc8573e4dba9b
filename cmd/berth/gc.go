package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/api"
)

func (m *Main) gcCommand() *cli.Command {
	return &cli.Command{
		Name:  "gc",
		Usage: "run garbage collection on a running node now",
		Description: "Deletes blobs that no manifest references and that are older than the\n" +
			"node's gc_grace. The node also collects by itself every gc_interval.",
		Flags: append(clientFlags(),
			&cli.BoolFlag{Name: "dry-run", Usage: "report what would be deleted, delete nothing"},
		),
		Action: func(c *cli.Context) error {
			client, output, err := clientFrom(c, "gc")
			if err != nil {
				return err
			}
			res, err := client.gc(c.Context, c.Bool("dry-run"))
			if err != nil {
				return err
			}
			return printGC(m.Stdout, res, output)
		},
	}
}

func (a apiClient) gc(ctx context.Context, dryRun bool) (api.GCResponse, error) {
	var res api.GCResponse
	err := a.do(ctx, http.MethodPost, "gc", api.GCRequest{DryRun: dryRun}, &res)
	return res, err
}

func printGC(w io.Writer, res api.GCResponse, output string) error {
	if output == outputJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "dry run\t%t\n", res.DryRun)
	fmt.Fprintf(tw, "scanned\t%d\n", res.Scanned)
	fmt.Fprintf(tw, "deleted\t%d\n", res.Deleted)
	fmt.Fprintf(tw, "bytes freed\t%s (%d bytes)\n", humanBytes(res.BytesFreed), res.BytesFreed)
	d := time.Duration(res.DurationSeconds * float64(time.Second))
	if d >= time.Second {
		d = d.Round(time.Millisecond)
	} else {
		d = d.Round(time.Microsecond)
	}
	fmt.Fprintf(tw, "duration\t%s\n", d)
	return tw.Flush()
}

// humanBytes formats n in binary units (KiB, MiB, ...).
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
