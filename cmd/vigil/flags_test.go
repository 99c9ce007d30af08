package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLogLevelRefused: an unknown --log-level is a usage error that names
// the levels there are, before the command starts anything; it used to
// mean info, quietly.
func TestLogLevelRefused(t *testing.T) {
	for _, args := range [][]string{
		{"serve", "--data", t.TempDir(), "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "verbose"},
		{"demo", "--duration", "1s", "--log-level=verbose"},
		{"serve", "--data", t.TempDir(), "--mqtt", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level="},
	} {
		var stderr bytes.Buffer
		// Were the level taken, the command would run: stop it, and fail.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		code := run(ctx, args, io.Discard, &stderr)
		cancel()
		if code != 2 || !strings.Contains(stderr.String(), "for flag -log-level: want debug, info, warn or error") || !strings.Contains(stderr.String(), "Usage of vigil") {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 naming the accepted levels, with the usage", args, code, stderr.String())
		}
	}
}

// TestLogLevels: the four levels, in any case, are read as slog reads
// them; anything else is refused.
func TestLogLevels(t *testing.T) {
	for level, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "WARN": slog.LevelWarn, "error": slog.LevelError} {
		if got, err := parseLevel(level); err != nil || got != want {
			t.Errorf("parseLevel(%q) = %v, %v; want %v", level, got, err, want)
		}
	}
	for _, level := range []string{"verbose", "", "warning", "trace"} {
		if _, err := parseLevel(level); !errors.Is(err, errLogLevel) {
			t.Errorf("parseLevel(%q): %v, want %v", level, err, errLogLevel)
		}
	}
}

// TestNewLoggerSaysWhenLevelUnknown: a logger asked for a level there is
// not logs at info and says so, rather than quietly.
func TestNewLoggerSaysWhenLevelUnknown(t *testing.T) {
	var out bytes.Buffer
	log := newLogger(&out, "verbose")
	log.Debug("not shown")
	log.Info("shown")
	if s := out.String(); !strings.Contains(s, `unknown log level \"verbose\"`) || !strings.Contains(s, "logging at info") || strings.Contains(s, "not shown") || !strings.Contains(s, "shown") {
		t.Errorf("logger for level verbose wrote %q; want a warning that it logs at info, then info and above", s)
	}
	out.Reset()
	newLogger(&out, "debug").Debug("shown")
	if !strings.Contains(out.String(), "shown") || strings.Contains(out.String(), "unknown") {
		t.Errorf("logger for level debug wrote %q", out.String())
	}
}

// TestQueryNonFinite: vigil query prints a NaN or an infinity as DuckDB
// spells it, as a table and as JSON; it used to fail with "EOF".
func TestQueryNonFinite(t *testing.T) {
	srv := startServer(t)
	for _, format := range []string{"table", "json"} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{"query", "--server", "http://" + srv.HTTPAddr(), "--format", format, "SELECT 1/0 AS inf, 'nan'::DOUBLE AS nan"}, &stdout, &stderr)
		if code != 0 || !strings.Contains(stdout.String(), "Infinity") || !strings.Contains(stdout.String(), "NaN") {
			t.Errorf("--format %s: exit %d, stdout %q, stderr %q", format, code, stdout.String(), stderr.String())
		}
	}
}
