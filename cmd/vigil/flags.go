package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// errUsage means a flag error that the flag package has already reported.
var errUsage = errors.New("usage")

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("vigil "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses the flags of a command that takes no other arguments, and
// refuses any argument left over: the flag package stops at the first
// argument that is not a flag, so the flags after it (vigil score s.csv
// --model M) would otherwise be silently ignored.
func parse(fs *flag.FlagSet, args []string) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError(fs, "unexpected argument %q: %s takes only the flags below", fs.Arg(0), fs.Name())
	}
	return nil
}

// parseOperands parses the flags of a command that also takes operands
// (vigil models list --all, vigil devices add NAME --key K), wherever the
// flags stand among them, and returns the operands in order. An argument
// "--" ends the flags: every argument after it is an operand.
func parseOperands(fs *flag.FlagSet, args []string) ([]string, error) {
	var operands []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return operands, nil
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(operands, rest...), nil
		}
		operands, args = append(operands, rest[0]), rest[1:]
	}
}

// parseFlags parses flags up to the first argument that is not one. The
// flag package has already reported an error, with the usage. A command
// with a --log-level flag has its value checked here, before the command
// does anything, and refused as the flag package refuses a bad value.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if f := fs.Lookup("log-level"); f != nil {
		if _, err := parseLevel(f.Value.String()); err != nil {
			return usageError(fs, "invalid value %q for flag -log-level: %v", f.Value.String(), err)
		}
	}
	return nil
}

// usageError reports a misuse of a command the way the flag package
// reports a bad flag, with the command's usage after it, and returns
// errUsage.
func usageError(fs *flag.FlagSet, format string, args ...any) error {
	fmt.Fprintf(fs.Output(), format+"\n", args...)
	fs.Usage()
	return errUsage
}

// errLogLevel says which log levels there are.
var errLogLevel = errors.New("want debug, info, warn or error")

// parseLevel reads a log level: debug, info, warn or error, in any case
// (slog's spelling, which also takes an offset, as in warn+2). Any other
// word is refused with errLogLevel.
func parseLevel(level string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return slog.LevelInfo, errLogLevel
	}
	return l, nil
}

// newLogger returns a text logger writing to w at level, as parseLevel
// reads it. parseFlags has refused an unknown level given with a command's
// --log-level; should one reach newLogger all the same, the logger logs at
// info and says so first, rather than quietly.
func newLogger(w io.Writer, level string) *slog.Logger {
	l, err := parseLevel(level)
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l}))
	if err != nil {
		log.Warn(fmt.Sprintf("unknown log level %q (%v): logging at info", level, err))
	}
	return log
}

// envOr returns the environment variable's value, or def when it is unset.
func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

// commaList splits a comma-separated flag value into its non-empty,
// trimmed items.
func commaList(v string) []string {
	var out []string
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
