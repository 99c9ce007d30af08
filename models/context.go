package models

import (
	"errors"
	"math"
	"time"

	"github.com/vigil-iot/vigil/features"
)

// KindContext is the Spec.Kind of the Context detector.
const KindContext = "context"

// ContextConfig sets the parameters of a Context detector.
type ContextConfig struct {
	// Bins is how many equal bins the learned value range is cut into.
	Bins int `json:"bins"`
	// Margin widens the learned range on each side, as a fraction of its
	// width, before it is cut into bins.
	Margin float64 `json:"margin"`
	// Order is the longest context, in readings before the current one.
	Order int `json:"order"`
	// WarmUp is the least number of readings in the learning period.
	WarmUp int `json:"warm_up"`
	// WarmUpSeconds is the least time the learning period spans, so the
	// range of a series with a daily cycle is learned over a whole cycle.
	WarmUpSeconds float64 `json:"warm_up_seconds"`
	// Short is how many recent context novelties are averaged.
	Short int `json:"short"`
	// Horizon is the number of novelties their long-run distribution is
	// estimated over.
	Horizon float64 `json:"horizon"`
	// LearnNovelty is how many novelties are learned after the learning
	// period before contextual scores are reported.
	LearnNovelty int `json:"learn_novelty"`
	// MinStd floors the long-run standard deviation of the novelty.
	MinStd float64 `json:"min_std"`
	// MaxContexts caps how many distinct contexts are remembered, which
	// bounds the memory of a long-lived series (512 contexts: a 4 KB
	// table); contexts beyond it are not learned. On the NAB development
	// set the cap barely matters (standard score of the default: 73.99 with
	// 4,096 contexts, 74.06 with 512, 73.93 with 256), while a fleet of a
	// million series needs 4 GB for this table instead of 64 GB.
	MaxContexts int `json:"max_contexts"`
}

// DefaultContextConfig returns the parameters used when none are given: 16
// bins over the range learned in the first 600 readings and at least one
// day, widened by 10% on each side; contexts of up to 6 past readings; and
// the anomaly likelihood settings of Ahmad et al. (10 recent novelties
// against about 8640, after 150 have been learned).
func DefaultContextConfig() ContextConfig {
	return ContextConfig{
		Bins: 16, Margin: 0.1, Order: 6, WarmUp: 600, WarmUpSeconds: 86400,
		Short: 10, Horizon: 8640, LearnNovelty: 150, MinStd: 0.05, MaxContexts: 512,
	}
}

// Validate reports the first parameter that is out of range.
func (c ContextConfig) Validate() error {
	switch {
	case c.Bins < 2:
		return errors.New("context: bins must be at least 2")
	case !(c.Margin >= 0):
		return errors.New("context: margin must not be negative")
	case c.Order < 1:
		return errors.New("context: order must be at least 1")
	case c.WarmUp < 2:
		return errors.New("context: warm_up must be at least 2")
	case c.Order > 1<<20 || c.WarmUp > 1<<20 || c.Short > 1<<20 || c.MaxContexts > 1<<20:
		// Each sizes memory: the history of bins, the learning buffer, the
		// ring of novelties and the context table.
		return errors.New("context: order, warm_up, short and max_contexts must be at most 2^20 (1048576)")
	case !(c.WarmUpSeconds >= 0) || math.IsInf(c.WarmUpSeconds, 0):
		return errors.New("context: warm_up_seconds must be finite and not negative")
	case c.Short < 1:
		return errors.New("context: short must be at least 1")
	case !(c.Horizon >= float64(c.Short)):
		return errors.New("context: horizon must be at least short")
	case c.LearnNovelty < 2:
		return errors.New("context: learn_novelty must be at least 2")
	case !(c.MinStd > 0):
		return errors.New("context: min_std must be positive")
	case c.MaxContexts < 1:
		return errors.New("context: max_contexts must be at least 1")
	}
	return nil
}

// Context scores a reading by how new it is, in value and in sequence, to
// this series. It follows the idea of the Contextual Anomaly Detector of
// M. Smirnov ("Contextual Anomaly Detector, Open Source Edition", CAD OSE,
// winner of the 2016 NAB competition, 69.9 on the full NAB scoreboard; as
// described in its NAB entry, not its code): readings are quantised
// into bins over a learned value range, the recent history of bins forms
// contexts, the detector remembers which contexts it has seen, and a
// reading is anomalous when the context it completes is unknown. This is an
// independent, simpler formulation: contexts are the bin sequences ending
// at the current reading, of lengths 1 to Order+1.
//
// The learning period (WarmUp readings spanning at least WarmUpSeconds)
// fixes the value range [lo, hi]; the grid of Bins bins covers it widened
// by Margin on each side and extends beyond it with bins of the same width.
// The latest learned readings (up to 4,096) are then replayed to seed the
// memory. From then on:
//
//   - Spatial novelty: a reading in a bin no earlier reading has visited —
//     outside the range ever seen, or in a gap inside it — scores 1. It is
//     the kind of "spatial anomaly" rule Numenta's HTM detector for NAB
//     adds to its sequence model: a value well outside the range seen so
//     far is anomalous whatever the sequence model says.
//   - Contextual novelty: otherwise the raw novelty is the fraction of the
//     current contexts (sequences of length 1 to Order+1) never seen before,
//     1 - m/(Order+1) for a longest known suffix of length m. Noisy series
//     are always a little novel, so the raw novelty is judged against its
//     own history by the anomaly likelihood of Ahmad, Lavin, Purdy and Agha
//     ("Unsupervised real-time anomaly detection for streaming data",
//     Neurocomputing 262, 2017, section on the anomaly likelihood): the
//     mean of the last Short novelties against a normal distribution fitted
//     to the long-run novelties, the tail probability log-scaled as NAB does
//     (0.5 at a tail probability of 1e-5).
//
// Explanations: Expected is the nearest value bin seen before and Deviation
// the distance to it in bins for a spatial novelty; for a contextual one
// Deviation is the likelihood z-score and Expected the reading itself.
type Context struct {
	cfg ContextConfig

	// Learning period: how many readings it has taken and their range, and
	// the latest of them (at most learnReplay, a ring once full, oldest at
	// bufHead) to replay when it ends.
	learning bool
	learned  int
	min, max float64
	buf      []float64
	bufHead  int
	start    time.Time

	// Grid: bin k holds [lo + k·w, lo + (k+1)·w). The visited bins are
	// a bitset for the bins near the learned range and a map for the rest,
	// so the common question costs no map lookup.
	lo, w      float64
	near       [visitedNear / 64]uint64 // bins visitedLow to visitedLow+visitedNear-1
	visitedFar map[int64]struct{}

	// Context memory: hashes of the bin sequences seen. hist and ring use
	// histBuf and ringBuf when they are large enough (the defaults), so the
	// state a reading touches is in one allocation.
	hist    []int64
	seen    hashSet
	histBuf [8]int64

	// Anomaly likelihood of the contextual novelty.
	long    features.Moments
	ring    []float64
	head    int
	sum     float64
	ringBuf [16]float64
}

// learnReplay is how many of the learning period's latest readings are
// kept to seed the memory of contexts when it ends. The period lasts
// WarmUp readings and WarmUpSeconds, so a fast series (a day of a 100 Hz
// sensor is 8.6 million readings) would otherwise keep all of them; its
// range is followed over every reading all the same.
const learnReplay = 4096

// The visited bins from visitedLow to visitedLow+visitedNear-1 are kept in a
// bitset; the learned range is bins 0 to Bins-1.
const (
	visitedLow  = -64
	visitedNear = 256
)

var _ Detector = (*Context)(nil)

// NewContext returns a Context detector with the given parameters.
func NewContext(cfg ContextConfig) (*Context, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	d := &Context{cfg: cfg, learning: true, long: features.NewMoments(cfg.Horizon)}
	if cfg.Order+1 <= len(d.histBuf) {
		d.hist = d.histBuf[: 0 : cfg.Order+1]
	} else {
		d.hist = make([]int64, 0, cfg.Order+1)
	}
	if cfg.Short <= len(d.ringBuf) {
		d.ring = d.ringBuf[:0:cfg.Short]
	} else {
		d.ring = make([]float64, 0, cfg.Short)
	}
	return d, nil
}

// visited reports whether a reading has fallen in bin b.
func (d *Context) visited(b int64) bool {
	if i := uint64(b - visitedLow); i < visitedNear {
		return d.near[i/64]&(1<<(i%64)) != 0
	}
	_, ok := d.visitedFar[b]
	return ok
}

// visit records that a reading has fallen in bin b.
func (d *Context) visit(b int64) {
	if i := uint64(b - visitedLow); i < visitedNear {
		d.near[i/64] |= 1 << (i % 64)
		return
	}
	if d.visitedFar == nil {
		d.visitedFar = make(map[int64]struct{})
	}
	d.visitedFar[b] = struct{}{}
}

// bin returns the grid bin of x.
func (d *Context) bin(x float64) int64 {
	b := math.Floor((x - d.lo) / d.w)
	// Keep absurd values representable; they are novel either way.
	return int64(math.Max(-1<<40, math.Min(1<<40, b)))
}

// contextSeed is the hash of the empty context (the FNV-1a offset basis).
const contextSeed = uint64(14695981039346656037)

// extendContext returns the hash of the context hashed by h extended one
// bin further into the past: an FNV-1a step with an extra shift-xor, so
// that high bits feed back into low ones.
func extendContext(h uint64, bin int64) uint64 {
	h = (h ^ uint64(bin)) * 1099511628211
	return h ^ h>>31
}

// push appends bin b to the history, learns the contexts it completes and
// returns how many of them (shortest first, without a gap) were known.
func (d *Context) push(b int64) int {
	if len(d.hist) == cap(d.hist) {
		copy(d.hist, d.hist[1:])
		d.hist = d.hist[:len(d.hist)-1]
	}
	d.hist = append(d.hist, b)
	known := 0
	h := contextSeed
	for k := len(d.hist) - 1; k >= 0; k-- {
		// A context is the bins from k to the end; hash them newest first,
		// so each context extends the hash of the one before.
		h = extendContext(h, d.hist[k])
		if d.seen.has(h) {
			if known == len(d.hist)-1-k {
				known++
			}
		} else if d.seen.len() < d.cfg.MaxContexts {
			d.seen.add(h)
		}
	}
	return known
}

// endLearning fixes the grid from the learning period and replays it.
func (d *Context) endLearning() {
	lo, hi := d.min, d.max
	span := hi - lo
	if !(span > 0) {
		// A flat series: any change is new.
		span = math.Max(math.Abs(hi)*1e-6, 1e-12)
	}
	d.lo = lo - d.cfg.Margin*span
	d.w = span * (1 + 2*d.cfg.Margin) / float64(d.cfg.Bins)
	for i := range d.buf {
		b := d.bin(d.buf[(d.bufHead+i)%len(d.buf)])
		d.visit(b)
		d.push(b)
	}
	d.buf, d.learning = nil, false
}

// nearest returns the signed distance, in bins, from b to the nearest
// visited bin (at most 64 bins away is looked for).
func (d *Context) nearest(b int64) int64 {
	for k := int64(1); k <= 64; k++ {
		if d.visited(b - k) {
			return k
		}
		if d.visited(b + k) {
			return -k
		}
	}
	return 64
}

// Update scores x, then learns it.
func (d *Context) Update(ts time.Time, x float64) Score {
	s := Score{Feature: KindContext, Observed: x, Expected: x}
	if !finite(x) {
		return s
	}
	if d.learning {
		if d.learned == 0 {
			d.start, d.min, d.max = ts, x, x
		}
		d.learned++
		d.min, d.max = math.Min(d.min, x), math.Max(d.max, x)
		if len(d.buf) < learnReplay {
			d.buf = append(d.buf, x)
		} else {
			d.buf[d.bufHead] = x
			d.bufHead = (d.bufHead + 1) % learnReplay
		}
		if d.learned >= d.cfg.WarmUp && ts.Sub(d.start).Seconds() >= d.cfg.WarmUpSeconds {
			d.endLearning()
		}
		return s
	}
	b := d.bin(x)
	if !d.visited(b) {
		dist := d.nearest(b)
		s.Value, s.Deviation = 1, float64(dist)
		s.Expected = d.lo + (float64(b-dist)+0.5)*d.w
		d.visit(b)
	}
	known := d.push(b)
	raw := 1 - float64(known)/float64(len(d.hist))

	// Anomaly likelihood of the mean of the last Short novelties.
	if len(d.ring) < cap(d.ring) {
		d.ring = append(d.ring, raw)
		d.sum += raw
	} else {
		d.sum += raw - d.ring[d.head]
		d.ring[d.head] = raw
		d.head = (d.head + 1) % len(d.ring)
	}
	if d.long.N() >= d.cfg.LearnNovelty && s.Value < 1 {
		sd := math.Max(d.long.Std(), d.cfg.MinStd)
		z := (d.sum/float64(len(d.ring)) - d.long.Mean()) / sd
		tail := 0.5 * math.Erfc(z/math.Sqrt2)
		v := math.Log(tail+logEpsilon) / math.Log(logEpsilon)
		s.Value, s.Deviation = math.Max(0, math.Min(1, v)), z
	}
	d.long.Add(raw)
	return s
}
