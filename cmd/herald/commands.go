package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// lookupFunc reads the environment (os.LookupEnv, or a map in tests).
type lookupFunc func(string) (string, bool)

// command is a subcommand of the herald binary. Exit codes: 0 done, 1 it
// failed, 2 it was called wrongly (as for a bad configuration).
type command struct {
	name     string
	synopsis string
	summary  string
	run      func(ctx context.Context, args []string, env lookupFunc, stdout, stderr io.Writer) int
}

// commands are the subcommands; without one, herald serves.
func commands() []command {
	return []command{
		{"config", "herald config [flags]", "print the effective configuration, secrets masked", runConfig},
		{"token", "herald token --sub ID [--merchant M] [--channel C]… [--ttl 1h] [--jwt-secret S] [--jwt-issuer I] [--jwt-audience A]", "mint a client token with HERALD_JWT_SECRET", runToken},
		{"send", "herald send <provider> <file|-> [--url URL] [--secret S] [--merchant M] [--timeout 30s]", "post a webhook the way the provider does, signature included, and print the answer", runSend},
		{"tail", "herald tail <channel> [--since N --epoch E] [--count N] [--ping D] [--url URL] [--token T]", "print a channel's publications as JSON lines, resuming across reconnects", runTail},
		{"healthcheck", "herald healthcheck [--addr ADDR | --url URL] [--timeout 3s]", "exit 0 if the node at HERALD_ADDR is ready (for container health checks)", runHealthcheck},
	}
}

func findCommand(name string) (command, bool) {
	for _, c := range commands() {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

// printUsage is `herald --help`: how to serve, then the subcommands.
func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintln(w, "usage: herald [flags]              run a node (settings: HERALD_* variables or these flags)")
	fmt.Fprintln(w, "       herald <command> [flags]    see herald <command> --help")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nflags:")
	fs.PrintDefaults()
}

func runConfig(_ context.Context, args []string, env lookupFunc, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, env, stderr)
	if err != nil {
		return configError(stderr, err)
	}
	printConfig(stdout, cfg)
	return 0
}

// newFlags returns the flag set of a subcommand, whose --help prints its
// synopsis, what it does and its flags.
func newFlags(name string, stderr io.Writer, about string) *flag.FlagSet {
	c, _ := findCommand(name)
	fs := flag.NewFlagSet("herald "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s\n\n%s\n", c.synopsis, strings.TrimSpace(about))
		fmt.Fprintln(stderr, "\nflags:")
		fs.PrintDefaults()
	}
	return fs
}

// envString is a string flag whose default comes from an environment
// variable, like every setting of the node.
func envString(fs *flag.FlagSet, env lookupFunc, name, variable, def, usage string) *string {
	p := fs.String(name, def, usage+" ("+variable+")")
	// After the definition: --help shows def, never the environment's
	// value, which may be a secret (a token, the JWT secret). An empty
	// variable is an unset one (docker compose's ${VAR:-} passes "").
	if v, ok := env(variable); ok && v != "" {
		*p = v
	}
	return p
}

// parseArgs parses flags wherever they stand among the positional
// arguments (herald send kriptomat file.json --url …), which the flag
// package alone stops at, and checks the count of positional ones.
func parseArgs(fs *flag.FlagSet, args []string, positional int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != positional {
		fs.Usage()
		return nil, fmt.Errorf("want %d argument(s), got %d", positional, len(pos))
	}
	return pos, nil
}

// usageError reports a wrong call: nothing for --help, the message
// otherwise, and the exit code for either.
func usageError(stderr io.Writer, name string, err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintf(stderr, "herald %s: %v\n", name, err)
	return 2
}

// failed reports a command that was called rightly but did not succeed.
func failed(stderr io.Writer, name string, err error) int {
	fmt.Fprintf(stderr, "herald %s: %v\n", name, err)
	return 1
}

// stringList is a repeatable flag (--channel a --channel b).
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
