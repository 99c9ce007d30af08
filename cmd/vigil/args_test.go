package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/store"
)

// nabFile is a short NAB series the command tests read.
const nabFile = "../../testdata/nab/data/realAWSCloudwatch/ec2_cpu_utilization_825cc2.csv"

// TestLeftoverArgumentsRefused: an argument that is neither a flag nor an
// operand the command takes is refused as a usage error that names it and
// shows the usage, rather than ending the flags and leaving the flags after
// it silently unread (score would then read standard input, and train would
// register a model without them).
func TestLeftoverArgumentsRefused(t *testing.T) {
	noServer := "http://127.0.0.1:1" // nothing listens: a command that got this far would fail differently
	for _, tc := range []struct {
		args  []string
		extra string
	}{
		{[]string{"score", "--model", "ewma_z", "s.csv"}, "s.csv"},
		{[]string{"score", "--in", nabFile, "out.csv", "--model", "ewma_z"}, "out.csv"},
		{[]string{"features", "--in", nabFile, "more.csv", "--window", "8"}, "more.csv"},
		{[]string{"train", "--server", noServer, "--csv", nabFile, "--name", "default", "extra"}, "extra"},
		{[]string{"eval", "nab", "--data", t.TempDir(), "--model", "ewma_z", "extra"}, "extra"},
		{[]string{"models", "--server", noServer, "list", "extra"}, "extra"},
		{[]string{"devices", "--server", noServer, "list", "extra"}, "extra"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr)
		want := fmt.Sprintf("unexpected argument %q", tc.extra)
		if code != 2 || !strings.Contains(stderr.String(), want) || !strings.Contains(stderr.String(), "Usage of vigil") {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %s with the usage", tc.args, code, stderr.String(), want)
		}
	}
}

// TestFlagsAfterOperands: the commands that take operands read the flags
// that follow them, as the README shows: models list --all, devices add
// NAME --key K, query SQL --format json.
func TestFlagsAfterOperands(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	url := "http://" + srv.HTTPAddr()
	c := &api.Client{BaseURL: url}
	for _, z := range []int{5, 6} {
		spec := json.RawMessage(fmt.Sprintf(`{"kind":"ewma_z","params":{"z":%d}}`, z))
		if _, err := c.PutModel(ctx, store.Model{Name: store.DefaultModel, Spec: spec, From: time.Unix(0, 0), To: time.Unix(60, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	versions := func(args ...string) int {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run(ctx, append([]string{"models"}, args...), &stdout, &stderr); code != 0 {
			t.Errorf("models %v: exit %d: %s", args, code, stderr.String())
			return -1
		}
		return strings.Count(stdout.String(), "\n"+store.DefaultModel+" ")
	}
	if n := versions("--server", url, "list"); n != 1 {
		t.Fatalf("models list: %d versions, want the active one", n)
	}
	for _, args := range [][]string{{"--server", url, "list", "--all"}, {"list", "--server", url, "--all"}} {
		if n := versions(args...); n != 2 {
			t.Errorf("models %v: %d versions, want both", args, n)
		}
	}

	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"devices", "--server", url, "add", "press-9", "--key", "press-key-9"}, &stdout, &stderr); code != 0 {
		t.Errorf("devices add NAME --key K: exit %d: %s", code, stderr.String())
	} else if !strings.Contains(stdout.String(), "key: press-key-9") {
		t.Errorf("devices add NAME --key K did not use the key:\n%s", stdout.String())
	}

	stdout.Reset()
	if code := run(ctx, []string{"query", "--server", url, "SELECT 42 AS answer", "--format", "json"}, &stdout, &stderr); code != 0 {
		t.Errorf("query SQL --format json: exit %d: %s", code, stderr.String())
	} else if !json.Valid(stdout.Bytes()) {
		t.Errorf("query SQL --format json printed no JSON:\n%s", stdout.String())
	}
}

// TestTrainCSVRefusesHistoryFlags: the flags that choose stored history do
// not apply to a CSV, which is the whole series; train --csv refuses them,
// naming the flag, and registers nothing; training on stored history
// refuses --name, which only a CSV's model takes.
func TestTrainCSVRefusesHistoryFlags(t *testing.T) {
	ctx := context.Background()
	srv := startServer(t)
	url := "http://" + srv.HTTPAddr()
	for _, extra := range [][]string{
		{"--from", "2014-02-14T00:00:00Z"},
		{"--to", "2014-02-20T00:00:00Z"},
		{"--device", "lathe-2"},
		{"--metric", "temperature"},
		{"--default"},
	} {
		args := append([]string{"train", "--server", url, "--model", "ewma_z", "--csv", nabFile, "--name", "default"}, extra...)
		var stdout, stderr bytes.Buffer
		if code := run(ctx, args, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), extra[0]) {
			t.Errorf("train --csv %v: exit %d, %q; want a refusal naming %s", extra, code, stderr.String(), extra[0])
		}
	}
	// And the other way round: --name names a CSV's model only.
	var stdout, stderr bytes.Buffer
	if code := run(ctx, []string{"train", "--server", url, "--model", "ewma_z", "--name", "default"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "--name") {
		t.Errorf("train --name on stored history: exit %d, %q; want a refusal naming --name", code, stderr.String())
	}
	if ms, err := srv.Store().Models(ctx, true); err != nil || len(ms) != 0 {
		t.Fatalf("registry %+v %v, want nothing registered", ms, err)
	}
}

// TestSpecRefusesUnknownFields: a misspelt field of a model spec, at the
// top level or in the params, is an error that names it, not a model run
// with its defaults.
func TestSpecRefusesUnknownFields(t *testing.T) {
	for spec, field := range map[string]string{
		`{"kind":"ewma_z","param":{"z":3}}`:        "param",
		`{"kind":"ewma_z","params":{"alpah":0.5}}`: "alpah",
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{"score", "--model", spec, "--in", nabFile}, &stdout, &stderr)
		if want := fmt.Sprintf("unknown field %q", field); code != 1 || !strings.Contains(stderr.String(), want) {
			t.Errorf("score --model %s: exit %d, %q; want an error containing %s", spec, code, stderr.String(), want)
		}
	}
}

// TestEvalNABLabelsBesideData: without --labels, eval nab reads
// DATA/../labels/combined_windows.json, whatever DATA's folder is called.
func TestEvalNABLabelsBesideData(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile(nabFile)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "mydata")
	for path, text := range map[string][]byte{
		filepath.Join(data, "cloud", "cpu.csv"):               src,
		filepath.Join(dir, "labels", "combined_windows.json"): []byte(`{"cloud/cpu.csv": [["2014-04-15 07:24:00.000000", "2014-04-16 11:54:00.000000"]]}`),
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, text, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"eval", "nab", "--data", data + "/", "--model", "ewma_z", "--json"}, &stdout, &stderr); code != 0 {
		t.Fatalf("eval nab --data %s/: exit %d: %s", data, code, stderr.String())
	}
	var res []struct{ Files []json.RawMessage }
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil || len(res) == 0 || len(res[0].Files) != 1 {
		t.Fatalf("results %s, %v; want one file scored", stdout.String(), err)
	}
}
