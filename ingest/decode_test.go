package ingest

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestDecode(t *testing.T) {
	recv := time.Date(2026, 11, 29, 5, 0, 0, 0, time.UTC)
	ts := time.Date(2026, 11, 29, 4, 59, 58, 500000000, time.UTC)
	tests := []struct {
		name string
		body string
		want []Reading
		err  string // substring of the reason; empty means valid
	}{
		{"object", `{"temperature": 71.2, "vibration": 0.31}`,
			[]Reading{{recv, "temperature", 71.2}, {recv, "vibration", 0.31}}, ""},
		{"object with ts", `{"ts": "2026-11-29T04:59:58.5Z", "rpm": 1200}`,
			[]Reading{{ts, "rpm", 1200}}, ""},
		{"ts with offset", `{"ts": "2026-11-29T05:59:58.5+01:00", "rpm": -3e2}`,
			[]Reading{{ts, "rpm", -300}}, ""},
		{"array", `[{"a": 1}, {"ts": "2026-11-29T04:59:58.5Z", "b": 2}]`,
			[]Reading{{recv, "a", 1}, {ts, "b", 2}}, ""},
		{"not json", `temperature=71`, nil, "not JSON"},
		{"truncated", `{"temperature": 71`, nil, "not valid JSON"},
		{"empty", ``, nil, "empty body"},
		{"string value", `{"temperature": "hot"}`, nil, `metric "temperature" is a JSON string`},
		{"bool value", `{"on": true}`, nil, `metric "on" is a JSON boolean`},
		{"null value", `{"x": null}`, nil, `metric "x" is a JSON null`},
		{"nested", `{"x": {"y": 1}}`, nil, `metric "x" is a JSON object`},
		{"bad ts", `{"ts": "yesterday", "x": 1}`, nil, `"ts" "yesterday" is not an RFC 3339`},
		{"numeric ts", `{"ts": 1732856400, "x": 1}`, nil, `"ts" is a JSON number`},
		{"no readings", `{"ts": "2026-11-29T04:59:58Z"}`, nil, "no readings"},
		{"scalar", `42`, nil, "body is a JSON number"},
		{"array of scalars", `[1, 2]`, nil, "element 0 of the array is not an object"},
		{"bad element", `[{"a": 1}, {"b": "x"}]`, nil, `element 1: metric "b" is a JSON string`},
		{"empty array", `[]`, nil, "empty array"},
		{"bad metric name", `{"temp rature": 1}`, nil, `metric name "temp rature" is not allowed`},
		{"overflow", `{"x": 1e400}`, nil, "does not fit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode([]byte(tc.body), recv)
			if tc.err != "" {
				var de *DecodeError
				if !errors.As(err, &de) {
					t.Fatalf("got %v (%v), want a DecodeError", got, err)
				}
				if !strings.Contains(de.Reason, tc.err) {
					t.Fatalf("reason %q does not say %q", de.Reason, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Len() != len(tc.want) || len(got.Metric) != got.Len() || len(got.TS) != got.Len() {
				t.Fatalf("got %+v, want %v", got, tc.want)
			}
			for i := range got.Len() {
				if r := got.At(i); !r.TS.Equal(tc.want[i].TS) || r.Metric != tc.want[i].Metric || r.Value != tc.want[i].Value {
					t.Fatalf("reading %d: got %+v, want %+v", i, r, tc.want[i])
				}
			}
		})
	}
}

// FuzzDecode checks that no body crashes the decoder and that what it
// accepts is well formed.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{`{"a": 1}`, `[{"ts": "2026-01-01T00:00:00Z", "b": 2.5}]`, `{"x": "y"}`, `[`, `{"ts": 1}`} {
		f.Add([]byte(s))
	}
	recv := time.Unix(0, 0).UTC()
	f.Fuzz(func(t *testing.T, body []byte) {
		rs, err := Decode(body, recv)
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || de.Reason == "" {
				t.Fatalf("error %v is not a DecodeError with a reason", err)
			}
			return
		}
		if rs.Len() == 0 || len(rs.Metric) != rs.Len() || len(rs.TS) != rs.Len() {
			t.Fatalf("accepted a body with no readings or ragged columns: %+v", rs)
		}
		for i := range rs.Len() {
			if r := rs.At(i); r.Metric == "" || r.Metric == "ts" {
				t.Fatalf("bad metric %q", r.Metric)
			}
		}
	})
}

// FuzzDecodeFastMatchesGeneral: whatever the fast path accepts, the general
// path accepts too, with exactly the same readings, also when the fast path
// decodes into columns that hold another body's readings.
func FuzzDecodeFastMatchesGeneral(f *testing.F) {
	for _, s := range []string{
		`{"a": 1}`, `[{"ts": "2026-01-01T00:00:00Z", "b": 2.5, "a": -0}, {"c": 1e3}]`, ` { "x" : 1.5e-3 } `,
		`{"a": 1, "a": 2}`, `{"ts": "2026-01-01T00:00:00+02:00", "z": 1, "y": 2}`, `{"a": 01}`, `{"a": 1.}`,
		`{"é": 1}`, `{"a\u0062": 1}`, `[{"a": 1},]`, `{"a": 1e999}`, `{"ts": "2026-13-01T00:00:00Z", "a": 1}`,
		shapeBodies[0], shapeBodies[1], `[{"a": 1, "b": 2}, {"a": 3, "a": 4}]`,
	} {
		f.Add([]byte(s))
	}
	recv := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, body []byte) {
		// Into the columns of another body, as the batcher reuses them.
		dirty, _ := decodeFast([]byte(shapeBodies[0]), recv, Readings{})
		fast, ok := decodeFast(body, recv, dirty)
		if !ok {
			return
		}
		general, err := decodeGeneral(body, recv)
		if err != nil {
			t.Fatalf("fast path accepted %q, general path refused it: %v", body, err)
		}
		if fast.Len() != len(general) || len(fast.Metric) != len(general) || len(fast.TS) != len(general) {
			t.Fatalf("%q: fast %+v, general %v", body, fast, general)
		}
		for i, g := range general {
			if f := fast.At(i); f.Metric != g.Metric || fast.TS[i] != g.TS.UnixMicro() ||
				math.Float64bits(f.Value) != math.Float64bits(g.Value) {
				t.Fatalf("%q reading %d: fast %+v, general %+v", body, i, f, g)
			}
		}
	})
}

// shapeBodies are arrays whose objects change their keys from one to the
// next: another order, "ts" elsewhere, fewer or more keys, a name that
// begins like the one before it, a minute that changes.
var shapeBodies = []string{
	`[{"ts":"2026-01-01T00:00:00Z","temp":1,"temperature":2},{"temperature":3,"temp":4,"ts":"2026-01-01T00:00:01Z"},` +
		`{"temp":5},{"tempx":6,"ts":"2026-01-01T00:01:59Z"},{"temp":7,"tempx":8,"t":9},{"ts":"2026-01-01T00:01:59.5+01:00","te":10}]`,
	`[{"a":1,"b":2},{"a":3},{"a":4,"b":5,"c":6},{"b":7,"a":8},{"ts":"2026-01-01T00:00:00Z","a":9}]`,
}

// TestDecodeShapeChanges: when the objects of an array change their keys,
// the fast path, which tries the keys of the object before first, still
// takes the body and decodes the same readings as the general path; a key
// repeated within an object is still declined.
func TestDecodeShapeChanges(t *testing.T) {
	recv := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	for _, body := range shapeBodies {
		fast, ok := decodeFast([]byte(body), recv, Readings{})
		if !ok {
			t.Fatalf("the fast path declined %s", body)
		}
		general, err := decodeGeneral([]byte(body), recv)
		if err != nil {
			t.Fatal(err)
		}
		if fast.Len() != len(general) {
			t.Fatalf("%s: fast path %d readings, general %d", body, fast.Len(), len(general))
		}
		for i, g := range general {
			if f := fast.At(i); f.Metric != g.Metric || !f.TS.Equal(g.TS) || f.Value != g.Value {
				t.Fatalf("%s reading %d: fast %+v, general %+v", body, i, f, g)
			}
		}
	}
	if _, ok := decodeFast([]byte(`[{"a":1,"b":2},{"a":3,"a":4}]`), recv, Readings{}); ok {
		t.Error("the fast path took an object with a repeated key")
	}
}

func TestFastPathTakesTheCommonShapes(t *testing.T) {
	recv := time.Now()
	for _, body := range []string{
		`{"temperature": 71.2, "vibration": 0.31}`,
		`[{"ts": "2026-11-29T04:59:58.5Z", "a": 1}, {"b": -2e-3}]`,
		" {\n\t\"rpm\" : 1200 } ",
	} {
		if _, ok := decodeFast([]byte(body), recv, Readings{}); !ok {
			t.Errorf("the fast path declined %s", body)
		}
	}
}

func BenchmarkDecode(b *testing.B) {
	body := telemetryBody()
	now := time.Now()
	for _, c := range []struct {
		name string
		fn   func([]byte, time.Time) (Readings, error)
	}{{"vigil", Decode}, {"encoding_json", func(body []byte, t time.Time) (Readings, error) {
		rs, err := decodeGeneral(body, t)
		return columns(rs), err
	}}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := c.fn(body, now); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "readings/s")
		})
	}
}

// TestDecodeManyNames: a body naming more metrics than the fast path
// searches one by one (it then keeps a map) decodes every value under its
// own name, each object sorted by name, the same as the general path.
func TestDecodeManyNames(t *testing.T) {
	var sb strings.Builder
	sb.WriteByte('[')
	for o := range 2 {
		if o > 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte('{')
		for k := 39; k >= 0; k-- { // written in reverse name order
			fmt.Fprintf(&sb, `"m%02d": %d`, k, 100*o+k)
			if k > 0 {
				sb.WriteByte(',')
			}
		}
		sb.WriteByte('}')
	}
	sb.WriteByte(']')
	recv := time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)
	fast, ok := decodeFast([]byte(sb.String()), recv, Readings{})
	if !ok {
		t.Fatal("the fast path declined the body")
	}
	if fast.Len() != 80 || len(fast.Names) != 40 {
		t.Fatalf("%d readings of %d names, want 80 of 40", fast.Len(), len(fast.Names))
	}
	for i := range fast.Len() {
		o, k := i/40, i%40
		if r := fast.At(i); r.Metric != fmt.Sprintf("m%02d", k) || r.Value != float64(100*o+k) || !r.TS.Equal(recv) {
			t.Fatalf("reading %d: %+v, want m%02d = %d", i, r, k, 100*o+k)
		}
	}
}
