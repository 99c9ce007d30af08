package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/vigil-iot/vigil/models"
	"github.com/vigil-iot/vigil/models/nab"
)

// parseSpec reads a series model spec: a kind name ("ewma_z"), a JSON
// document ({"kind": "...", "params": {...}}) or @FILE holding that JSON.
func parseSpec(s string) (models.Spec, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return models.DefaultSpec(), nil
	}
	spec, err := readSpec(s)
	if err != nil {
		return models.Spec{}, err
	}
	if _, err := models.New(spec); err != nil {
		return models.Spec{}, fmt.Errorf("model spec: %w", err)
	}
	return spec, nil
}

// readSpec reads a spec as parseSpec does, without building it.
func readSpec(s string) (models.Spec, error) {
	if strings.HasPrefix(s, "@") {
		b, err := os.ReadFile(s[1:])
		if err != nil {
			return models.Spec{}, fmt.Errorf("model spec: %w", err)
		}
		s = strings.TrimSpace(string(b))
	}
	if strings.HasPrefix(s, "{") {
		return models.ParseSpec([]byte(s))
	}
	return models.Spec{Kind: s}, nil
}

const specHelp = `detector: a kind (e.g. ewma_z), JSON {"kind":..., "params":{...}}, or @FILE with that JSON (default: the ensemble)`

func runScore(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("score", stderr)
	model := fs.String("model", "", specHelp)
	in := fs.String("in", "-", "input CSV with a header and timestamp,value rows (- for stdin)")
	out := fs.String("out", "-", "output CSV timestamp,value,anomaly_score (- for stdout); written whole or not at all")
	if err := parse(fs, args); err != nil {
		return err
	}
	spec, err := parseSpec(*model)
	if err != nil {
		return err
	}
	r := io.Reader(os.Stdin)
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	// The output file appears only once every row is scored: a failed run
	// leaves an earlier one as it was, and --out may name the input.
	return writeOut(stdoutDash(*out), stdout, func(w io.Writer) error { return models.ScoreCSV(spec, r, w) })
}

const evalUsage = "usage: vigil eval nab --data DIR --labels FILE [--model SPEC] [--profiles FILE] [--json]\n" +
	"       vigil eval history --labels FILE [--server URL] [--model SPEC] [--profiles FILE] [--json]"

func runEval(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(evalUsage)
	}
	switch args[0] {
	case "nab":
		return runEvalNAB(args[1:], stdout, stderr)
	case "history":
		return runEvalHistory(ctx, args[1:], stdout, stderr)
	}
	return errors.New(evalUsage)
}

// evalFlags are the flags every eval command takes.
type evalFlags struct {
	labels, profiles, model *string
	asJSON                  *bool
}

func newEvalFlags(fs *flag.FlagSet, labelsHelp string) evalFlags {
	return evalFlags{
		labels:   fs.String("labels", "", labelsHelp),
		profiles: fs.String("profiles", "", "scoring profiles JSON (default: NAB's three profiles)"),
		model:    fs.String("model", "", specHelp),
		asJSON:   fs.Bool("json", false, "print the results as JSON"),
	}
}

func runEvalNAB(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval nab", stderr)
	data := fs.String("data", envOr("VIGIL_NAB_DIR", "testdata/nab")+"/data", "folder of <category>/<file>.csv series")
	ef := newEvalFlags(fs, "anomaly windows JSON (default: DATA/../labels/combined_windows.json)")
	if err := parse(fs, args); err != nil {
		return err
	}
	spec, err := parseSpec(*ef.model)
	if err != nil {
		return err
	}
	if *ef.labels == "" {
		// DATA/../labels, by path elements: Join cleans "x/data/.." to "x"
		// and "." to "..", where filepath.Dir(".") would stay at ".".
		*ef.labels = filepath.Join(*data, "..", "labels", "combined_windows.json")
	}
	series, err := nab.LoadCorpus(*data)
	if err != nil {
		return err
	}
	windows, err := nab.LoadWindows(*ef.labels)
	if err != nil {
		return err
	}
	return evaluate(stdout, "NAB", &models.Corpus{Series: series, Windows: windows}, spec, ef)
}

// evaluate scores spec on c with the profiles of ef (NAB's three when none
// are named) and prints the results, as JSON or as tables headed by title.
func evaluate(stdout io.Writer, title string, c *models.Corpus, spec models.Spec, ef evalFlags) error {
	c.Profiles = nab.DefaultProfiles()
	if *ef.profiles != "" {
		var err error
		if c.Profiles, err = nab.LoadProfiles(*ef.profiles); err != nil {
			return err
		}
	}
	res, err := c.Evaluate(spec)
	if err != nil {
		return err
	}
	if *ef.asJSON {
		return json.NewEncoder(stdout).Encode(res)
	}
	specJSON, _ := json.Marshal(spec)
	fmt.Fprintf(stdout, "%s: %d files, model %s\n\n", title, len(c.Series), specJSON)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROFILE\tSCORE\tTHRESHOLD\tTP\tFP\tFN")
	for _, r := range res {
		fmt.Fprintf(tw, "%s\t%.2f\t%.4f\t%d\t%d\t%d\n", r.Profile, r.Normalized, r.Threshold, r.TP, r.FP, r.FN)
	}
	tw.Flush()
	fmt.Fprintf(stdout, "\nper file (%s profile):\n", res[0].Profile)
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FILE\tRAW\tTP\tFP\tFN\tWINDOWS")
	for _, f := range res[0].Files {
		fmt.Fprintf(tw, "%s\t%.3f\t%d\t%d\t%d\t%d\n", f.Name, f.Raw, f.TP, f.FP, f.FN, f.Windows)
	}
	return tw.Flush()
}
