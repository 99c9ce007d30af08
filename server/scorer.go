package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"

	"github.com/vigil-iot/vigil/models"
	"github.com/vigil-iot/vigil/store"
)

// Scoring runs on several goroutines, shards, each owning the detectors of
// the devices whose id falls to it (id mod the number of shards). A device's
// series and its device-level model stay on one shard, so its readings are
// scored in commit order and its vectors are assembled in one place. The
// score goroutine hands every committed batch to every shard, each scoring
// only its own rows, and applies model versions from the registry between
// batches: it reads the registry, checks each new version once, and has
// every shard apply it (a shard warms only the series it owns) before it
// counts the version as applied. At startup, before any batch, every shard
// also warms the default detector of each stored series it owns, so that
// a restart does not start them cold.
//
// A batch is committed before it is handed to the scorer, so the history a
// new detector warms on may hold batches still waiting to be scored; a
// shard does not feed those readings to the detector again (see warmedTo).

// shard scores the readings of the devices it owns.
type shard struct {
	s     *Server
	index int
	count int
	in    chan shardJob
	// scored counts the readings this shard has scored.
	scored atomic.Int64

	monitor *models.Monitor
	// labels holds the label ("name@version(kind)") of each series with a
	// model of its own; the others run the default, defaultLabel.
	labels       map[models.SeriesKey]string
	defaultLabel string
	// warmedTo holds, for each series whose detector was last warmed on
	// stored history, the time of the newest reading of that history,
	// until the series' first reading dated after it (see warmedOn).
	warmedTo map[models.SeriesKey]time.Time
	// vectors runs the device-level (DEVICE/*) models; nil until one is
	// applied, so that without one scoring is what it always was.
	vectors      *models.VectorMonitor
	deviceModels map[int32]deviceModel
}

// shardJob is a committed batch to score, or model versions to apply (and
// a channel to say when they are).
type shardJob struct {
	rec    arrow.RecordBatch
	models []modelVersion
	since  time.Time // with models: the oldest reading they warm on (Server.warmSince)
	// stored, with models or none: warm the default detector of every
	// stored series that runs it even if no new default is among them (at
	// startup).
	stored  bool
	applied chan<- struct{}
}

// modelVersion is a registry version checked and resolved by the score
// goroutine, ready for the shards to apply.
type modelVersion struct {
	name    string
	version int
	spec    models.Spec
	label   string // "name@version(kind)"
	scope   modelScope
	series  models.SeriesKey // scopeSeries: the series; scopeDevice: the device
	devName string
}

// modelScope says what a model version replaces.
type modelScope int

const (
	scopeDefault modelScope = iota // every series without a model of its own
	scopeSeries                    // one series (DEVICE/METRIC)
	scopeDevice                    // a device's vector model (DEVICE/*)
)

// deviceModel is what an anomaly of a device-level model is reported with.
type deviceModel struct {
	label   string // "DEVICE/*@VERSION(KIND)"
	feature string // what the explanation names, e.g. "mahalanobis over load,temperature"
}

// newShards returns n shards, not yet running.
func newShards(s *Server, n int) ([]*shard, error) {
	shards := make([]*shard, n)
	for i := range shards {
		m, err := models.NewMonitor(s.cfg.Monitor)
		if err != nil {
			return nil, err
		}
		shards[i] = &shard{
			s: s, index: i, count: n, in: make(chan shardJob, 16), monitor: m,
			labels: map[models.SeriesKey]string{}, defaultLabel: s.cfg.Monitor.Model.Kind,
			warmedTo: map[models.SeriesKey]time.Time{},
		}
	}
	return shards, nil
}

// warmSince returns the oldest reading time a new detector warms on: the
// newest stored reading less cfg.WarmWindow, or zero (no bound) when the
// window is 0 or nothing is stored.
func (s *Server) warmSince(ctx context.Context) time.Time {
	if s.cfg.WarmWindow <= 0 {
		return time.Time{}
	}
	latest, ok, err := s.store.LatestReading(ctx)
	if err != nil {
		s.log.Warn("warm-up history not bounded", "err", err)
		return time.Time{}
	}
	if !ok {
		return time.Time{}
	}
	return latest.Add(-s.cfg.WarmWindow)
}

// owns reports whether the shard scores the device's readings.
func (sh *shard) owns(device int32) bool { return int(uint32(device)%uint32(sh.count)) == sh.index }

// score hands committed readings to the shards, in commit order, and
// applies new model versions from the registry between batches. It returns
// when the batcher has closed and every shard has finished.
func (s *Server) score() {
	defer close(s.scored)
	var wg sync.WaitGroup
	for _, sh := range s.shards {
		wg.Go(sh.run)
	}
	defer wg.Wait()
	defer func() {
		for _, sh := range s.shards {
			close(sh.in)
		}
	}()
	ctx := context.Background()
	s.applyModels(ctx, true)
	poll := time.NewTicker(s.cfg.ModelPoll)
	defer poll.Stop()
	for {
		select {
		case <-poll.C:
			s.applyModels(ctx, false)
		case rec, ok := <-s.recs:
			if !ok {
				return
			}
			for _, sh := range s.shards {
				rec.Retain()
				sh.in <- shardJob{rec: rec}
			}
			rec.Release()
		}
	}
}

// applyModels puts the registry's new active versions to work: a default
// version replaces the detector of every series without a model of its
// own, a per-series version (DEVICE/METRIC) that series' detector, a
// device-level version (DEVICE/*) the device's vector detector. Each new
// detector first replays the recent stored history through the same Update
// it will run live, so it starts warm. A version that cannot be applied is
// logged and not retried, except one whose device is not registered yet,
// which is applied once the device is. At startup every stored series
// that runs the default gets a default detector warmed on its history,
// new default version or not.
func (s *Server) applyModels(ctx context.Context, startup bool) {
	ms, err := s.store.Models(ctx, false)
	if err != nil {
		s.log.Error("reading the model registry", "err", err)
		return
	}
	var vs []modelVersion
	for _, m := range ms {
		if s.applied[m.Name] == m.Version {
			continue
		}
		v, err := s.resolve(ctx, m)
		if errors.Is(err, errNoDeviceYet) {
			// Trained before the device was registered: apply it once the
			// device is, and say so once.
			if s.waiting[m.Name] != m.Version {
				s.waiting[m.Name] = m.Version
				s.log.Warn("model waits for its device", "model", m.Name, "version", m.Version, "err", err)
			}
			continue
		}
		s.applied[m.Name] = m.Version
		delete(s.waiting, m.Name)
		if err != nil {
			s.log.Error("model not applied", "model", m.Name, "version", m.Version, "err", err)
			continue
		}
		vs = append(vs, v)
	}
	s.modelsWait.Store(int64(len(s.waiting)))
	if len(vs) == 0 && !startup {
		return
	}
	done := make(chan struct{}, len(s.shards))
	since := s.warmSince(ctx) // once for every shard and series
	for _, sh := range s.shards {
		sh.in <- shardJob{models: vs, since: since, stored: startup, applied: done}
	}
	for range s.shards {
		<-done
	}
	for _, v := range vs {
		s.modelsOn.Add(1)
		s.log.Info("model version active", "model", v.name, "version", v.version, "kind", v.spec.Kind)
	}
}

// errNoDeviceYet says that a model names a device that is not registered
// (yet).
var errNoDeviceYet = errors.New("the device is not registered (yet)")

// resolve checks a registry version and finds what it applies to.
func (s *Server) resolve(ctx context.Context, m store.Model) (modelVersion, error) {
	v := modelVersion{name: m.Name, version: m.Version}
	if err := json.Unmarshal(m.Spec, &v.spec); err != nil {
		return v, fmt.Errorf("bad spec: %w", err)
	}
	v.label = fmt.Sprintf("%s@%d(%s)", m.Name, m.Version, v.spec.Kind)
	switch devName, isDevice := store.ModelDevice(m.Name); {
	case m.Name == store.DefaultModel:
		v.scope = scopeDefault
		_, err := models.New(v.spec)
		return v, err
	case isDevice:
		dev, ok := s.store.Device(devName)
		if !ok {
			return v, fmt.Errorf("device %q: %w", devName, errNoDeviceYet)
		}
		if _, _, err := models.NewVector(v.spec); err != nil {
			return v, err
		}
		v.scope, v.series.Device, v.devName = scopeDevice, dev.ID, devName
		return v, nil
	default:
		devName, metric, _ := strings.Cut(m.Name, "/")
		dev, ok := s.store.Device(devName)
		if !ok {
			return v, fmt.Errorf("device %q: %w", devName, errNoDeviceYet)
		}
		mid, err := s.store.MetricID(ctx, metric)
		if err != nil {
			return v, err
		}
		if _, err := models.New(v.spec); err != nil {
			return v, err
		}
		v.scope, v.series = scopeSeries, models.SeriesKey{Device: dev.ID, Metric: mid}
		return v, nil
	}
}

// run scores and applies the shard's jobs until its channel closes.
func (sh *shard) run() {
	ctx := context.Background()
	for job := range sh.in {
		if job.rec != nil {
			sh.scoreRecord(ctx, job.rec)
			job.rec.Release()
			continue
		}
		sh.applyRound(ctx, job.models, job.since, job.stored)
		job.applied <- struct{}{}
	}
}

// warmChunk is how many series' histories the shard reads in one scan
// when it warms new per-series and per-device models: each scan reads
// the telemetry once, whatever the number of series, and holds their
// histories (up to WarmReadings each) until their models are built. A
// variable so that tests can cross chunks with few series.
var warmChunk = 1024

// applyRound puts a round of checked model versions to work on the series
// the shard owns, warmed on their stored readings from since on: new
// per-series and per-device models on histories read together, one scan
// per warmChunk series, rather than one query per series; then a new
// default (or, with stored, the one running) on every series that runs it
// (one scan), so that series with a model of their own are not warmed
// twice.
func (sh *shard) applyRound(ctx context.Context, vs []modelVersion, since time.Time, stored bool) {
	var chunk []pendingModel
	var ids []store.SeriesID
	flush := func() {
		hist := sh.histories(ctx, ids, since)
		for _, p := range chunk {
			if err := p.apply(hist); err != nil {
				sh.s.log.Error("model not applied", "model", p.v.name, "version", p.v.version, "err", err)
			}
		}
		chunk, ids = chunk[:0], ids[:0]
	}
	for _, v := range vs {
		switch {
		case v.scope == scopeDefault:
			if err := sh.monitor.SetDefault(v.spec); err != nil {
				sh.s.log.Error("model not applied", "model", v.name, "version", v.version, "err", err)
				continue
			}
			sh.defaultLabel = v.label
			stored = true
		case sh.owns(v.series.Device):
			p, err := sh.prepare(ctx, v)
			if err != nil {
				sh.s.log.Error("model not applied", "model", v.name, "version", v.version, "err", err)
				continue
			}
			chunk, ids = append(chunk, p), append(ids, p.ids...)
			if len(ids) >= warmChunk {
				flush()
			}
		}
	}
	if len(chunk) > 0 {
		flush()
	}
	if stored {
		sh.warmDefault(ctx, since)
	}
}

// history is a series' recent readings.
type history struct {
	ts []time.Time
	xs []float64
}

// histories reads the recent readings (up to WarmReadings, from since on)
// of the series ids in one scan. None are read when WarmReadings is 0; a
// failed scan is logged and the models start cold.
func (sh *shard) histories(ctx context.Context, ids []store.SeriesID, since time.Time) map[store.SeriesID]history {
	out := make(map[store.SeriesID]history, len(ids))
	n := sh.s.cfg.WarmReadings
	if n <= 0 || len(ids) == 0 {
		return out
	}
	err := sh.s.store.SeriesHistories(ctx, ids, n, since, func(d int32, m int16, ts []time.Time, xs []float64) error {
		out[store.SeriesID{Device: d, Metric: m}] = history{slices.Clone(ts), slices.Clone(xs)}
		return nil
	})
	if err != nil {
		sh.s.log.Error("warming models on history", "series", len(ids), "err", err)
	}
	return out
}

// pendingModel is a per-series or per-device model version built and
// waiting for the histories of the series it reads (ids) to be warmed
// and put to work.
type pendingModel struct {
	v     modelVersion
	ids   []store.SeriesID
	apply func(map[store.SeriesID]history) error
}

// prepare builds the detector of a per-series or per-device version and
// says which series' histories warm it.
func (sh *shard) prepare(ctx context.Context, v modelVersion) (pendingModel, error) {
	p := pendingModel{v: v}
	switch v.scope {
	case scopeSeries:
		det, err := models.New(v.spec)
		if err != nil {
			return p, err
		}
		key := v.series
		p.ids = []store.SeriesID{{Device: key.Device, Metric: key.Metric}}
		p.apply = func(hist map[store.SeriesID]history) error {
			h := hist[p.ids[0]]
			models.ScoreSeries(det, h.ts, h.xs)
			sh.monitor.Replace(key, det, true)
			sh.warmedOn(key, h.ts)
			sh.labels[key] = v.label
			return nil
		}
	case scopeDevice:
		det, names, err := models.NewVector(v.spec)
		if err != nil {
			return p, err
		}
		dev := v.series.Device
		metrics := make([]int16, len(names))
		for i, name := range names {
			if metrics[i], err = sh.s.store.MetricID(ctx, name); err != nil {
				return p, err
			}
			p.ids = append(p.ids, store.SeriesID{Device: dev, Metric: metrics[i]})
		}
		p.apply = func(hist map[store.SeriesID]history) error {
			return sh.putVector(v, det, dev, names, metrics, hist)
		}
	default:
		return p, fmt.Errorf("model scope %d is not per series or per device", v.scope)
	}
	return p, nil
}

// scoreRecord scores the shard's rows of a committed batch.
func (sh *shard) scoreRecord(ctx context.Context, rec arrow.RecordBatch) {
	ts := rec.Column(0).(interface{ Value(int) arrow.Timestamp })
	dev := rec.Column(1).(interface{ Value(int) int32 })
	met := rec.Column(2).(interface{ Value(int) int16 })
	val := rec.Column(3).(interface{ Value(int) float64 })
	var n int64
	defer func() { sh.scored.Add(n) }()
	for i := 0; i < int(rec.NumRows()); i++ {
		d := dev.Value(i)
		if !sh.owns(d) {
			continue
		}
		n++
		key := models.SeriesKey{Device: d, Metric: met.Value(i)}
		t := ts.Value(i).ToTime(arrow.Microsecond)
		if !sh.warmed(key, t) {
			sc, tr := sh.monitor.Observe(key, t, val.Value(i))
			sh.transition(ctx, key, t, sc, tr, sh.label(key))
		}
		if sh.vectors != nil {
			sh.scoreVector(ctx, key, t, val.Value(i))
		}
	}
}

// warmedOn records that the detector of a series was warmed on the
// readings dated ts (in time order), or on none.
func (sh *shard) warmedOn(key models.SeriesKey, ts []time.Time) {
	if len(ts) == 0 {
		delete(sh.warmedTo, key)
		return
	}
	sh.warmedTo[key] = ts[len(ts)-1]
}

// warmed reports whether a reading of a series, scored after its detector
// was warmed on stored history, may be in that history, and so must not be
// fed to the detector again: whether it is dated at or before the newest
// reading of the history. Batches are committed, then scored in commit
// order, so the series' first reading dated after that one was committed
// after the history was read, and so was every batch scored after it: from
// there on no reading is skipped. A reading committed after the history
// was read but dated at or before its end (a second reading at the same
// instant, a late one) is skipped too: never judged, but not learned twice.
func (sh *shard) warmed(key models.SeriesKey, t time.Time) bool {
	end, ok := sh.warmedTo[key]
	if !ok {
		return false
	}
	if !t.After(end) {
		return true
	}
	delete(sh.warmedTo, key)
	return false
}

// label returns the label of the model a series runs.
func (sh *shard) label(key models.SeriesKey) string {
	if l, ok := sh.labels[key]; ok {
		return l
	}
	return sh.defaultLabel
}

// scoreVector feeds a reading to its device's device-level model, if it has
// one; a vector it completes may open or close an episode, reported on the
// metric that drove the score.
func (sh *shard) scoreVector(ctx context.Context, key models.SeriesKey, t time.Time, x float64) {
	ev, ok := sh.vectors.Observe(key.Device, key.Metric, t, x)
	if !ok || ev.Transition == models.Steady {
		return
	}
	dm := sh.deviceModels[key.Device]
	ev.Score.Feature = dm.feature
	sh.transition(ctx, models.SeriesKey{Device: key.Device, Metric: ev.Metric}, ev.TS, ev.Score, ev.Transition, dm.label)
}

// transition acts on an episode opening (an anomaly, labelled with model)
// or closing (a recovery).
func (sh *shard) transition(ctx context.Context, key models.SeriesKey, t time.Time, sc models.Score, tr models.Transition, model string) {
	switch tr {
	case models.Began:
		sh.s.onAnomaly(ctx, key, t, sc, model)
	case models.Ended:
		if err := sh.s.ctrl.OnRecovered(ctx, key.Device, key.Metric, t); err != nil {
			sh.s.log.Error("recording recovery", "err", err)
		}
	}
}

// warmDefault gives every series of the shard that runs the default model
// a new detector of it, warmed on the series' recent history, read for all
// of them in one scan: the series the shard has scored, and the stored
// series it has not (yet, since a restart), which would otherwise start
// cold when they next report.
func (sh *shard) warmDefault(ctx context.Context, since time.Time) {
	spec, label := sh.monitor.Default(), sh.defaultLabel
	todo := map[models.SeriesKey]bool{}
	for _, k := range sh.monitor.DefaultSeries() {
		todo[k] = true
	}
	replace := func(key models.SeriesKey, ts []time.Time, xs []float64) error {
		det, err := models.New(spec)
		if err != nil {
			return err
		}
		models.ScoreSeries(det, ts, xs)
		sh.monitor.Replace(key, det, false)
		sh.warmedOn(key, ts)
		delete(todo, key)
		return nil
	}
	if n := sh.s.cfg.WarmReadings; n > 0 {
		began, series := time.Now(), 0
		err := sh.s.store.RecentHistories(ctx, n, since, sh.index, sh.count, func(d int32, m int16, ts []time.Time, xs []float64) error {
			key := models.SeriesKey{Device: d, Metric: m}
			if _, own := sh.labels[key]; own {
				return nil
			}
			series++
			return replace(key, ts, xs)
		})
		if err != nil {
			sh.s.log.Error("warming a model on history", "label", label, "err", err)
		}
		if series > 0 {
			sh.s.log.Info("default model warmed on history", "label", label, "shard", sh.index, "series", series, "took", time.Since(began).Round(time.Millisecond))
		}
	}
	for key := range todo { // no stored history (or the scan failed): start cold
		if err := replace(key, nil, nil); err != nil {
			sh.s.log.Error("model not applied", "label", label, "err", err)
			return
		}
	}
}

// putVector warms a device's vector model on the recent stored history of
// its metrics, lined up by timestamp, and puts it to work from the next
// reading after that history.
func (sh *shard) putVector(v modelVersion, det models.VectorDetector, dev int32, names []string, metrics []int16, hist map[store.SeriesID]history) error {
	tss, xss := make([][]time.Time, len(names)), make([][]float64, len(names))
	for i, m := range metrics {
		h := hist[store.SeriesID{Device: dev, Metric: m}]
		tss[i], xss[i] = h.ts, h.xs
	}
	ts, rows := models.JoinSeries(tss, xss)
	models.ScoreVectors(det, ts, rows)
	var after time.Time
	if len(ts) > 0 {
		after = ts[len(ts)-1]
	}
	if sh.vectors == nil {
		var err error
		if sh.vectors, err = models.NewVectorMonitor(sh.s.cfg.Monitor, models.DefaultVectorWindow); err != nil {
			return err
		}
		sh.deviceModels = map[int32]deviceModel{}
	}
	if err := sh.vectors.Set(dev, det, metrics, after); err != nil {
		return err
	}
	sh.deviceModels[dev] = deviceModel{label: v.label, feature: v.spec.Kind + " over " + strings.Join(names, ",")}
	return nil
}

// onAnomaly records an anomaly found by the model labelled model and hands
// it to the actions controller. Shards call it concurrently.
func (s *Server) onAnomaly(ctx context.Context, key models.SeriesKey, t time.Time, sc models.Score, model string) {
	metric := s.store.MetricName(key.Metric)
	device := s.store.DeviceName(key.Device)
	a := store.Anomaly{
		TS: t, DeviceID: key.Device, MetricID: key.Metric, Value: sc.Observed, Expected: sc.Expected,
		Score: sc.Value, Model: model, Explanation: sc.Explain(metric), Detected: time.Now(),
	}
	if err := s.store.AddAnomaly(ctx, &a); err != nil {
		s.log.Error("storing anomaly", "device", device, "metric", metric, "err", err)
		return
	}
	s.anomalies.Add(1)
	s.log.Info("anomaly", "device", device, "metric", metric, "score", fmt.Sprintf("%.3f", sc.Value), "why", a.Explanation)
	cmd, err := s.ctrl.OnAnomaly(ctx, a, device, metric)
	if err != nil {
		s.log.Error("command for anomaly", "device", device, "err", err)
		return
	}
	if cmd != nil {
		s.log.Info("command", "device", device, "id", cmd.ID, "name", cmd.Name, "state", cmd.State)
	}
}
