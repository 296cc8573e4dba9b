// Command berth is the berth container registry: `berth serve` runs a node,
// the other commands are clients of a running node's management API.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	m := NewMain()
	err := m.Run(ctx, os.Args)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "berth:", err)
		os.Exit(1)
	}
}

// Main is the berth program, with its environment made explicit so that
// tests can run it in-process.
type Main struct {
	Stdin  io.Reader // nil: os.Stdin
	Stdout io.Writer
	Stderr io.Writer

	// OnReady, when set, is called by `berth serve` once the node serves
	// HTTP, with the address it listens on (useful with addr ":0").
	OnReady func(httpAddr net.Addr)
}

// NewMain returns a Main bound to the process's standard streams.
func NewMain() *Main {
	return &Main{Stdout: os.Stdout, Stderr: os.Stderr}
}

// Run runs the command line args (args[0] is the program name) until it
// finishes or ctx ends.
func (m *Main) Run(ctx context.Context, args []string) error {
	app := &cli.App{
		Name:                 "berth",
		Usage:                "a replicated container registry (OCI Distribution API)",
		Version:              version,
		Writer:               m.Stdout,
		ErrWriter:            m.Stderr,
		EnableBashCompletion: false,
		HideVersion:          true,
		// Errors are returned to main, which prints them once; cli must not
		// exit the process (tests run it in-process).
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError:   usageError,
		Commands: append(append([]*cli.Command{
			m.serveCommand(),
			m.clusterCommand(),
			m.gcCommand(),
			m.endpointCommand(),
			m.policyCommand(),
			m.replicateCommand(),
			m.promoteCommand(),
		}, m.loginCommands()...), m.versionCommand()),
	}
	for _, c := range app.Commands {
		c.OnUsageError = usageError
		c.HideHelpCommand = true
		for _, sub := range c.Subcommands {
			sub.OnUsageError = usageError
			sub.HideHelpCommand = true
		}
	}
	return app.RunContext(ctx, args)
}

// usageError returns a bad flag or environment value as the error, without
// cli's full help text around it (`berth <command> --help` shows that).
func usageError(_ *cli.Context, err error, _ bool) error {
	return err
}

func (m *Main) versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the version of berth and of Go it was built with",
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return errors.New("version takes no arguments")
			}
			_, err := fmt.Fprintf(m.Stdout, "berth %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

// isTerminal reports whether w is a terminal; only an *os.File can be one.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
