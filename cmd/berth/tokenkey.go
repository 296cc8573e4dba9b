package main

import (
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/berth-registry/berth/policy"
)

// tokenKeyCommand lists and rotates the token service's signing keys
// (admin): the keys themselves never leave the cluster.
func (m *Main) tokenKeyCommand() *cli.Command {
	return &cli.Command{
		Name:  "token-key",
		Usage: "the token service's signing keys (admin): list them, or rotate to a new one",
		Subcommands: []*cli.Command{
			{
				Name:  "list",
				Usage: "the keys the cluster keeps, newest first; the current one signs new tokens",
				Flags: clientFlags(),
				Action: m.action(func(c *call) error {
					return show(c, "system/token-keys", func(w io.Writer, keys []policy.SigningKey) error {
						tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
						fmt.Fprintln(tw, "KID\tCREATED\tCURRENT")
						for _, k := range keys {
							fmt.Fprintf(tw, "%s\t%s\t%t\n", k.Kid, when(k.Created), k.Current)
						}
						return tw.Flush()
					})
				}),
			},
			{
				Name: "rotate",
				Usage: "make a new key current; tokens signed with the previous ones stay valid until they expire " +
					"(the three newest keys are kept)",
				Flags: clientFlags(),
				Action: m.action(func(c *call) error {
					var k policy.SigningKey
					if err := c.do(http.MethodPost, "system/token-keys/rotate", nil, &k); err != nil {
						return err
					}
					return c.print(k, func(w io.Writer) error {
						_, err := fmt.Fprintf(w, "new signing key %s\n", k.Kid)
						return err
					})
				}),
			},
		},
	}
}
