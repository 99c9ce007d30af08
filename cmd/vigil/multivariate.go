package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/vigil-iot/vigil/api"
	"github.com/vigil-iot/vigil/models"
	"github.com/vigil-iot/vigil/store"
)

// trainMultivariate fits and registers one device-level model (DEVICE/*)
// per device, over the metrics in want (default: all of the device's, or
// every column of the CSV), from stored history through the API or from
// csvPath.
func trainMultivariate(ctx context.Context, c *api.Client, stdout, stderr io.Writer, model, device string, want []string, csvPath, from, to string) error {
	spec := models.Spec{Kind: models.KindMahalanobis}
	if s := strings.TrimSpace(model); s != "" {
		var err error
		if spec, err = readSpec(s); err != nil {
			return err
		}
		if !models.IsVectorKind(spec.Kind) {
			return fmt.Errorf("--multivariate needs a device-level kind (%v), not %q", models.VectorKinds(), spec.Kind)
		}
	}
	if want == nil {
		// Metrics named in the params select as --metrics does.
		var p struct {
			Metrics []string `json:"metrics"`
		}
		if len(spec.Params) > 0 {
			if err := json.Unmarshal(spec.Params, &p); err != nil {
				return fmt.Errorf("model params: %w", err)
			}
		}
		want = p.Metrics
	}
	if csvPath != "" {
		if device == "" {
			return errors.New("--multivariate --csv needs --device: the model is registered as DEVICE/*")
		}
		names, ts, rows, err := readVectorCSV(csvPath, want)
		if err != nil {
			return err
		}
		return trainDevice(ctx, c, stdout, spec, device, names, ts, rows)
	}

	where, _, err := historyWindow(from, to, device)
	if err != nil {
		return err
	}
	cond := strings.Join(where, " AND ")
	devices, err := distinct(ctx, c, "device", cond, "--device, --from and --to")
	if err != nil {
		return err
	}
	// One pass over the readings, device after device: each device's
	// series arrive together, its metrics in name order.
	bar := newProgress(stderr, len(devices))
	var seen []string // the devices streamed, trained or skipped
	var dev string
	got := map[string]seriesData{}
	var order []string // the device's metrics as they came: in name order
	finish := func() error {
		if dev == "" {
			return nil
		}
		seen = append(seen, dev)
		defer bar.step(len(seen), dev)
		names := want
		if names == nil {
			names = order
			if len(names) < 2 && device == "" {
				fmt.Fprintf(stderr, "%s: skipped, it has only %d metric\n", dev, len(names))
				return nil
			}
		}
		tss, xss := make([][]time.Time, len(names)), make([][]float64, len(names))
		for j, m := range names {
			sd, ok := got[m]
			if !ok {
				return fmt.Errorf("%s has no stored readings of %q in the window", dev, m)
			}
			tss[j], xss[j] = sd.ts, sd.xs
		}
		ts, rows := models.JoinSeries(tss, xss)
		return trainDevice(ctx, c, stdout, spec, dev, names, ts, rows)
	}
	streamed := cond
	if want != nil { // fetch only the metrics the models take
		quoted := make([]string, len(want))
		for i, m := range want {
			quoted[i] = sqlString(m)
		}
		streamed += " AND metric IN (" + strings.Join(quoted, ", ") + ")"
	}
	err = histories(ctx, c, streamed, func(ref seriesRef, ts []time.Time, xs []float64) error {
		if ref.device != dev {
			if err := finish(); err != nil {
				return err
			}
			dev, order = ref.device, order[:0]
			clear(got)
		}
		got[ref.metric] = seriesData{ts, xs}
		order = append(order, ref.metric)
		return nil
	})
	if err != nil {
		return err
	}
	if err := finish(); err != nil {
		return err
	}
	if len(seen) < len(devices) { // a device with readings, but none of want
		for _, row := range devices {
			if d := fmt.Sprint(row[0]); !slices.Contains(seen, d) {
				return fmt.Errorf("%s has no stored readings of %s in the window", d, strings.Join(want, " or "))
			}
		}
	}
	return nil
}

// seriesData is one series' readings.
type seriesData struct {
	ts []time.Time
	xs []float64
}

// trainDevice fits spec over one device's vectors and registers it as the
// device's DEVICE/* model.
func trainDevice(ctx context.Context, c *api.Client, stdout io.Writer, spec models.Spec, device string, names []string, ts []time.Time, rows [][]float64) error {
	params := map[string]json.RawMessage{}
	if len(spec.Params) > 0 {
		if err := json.Unmarshal(spec.Params, &params); err != nil {
			return fmt.Errorf("model params: %w", err)
		}
	}
	params["metrics"], _ = json.Marshal(names)
	spec.Params, _ = json.Marshal(params)
	trained, m, err := models.TrainVector(spec, ts, rows, 0.5)
	if err != nil {
		return fmt.Errorf("%s: %w", device, err)
	}
	specJSON, _ := json.Marshal(trained)
	summary := fmt.Sprintf("%d vectors of %s (%d skipped as incomplete), alarm rate %.4f, score p99 %.3f",
		m.Vectors, strings.Join(names, ","), m.Skipped, m.AlarmRate, m.P99)
	return register(ctx, c, stdout, store.DeviceModel(device), specJSON, ts, m, summary)
}

// readVectorCSV reads a timestamp,METRIC,... CSV and keeps the columns in
// want, in that order (all of them when want is nil).
func readVectorCSV(path string, want []string) ([]string, []time.Time, [][]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, nil, err
	}
	defer f.Close()
	names, ts, rows, err := models.ReadVectorCSV(f)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(ts) == 0 {
		return nil, nil, nil, fmt.Errorf("%s: no rows", path)
	}
	if want == nil {
		return names, ts, rows, nil
	}
	cols := make([]int, len(want))
	for j, m := range want {
		if cols[j] = slices.Index(names, m); cols[j] < 0 {
			return nil, nil, nil, fmt.Errorf("%s has no column %q (it has %v)", path, m, names)
		}
	}
	for i, row := range rows {
		kept := make([]float64, len(cols))
		for j, col := range cols {
			kept[j] = row[col]
		}
		rows[i] = kept
	}
	return want, ts, rows, nil
}
