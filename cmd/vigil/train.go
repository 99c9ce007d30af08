package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/models"
	"github.com/vigil-iot/vigil/store"
)

// progress draws a bar on a terminal and nothing elsewhere.
type progress struct {
	w     io.Writer
	on    bool
	total int
}

func newProgress(w io.Writer, total int) *progress {
	on := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			on = true
		}
	}
	return &progress{w: w, on: on, total: total}
}

func (p *progress) step(done int, what string) {
	if !p.on {
		return
	}
	const width = 30
	n := width * done / max(p.total, 1)
	fmt.Fprintf(p.w, "\r[%s%s] %d/%d %-40.40s", strings.Repeat("#", n), strings.Repeat(" ", width-n), done, p.total, what)
	if done == p.total {
		fmt.Fprintln(p.w)
	}
}

func sqlString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

type seriesRef struct{ device, metric string }

func runTrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("train", stderr)
	url, token := serverFlag(fs)
	model := fs.String("model", "", specHelp)
	device := fs.String("device", "", "train only this device's series (with --multivariate: only this device; required with --csv)")
	metric := fs.String("metric", "", "train only this metric's series")
	from := fs.String("from", "", "training window start, RFC 3339 (default: all history)")
	to := fs.String("to", "", "training window end, RFC 3339 (default: now)")
	asDefault := fs.Bool("default", false, "register one fleet-wide default model, judged on every selected series, instead of one per series")
	csvPath := fs.String("csv", "", "train on a CSV instead of stored history: timestamp,value (needs --name), or with --multivariate timestamp,METRIC,METRIC,... (needs --device)")
	name := fs.String("name", "", `with --csv: the registry name, "default" or DEVICE/METRIC`)
	multi := fs.Bool("multivariate", false, "fit one device-level model per device, registered as DEVICE/*, that scores the device's metrics together (Mahalanobis distance): "+
		"it flags combinations each normal on its own but not together; --model may then give its params, e.g. '{\"kind\":\"mahalanobis\",\"params\":{\"tail\":1e-4}}'")
	metrics := fs.String("metrics", "", "with --multivariate: the metrics to score together, comma-separated (default: every metric of the device, or every CSV column)")
	if err := parse(fs, args); err != nil {
		return err
	}
	c := &api.Client{BaseURL: *url, Token: *token}
	if *multi {
		if *metric != "" || *asDefault || *name != "" {
			return errors.New("--multivariate trains DEVICE/* models: use --metrics (not --metric), --device (not --name), and no --default")
		}
		var want []string
		if *metrics != "" {
			want = strings.Split(*metrics, ",")
		}
		return trainMultivariate(ctx, c, stdout, stderr, *model, *device, want, *csvPath, *from, *to)
	}
	if *metrics != "" {
		return errors.New("--metrics needs --multivariate; for one series use --metric")
	}
	spec, err := parseSpec(*model)
	if err != nil {
		return err
	}
	specJSON, _ := json.Marshal(spec)
	threshold := 0.5

	if *csvPath != "" {
		for _, f := range []string{"from", "to", "device", "metric"} {
			if flagSet(fs, f) {
				return fmt.Errorf("--%s chooses stored history; with --csv the CSV is the whole series (cut the file to train on part of it) and --name names the model", f)
			}
		}
		if flagSet(fs, "default") {
			return errors.New("--default trains on stored history; to register a model trained on the CSV as the default, give --name default")
		}
		if *name == "" {
			return errors.New("--csv needs --name (default or DEVICE/METRIC)")
		}
		ts, xs, err := readCSV(*csvPath)
		if err != nil {
			return err
		}
		m, err := models.Fit(spec, ts, xs, threshold)
		if err != nil {
			return err
		}
		return register(ctx, c, stdout, *name, specJSON, ts, m, fitSummary(m))
	}

	if *name != "" {
		return errors.New("--name names the model trained on a --csv; on stored history vigil registers one version per series (DEVICE/METRIC), or with --default the fleet-wide default")
	}
	where, toT, err := historyWindow(*from, *to, *device)
	if err != nil {
		return err
	}
	if *metric != "" {
		where = append(where, "metric = "+sqlString(*metric))
	}
	cond := strings.Join(where, " AND ")
	series, err := distinct(ctx, c, "device, metric", cond, "--device, --metric, --from and --to")
	if err != nil {
		return err
	}
	bar := newProgress(stderr, len(series))
	var all []models.FitMetrics
	var first time.Time
	done := 0
	err = histories(ctx, c, cond, func(ref seriesRef, ts []time.Time, xs []float64) error {
		m, err := models.Fit(spec, ts, xs, threshold)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", ref.device, ref.metric, err)
		}
		done++
		bar.step(done, ref.device+"/"+ref.metric)
		if *asDefault {
			all = append(all, m)
			if first.IsZero() || ts[0].Before(first) {
				first = ts[0]
			}
			return nil
		}
		return register(ctx, c, stdout, ref.device+"/"+ref.metric, specJSON, ts, m, fitSummary(m))
	})
	if err != nil {
		return err
	}
	if *asDefault {
		agg := models.FitMetrics{Threshold: threshold}
		alarms := 0.0
		for _, m := range all {
			agg.Readings += m.Readings
			agg.WarmUp += m.WarmUp
			agg.P50, agg.P99, agg.Max = max(agg.P50, m.P50), max(agg.P99, m.P99), max(agg.Max, m.Max)
			alarms += m.AlarmRate * float64(m.Readings-m.WarmUp)
		}
		if scored := agg.Readings - agg.WarmUp; scored > 0 {
			agg.AlarmRate = alarms / float64(scored)
		}
		return register(ctx, c, stdout, store.DefaultModel, specJSON, []time.Time{first, toT}, agg, fitSummary(agg))
	}
	return nil
}

// historyWindow turns --from, --to and --device into conditions on the
// readings view, and returns the window's end.
func historyWindow(from, to, device string) ([]string, time.Time, error) {
	var fromT time.Time
	var err error
	if from != "" {
		if fromT, err = time.Parse(time.RFC3339, from); err != nil {
			return nil, time.Time{}, fmt.Errorf("--from: %w", err)
		}
	}
	toT := time.Now().UTC()
	if to != "" {
		if toT, err = time.Parse(time.RFC3339, to); err != nil {
			return nil, time.Time{}, fmt.Errorf("--to: %w", err)
		}
	}
	where := []string{"ts < " + sqlString(toT.Format(time.RFC3339Nano)) + "::TIMESTAMPTZ"}
	if !fromT.IsZero() {
		where = append(where, "ts >= "+sqlString(fromT.Format(time.RFC3339Nano))+"::TIMESTAMPTZ")
	}
	if device != "" {
		where = append(where, "device = "+sqlString(device))
	}
	return where, toT, nil
}

// distinct lists the distinct values of cols among the readings that match
// cond, in order; none is an error that names the flags to check.
func distinct(ctx context.Context, c *api.Client, cols, cond, flags string) ([][]any, error) {
	res, err := c.Query(ctx, "SELECT DISTINCT "+cols+" FROM readings WHERE "+cond+" ORDER BY ALL", api.MaxRowLimit)
	if err != nil {
		return nil, err
	}
	if len(res.Rows) == 0 {
		return nil, fmt.Errorf("no stored readings match; check %s", flags)
	}
	if res.Truncated {
		return nil, fmt.Errorf("more than %d %s match: narrow them with %s", api.MaxRowLimit, cols, flags)
	}
	return res.Rows, nil
}

// histories streams the readings that match cond to fn one series at a
// time, in (device, metric) order and each in time order, from a single
// query answered as Arrow batches: one pass over the stored readings
// whatever the number of series, and no row limit.
func histories(ctx context.Context, c *api.Client, cond string, fn func(ref seriesRef, ts []time.Time, xs []float64) error) error {
	q := "SELECT device, metric, epoch_us(ts) AS us, value FROM readings WHERE " + cond + " ORDER BY device, metric, ts"
	var cur seriesRef
	var ts []time.Time
	var xs []float64
	flush := func() error {
		if len(ts) == 0 {
			return nil
		}
		err := fn(cur, ts, xs)
		ts, xs = nil, nil // fn may keep them
		return err
	}
	err := c.QueryArrow(ctx, q, func(rec arrow.RecordBatch) error {
		dev, ok1 := rec.Column(0).(interface{ Value(int) string })
		met, ok2 := rec.Column(1).(interface{ Value(int) string })
		us, ok3 := rec.Column(2).(*array.Int64)
		val, ok4 := rec.Column(3).(*array.Float64)
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return fmt.Errorf("history: unexpected column types %s", rec.Schema())
		}
		for i := range int(rec.NumRows()) {
			if ref := (seriesRef{dev.Value(i), met.Value(i)}); ref != cur {
				if err := flush(); err != nil {
					return err
				}
				cur = ref
			}
			ts = append(ts, time.UnixMicro(us.Value(i)).UTC())
			xs = append(xs, val.Value(i))
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

func readCSV(path string) ([]time.Time, []float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	ts, xs, err := models.ReadSeriesCSV(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return ts, xs, nil
}

// register stores a trained version, trained on ts, with its fit metrics m,
// and prints its name, version and summary.
func register(ctx context.Context, c *api.Client, stdout io.Writer, name string, spec []byte, ts []time.Time, m any, summary string) error {
	metrics, _ := json.Marshal(m)
	got, err := c.PutModel(ctx, store.Model{Name: name, Spec: spec, From: ts[0], To: ts[len(ts)-1], Metrics: metrics})
	if err != nil {
		return fmt.Errorf("register %s: %w", name, err)
	}
	fmt.Fprintf(stdout, "%s version %d: %s\n", got.Name, got.Version, summary)
	return nil
}

func fitSummary(m models.FitMetrics) string {
	return fmt.Sprintf("%d readings, alarm rate %.4f, score p99 %.3f", m.Readings, m.AlarmRate, m.P99)
}

func runModels(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("models", stderr)
	url, token := serverFlag(fs)
	all := fs.Bool("all", false, "with list: every version, not only the active ones")
	// Flags may also follow the verb: vigil models list --all.
	rest, err := parseOperands(fs, args)
	if err != nil {
		return err
	}
	c := &api.Client{BaseURL: *url, Token: *token}
	if len(rest) == 0 {
		return errors.New("say what to do: list [--all] | activate NAME VERSION")
	}
	switch rest[0] {
	case "list":
		if len(rest) > 1 {
			return usageError(fs, "unexpected argument %q: usage: vigil models list [--all]", rest[1])
		}
		ms, err := c.Models(ctx, *all)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tVERSION\tACTIVE\tSPEC\tTRAINED FROM\tTO\tMETRICS")
		for _, m := range ms {
			fmt.Fprintf(tw, "%s\t%d\t%v\t%s\t%s\t%s\t%s\n", m.Name, m.Version, m.Active, m.Spec,
				m.From.Format(time.RFC3339), m.To.Format(time.RFC3339), m.Metrics)
		}
		return tw.Flush()
	case "activate":
		if len(rest) != 3 {
			return errors.New("activate needs NAME VERSION")
		}
		v, err := strconv.Atoi(rest[2])
		if err != nil {
			return fmt.Errorf("version %q is not a number", rest[2])
		}
		if err := c.ActivateModel(ctx, rest[1], v); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s version %d is active\n", rest[1], v)
		return nil
	}
	return fmt.Errorf("unknown models command %q: use list or activate", rest[0])
}
