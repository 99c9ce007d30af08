package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/features"
)

// runFeatures writes the feature table (features.Set, one row per reading)
// of a CSV series or of stored series: the columns notebooks train on,
// computed by the code the live detectors use.
func runFeatures(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("features", stderr)
	url, token := serverFlag(fs)
	def := features.DefaultSetConfig()
	in := fs.String("in", "", "compute the features of this timestamp,value CSV instead of stored history")
	device := fs.String("device", "", "stored history: this device's series")
	metric := fs.String("metric", "", "stored history: only this metric's series")
	from := fs.String("from", "", "stored history from this time on, RFC 3339 (default: all)")
	to := fs.String("to", "", "stored history before this time, RFC 3339 (default: now)")
	out := fs.String("out", "-", "output CSV (- for stdout); written whole or not at all")
	window := fs.Int("window", def.Window, "readings in the rolling window")
	alpha := fs.Float64("alpha", def.Alpha, "weight of the newest reading in the EWMA columns, in (0, 1]")
	season := fs.String("season", "week", "seasonal baseline buckets: day (hour of day), week (hour of week) or weekday (day of week)")
	seasonAlpha := fs.Float64("season-alpha", def.SeasonAlpha, "weight of the newest reading in its seasonal bucket, in (0, 1]")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg := features.SetConfig{Window: *window, Alpha: *alpha, SeasonAlpha: *seasonAlpha}
	switch *season {
	case "day":
		cfg.Season = features.HourOfDay
	case "week":
		cfg.Season = features.HourOfWeek
	case "weekday":
		cfg.Season = features.DayOfWeek
	default:
		return fmt.Errorf("--season %q: want day, week or weekday", *season)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if (*in == "") == (*device == "") {
		return errors.New("give --in FILE.csv, or --device DEVICE [--metric METRIC] for stored history")
	}
	if *in != "" && (flagSet(fs, "metric") || flagSet(fs, "from") || flagSet(fs, "to")) {
		return errors.New("--metric, --from and --to choose stored history; with --in the CSV is the whole series")
	}
	if *in != "" {
		ts, xs, err := readCSV(*in)
		if err != nil {
			return err
		}
		return writeOut(stdoutDash(*out), stdout, func(w io.Writer) error {
			if _, err := io.WriteString(w, featureHeader(false)); err != nil {
				return err
			}
			return writeFeatures(w, cfg, "", ts, xs)
		})
	}
	where, _, err := historyWindow(*from, *to, *device)
	if err != nil {
		return err
	}
	if *metric != "" {
		where = append(where, "metric = "+sqlString(*metric))
	}
	c := &api.Client{BaseURL: *url, Token: *token}
	return writeOut(stdoutDash(*out), stdout, func(w io.Writer) error {
		if _, err := io.WriteString(w, featureHeader(true)); err != nil {
			return err
		}
		n := 0
		err := histories(ctx, c, strings.Join(where, " AND "), func(ref seriesRef, ts []time.Time, xs []float64) error {
			n++
			// Device and metric names hold no comma, quote or line break.
			return writeFeatures(w, cfg, ref.device+","+ref.metric+",", ts, xs)
		})
		if err == nil && n == 0 {
			what := "device " + strconv.Quote(*device)
			if *metric != "" {
				what += " metric " + strconv.Quote(*metric)
			}
			err = fmt.Errorf("no stored readings of %s in the window: %s", what, checkSeriesNames)
		}
		return err
	})
}

// featureHeader is the header row of a feature table; stored series'
// rows begin with their device and metric.
func featureHeader(stored bool) string {
	head := "timestamp,value," + strings.Join(features.SetColumns, ",") + "\n"
	if stored {
		head = "device,metric," + head
	}
	return head
}

// writeFeatures writes one series' feature rows, each beginning with prefix.
func writeFeatures(w io.Writer, cfg features.SetConfig, prefix string, ts []time.Time, xs []float64) error {
	set, err := features.NewSet(cfg)
	if err != nil {
		return err
	}
	var row []byte
	var vals []float64
	for i, x := range xs {
		set.Update(ts[i], x)
		row = append(row[:0], prefix...)
		row = ts[i].UTC().AppendFormat(row, time.RFC3339Nano)
		row = append(row, ',')
		row = strconv.AppendFloat(row, x, 'g', -1, 64)
		vals = set.Values(vals[:0])
		for _, v := range vals {
			row = append(row, ',')
			row = strconv.AppendFloat(row, v, 'g', -1, 64)
		}
		row = append(row, '\n')
		if _, err := w.Write(row); err != nil {
			return err
		}
	}
	return nil
}
