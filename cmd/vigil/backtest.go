package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/models"
	"github.com/vigil-iot/vigil/models/nab"
)

// runEvalHistory backtests a detector on the fleet's own stored history:
// the series a labels file names, scored with NAB's rules against the
// windows it gives them.
func runEvalHistory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eval history", stderr)
	url, token := serverFlag(fs)
	from := fs.String("from", "", "backtest readings from this time on, RFC 3339 (default: all history)")
	to := fs.String("to", "", "backtest readings before this time, RFC 3339 (default: now)")
	ef := newEvalFlags(fs, `labelled windows JSON, NAB's format keyed by series: {"DEVICE/METRIC": [["START", "END"], ...], ...}; `+
		"a series with [] is known to be normal; times RFC 3339 or NAB's 2006-01-02 15:04:05 (UTC)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *ef.labels == "" {
		return errors.New("--labels is required: which series to backtest, and when each was anomalous")
	}
	spec, err := parseSpec(*ef.model)
	if err != nil {
		return err
	}
	where, _, err := historyWindow(*from, *to, "")
	if err != nil {
		return err
	}
	windows, err := nab.LoadWindows(*ef.labels)
	if err != nil {
		return err
	}
	c := &api.Client{BaseURL: *url, Token: *token}
	series, windows, err := historyCorpus(ctx, c, windows, where)
	if err != nil {
		return err
	}
	return evaluate(stdout, "history", &models.Corpus{Series: series, Windows: windows}, spec, ef)
}

// checkSeriesNames tells a user whose series names match nothing stored how
// to list the stored ones.
const checkSeriesNames = "check the names against `vigil query \"SELECT DISTINCT device, metric FROM readings\"`"

// historyCorpus reads, in one query, the stored readings that match the
// conditions where of every series windows names ("DEVICE/METRIC"), and
// returns them sorted by name with each window narrowed to the readings
// inside it: labels come from incident records, whose times need not be
// those of readings, while NAB's rules take a window's ends to be readings
// of its series.
func historyCorpus(ctx context.Context, c *api.Client, windows nab.Windows, where []string) ([]nab.Series, nab.Windows, error) {
	if len(windows) == 0 {
		return nil, nil, errors.New("the labels name no series")
	}
	keys := make([]string, 0, len(windows))
	for k := range windows {
		dev, met, ok := strings.Cut(k, "/")
		if !ok || dev == "" || met == "" || strings.Contains(met, "/") {
			return nil, nil, fmt.Errorf("labels: %q is not a series: name each as DEVICE/METRIC", k)
		}
		keys = append(keys, sqlString(k))
	}
	sort.Strings(keys)
	var series []nab.Series
	cond := strings.Join(append(slices.Clip(where), "device || '/' || metric IN ("+strings.Join(keys, ", ")+")"), " AND ")
	err := histories(ctx, c, cond, func(ref seriesRef, ts []time.Time, xs []float64) error {
		series = append(series, nab.Series{Name: ref.device + "/" + ref.metric, Timestamps: ts, Values: xs})
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	slices.SortFunc(series, func(a, b nab.Series) int { return strings.Compare(a.Name, b.Name) })
	if len(series) < len(windows) {
		stored := make(map[string]bool, len(series))
		for _, s := range series {
			stored[s.Name] = true
		}
		var missing []string
		for k := range windows {
			if !stored[k] {
				missing = append(missing, k)
			}
		}
		sort.Strings(missing)
		return nil, nil, fmt.Errorf("no stored readings for %s: %s", strings.Join(missing, ", "), checkSeriesNames)
	}
	narrowed := make(nab.Windows, len(windows))
	for _, s := range series {
		ws := make([]nab.Window, 0, len(windows[s.Name]))
		for _, w := range windows[s.Name] {
			ts := s.Timestamps
			lo := sort.Search(len(ts), func(i int) bool { return !ts[i].Before(w.Start) }) // the first reading from Start
			hi := sort.Search(len(ts), func(i int) bool { return ts[i].After(w.End) }) - 1 // the last reading up to End
			if lo > hi {
				return nil, nil, fmt.Errorf("%s: no reading falls in the window %s – %s (its readings run from %s to %s)",
					s.Name, w.Start.Format(time.RFC3339), w.End.Format(time.RFC3339),
					s.Timestamps[0].Format(time.RFC3339), s.Timestamps[len(s.Timestamps)-1].Format(time.RFC3339))
			}
			ws = append(ws, nab.Window{Start: s.Timestamps[lo], End: s.Timestamps[hi]})
		}
		narrowed[s.Name] = ws
	}
	return series, narrowed, nil
}
