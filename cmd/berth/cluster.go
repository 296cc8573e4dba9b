package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/api"
	"github.com/berth-registry/berth/cluster"
)

func (m *Main) clusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "see and change the cluster a node belongs to",
		Subcommands: []*cli.Command{
			{
				Name:  "status",
				Usage: "the leader, every member's state, Raft suffrage, applied index, lag and blob repair backlog",
				Flags: append(clientFlags(),
					&cli.BoolFlag{Name: "hash", Usage: "also ask every member for the hash of its applied state (reads all of it)"},
				),
				Action: func(c *cli.Context) error {
					client, output, err := clientFrom(c, "cluster status")
					if err != nil {
						return err
					}
					path := "cluster"
					if c.Bool("hash") {
						path += "?hash=true"
					}
					var st cluster.ClusterStatus
					if err := client.do(c.Context, http.MethodGet, path, nil, &st); err != nil {
						return err
					}
					return printClusterStatus(m.Stdout, st, output)
				},
			},
			{
				Name:  "leave",
				Usage: "take the node --server names out of the cluster for good; it then shuts down",
				Description: "The node hands leadership over if it leads, says goodbye by gossip, and the\n" +
					"leader removes it from the Raft configuration. It is refused when the voters\n" +
					"left would not form a quorum. Started again on its data directory, the node\n" +
					"rejoins.",
				Flags: clientFlags(),
				Action: func(c *cli.Context) error {
					client, output, err := clientFrom(c, "cluster leave")
					if err != nil {
						return err
					}
					var res api.LeaveResponse
					if err := client.do(c.Context, http.MethodPost, "cluster/leave", nil, &res); err != nil {
						return err
					}
					if output == outputJSON {
						return writeJSONOut(m.Stdout, res)
					}
					_, err = fmt.Fprintf(m.Stdout, "node %s left the cluster and is shutting down\n", res.NodeID)
					return err
				},
			},
		},
	}
}

func writeJSONOut(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printClusterStatus(w io.Writer, st cluster.ClusterStatus, output string) error {
	if output == outputJSON {
		return writeJSONOut(w, st)
	}
	leader := st.Leader.ID
	if leader == "" {
		leader = "(none: no quorum, or an election is running)"
	}
	fmt.Fprintf(w, "node      %s (raft %s, term %d, applied %d, commit %d)\n", st.NodeID, st.Raft.State, st.Raft.Term, st.Raft.AppliedIndex, st.Raft.CommitIndex)
	fmt.Fprintf(w, "leader    %s\n\n", leader)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	hash := false
	for _, m := range st.Members {
		hash = hash || m.StateHash != ""
	}
	head := "MEMBER\tSTATE\tRAFT\tSUFFRAGE\tAPPLIED\tLAG\tREPAIR BACKLOG\tHTTP\tVERSION"
	if hash {
		head += "\tSTATE HASH"
	}
	fmt.Fprintln(tw, head+"\tERROR")
	for _, m := range st.Members {
		id := m.ID
		if id == st.Leader.ID {
			id += " *"
		}
		applied, lag, backlog := "-", "-", "-"
		if m.Error == "" {
			applied, lag, backlog = strconv.FormatUint(m.AppliedIndex, 10), strconv.FormatUint(m.Lag, 10), strconv.Itoa(m.BlobRepairBacklog)
		}
		line := fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", id, m.State, dash(m.RaftState), m.Suffrage, applied, lag, backlog, dash(m.HTTPAddr), dash(m.Version))
		if hash {
			h := m.StateHash
			if len(h) > 12 {
				h = h[:12]
			}
			line += "\t" + dash(h)
		}
		fmt.Fprintln(tw, line+"\t"+m.Error)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
