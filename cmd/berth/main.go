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
	"strings"
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
			m.projectCommand(),
			m.memberCommand(),
			m.userCommand(),
			m.robotCommand(),
			m.quotaCommand(),
			m.immutableCommand(),
			m.retentionCommand(),
			m.auditCommand(),
			m.tokenKeyCommand(),
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
	return app.RunContext(ctx, interspersed(app.Commands, args))
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

// interspersed moves the flags of a subcommand's invocation before its
// arguments, so that `berth endpoint add eu --url URL` works: urfave/cli
// (v2) stops reading flags at the first argument. A flag that takes a
// value takes the next word unless it has "=VALUE"; "--" ends the flags.
func interspersed(cmds []*cli.Command, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	rest := args[1:]
	var cmd *cli.Command
	// Walk the command path: berth endpoint add ...
	for len(rest) > 0 {
		var next *cli.Command
		for _, c := range cmds {
			if c.HasName(rest[0]) {
				next = c
			}
		}
		if next == nil {
			break
		}
		cmd, cmds = next, next.Subcommands
		out = append(out, rest[0])
		rest = rest[1:]
	}
	if cmd == nil || len(cmd.Subcommands) > 0 || cmd.Name == "serve" {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	var flags, positional []string
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			positional = append(positional, rest[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if takesValue[name] && i+1 < len(rest) {
			flags = append(flags, rest[i+1])
			i++
		}
	}
	out = append(out, flags...)
	if len(positional) > 0 {
		out = append(out, "--")
		out = append(out, positional...)
	}
	return out
}
