package ingest

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// TestNumberMatchesParseFloat holds the exact fast path of number to
// strconv.ParseFloat, bit for bit, on numbers of the shapes devices send and
// on the edges of the fast path (2^53, exponents ±22, long fractions).
func TestNumberMatchesParseFloat(t *testing.T) {
	cases := []string{
		"0", "-0", "0.0", "-0.0", "1", "-1", "71.25", "0.1", "0.3", "1e22", "1e23", "1e-22", "1e-23",
		"9007199254740992", "9007199254740993", "9007199254740991.5", "123456789012345678901234567890",
		"0.000000000000000000001", "4.9e-324", "1.7976931348623157e308", "2.2250738585072014e-308",
		"12.5E+3", "12.5e-3", "0e5", "3.14159265358979323846", "-273.15", "1E0", "100000000000000000000000",
	}
	rng := rand.New(rand.NewPCG(7, 11))
	for range 20000 {
		var b []byte
		switch rng.IntN(3) {
		case 0: // fixed point with a few decimals, like sensor readings
			b = strconv.AppendFloat(nil, (rng.Float64()-0.5)*math.Pow(10, float64(rng.IntN(12))), 'f', rng.IntN(8), 64)
		case 1: // shortest representation of a random double
			b = strconv.AppendFloat(nil, math.Float64frombits(rng.Uint64()>>2), 'g', -1, 64)
		default: // random digits with a random exponent
			n := 1 + rng.IntN(20)
			b = append(b, byte('1'+rng.IntN(9)))
			for range n - 1 {
				b = append(b, byte('0'+rng.IntN(10)))
			}
			if rng.IntN(2) == 0 {
				b = append(b, '.', byte('0'+rng.IntN(10)))
			}
			b = append(b, 'e')
			b = strconv.AppendInt(b, int64(rng.IntN(70)-35), 10)
		}
		cases = append(cases, string(b))
	}
	for _, c := range cases {
		want, err := strconv.ParseFloat(c, 64)
		if err != nil {
			continue
		}
		p := fastParser{b: []byte(c)}
		got, ok := p.number()
		if !ok || p.i != len(c) || math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("number(%q) = %v, %v (consumed %d of %d); strconv.ParseFloat gives %v", c, got, ok, p.i, len(c), want)
		}
	}
	for _, c := range []string{"1e400", "-1e400"} {
		p := fastParser{b: []byte(c)}
		if _, ok := p.number(); ok {
			t.Errorf("number(%q) accepted an out-of-range number", c)
		}
	}
}

// TestTimestampMatchesTimeParse holds timestamp, and the parser's
// minute-remembering micros, to time.Parse with RFC3339Nano: the same
// instant for every string time.Parse accepts, and a refusal for every
// string it refuses.
func TestTimestampMatchesTimeParse(t *testing.T) {
	cases := []string{
		"2026-11-29T04:59:58Z", "2026-11-29T04:59:58.5Z", "2026-11-29T04:59:58.123456789Z",
		"2026-11-29T04:59:58.1234567891Z", "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z",
		"2100-02-29T00:00:00Z", "2000-02-29T23:59:59+01:00", "1970-01-01T00:00:00-23:59",
		"0001-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-04-31T00:00:00Z",
		"2026-11-29T24:00:00Z", "2026-11-29T23:60:00Z", "2026-11-29T23:59:60Z", "2026-11-29t00:00:00z",
		"2026-11-29T00:00:00", "2026-11-29T00:00:00.Z", "2026-11-29T00:00:00+0100", "2026-11-29T00:00:00+24:00",
		"2026-11-29 00:00:00Z", "2026-1-29T00:00:00Z", "2026-11-29T00:00:00,5Z", "1969-12-31T23:59:59.999Z",
	}
	rng := rand.New(rand.NewPCG(3, 5))
	for range 20000 {
		ts := time.Unix(rng.Int64N(1<<36)-1<<35, rng.Int64N(1e9))
		layout := []string{time.RFC3339, time.RFC3339Nano, "2006-01-02T15:04:05.000Z07:00"}[rng.IntN(3)]
		zone := time.FixedZone("", (rng.IntN(48)-24)*1800)
		cases = append(cases, ts.In(zone).Format(layout))
	}
	// Timestamps that share a minute with the one before, valid and not:
	// the second is read from the minute the parser remembers.
	for _, c := range []string{"2026-11-29T04:59:", "2024-02-29T23:59:", "2026-11-29T04:59-"} {
		for _, rest := range []string{"00Z", "59.999999Z", "60Z", "5aZ", "00+01:00", "00+01:60", "00.Z", "00"} {
			cases = append(cases, c+rest)
		}
	}
	var minute minuteCache // one for all cases, as in a message
	for _, c := range cases {
		want, werr := time.Parse(time.RFC3339Nano, c)
		us, uok := minute.micros([]byte(c))
		if uok != (werr == nil) || uok && us != want.UnixMicro() {
			t.Fatalf("micros(%q) = %d, %v after %v; time.Parse gives %v, %v", c, us, uok, minute.prefix, want.UnixMicro(), werr)
		}
		got, ok := timestamp([]byte(c))
		switch {
		case werr != nil && ok:
			t.Fatalf("timestamp(%q) = %v; time.Parse refuses it: %v", c, got, werr)
		case werr == nil && !ok:
			t.Fatalf("timestamp(%q) refused; time.Parse gives %v", c, want)
		case werr == nil && (!got.Equal(want) || got.Location() != time.UTC):
			t.Fatalf("timestamp(%q) = %v; time.Parse gives %v", c, got, want.UTC())
		}
	}
}

// BenchmarkTimestamp compares timestamp with time.Parse on the form
// devices send.
func BenchmarkTimestamp(b *testing.B) {
	s := []byte("2026-11-29T04:59:58.250Z")
	b.Run("vigil", func(b *testing.B) {
		for b.Loop() {
			if _, ok := timestamp(s); !ok {
				b.Fatal("refused")
			}
		}
	})
	b.Run("time_parse", func(b *testing.B) {
		for b.Loop() {
			if _, err := time.Parse(time.RFC3339Nano, string(s)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestSpecialMaskFindsTheFirstStop: the eight-bytes-at-a-time test flags
// the first quote, backslash or control character of any word as its
// lowest byte, whatever the other bytes, and flags nothing in a word
// without one (a miss would read past the end of a string, a wrong first
// byte would cut it short).
func TestSpecialMaskFindsTheFirstStop(t *testing.T) {
	first := func(w uint64) int { // the first stop byte, 8 if none
		for k := range 8 {
			if c := byte(w >> (8 * k)); c == '"' || c == '\\' || c < 0x20 {
				return k
			}
		}
		return 8
	}
	rng := rand.New(rand.NewPCG(5, 8))
	check := func(w uint64) {
		if got, want := bits.TrailingZeros64(specialMask(w))>>3, first(w); got != want {
			t.Fatalf("specialMask(%#016x) flags byte %d first, want %d", w, got, want)
		}
	}
	for range 200_000 {
		w := rng.Uint64()
		check(w)
		// Plant each stop byte, and the bytes around the thresholds, at a
		// random position among printable and UTF-8 bytes, sometimes a
		// second one above it.
		for _, c := range []byte{'"', '\\', 0, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xff} {
			v := w | 0x4040404040404040
			k := rng.IntN(8)
			v = v&^(0xff<<(8*k)) | uint64(c)<<(8*k)
			check(v)
			if k < 7 {
				k2 := k + 1 + rng.IntN(7-k)
				check(v&^(0xff<<(8*k2)) | uint64([]byte{'"', '\\', 0, 0x20}[rng.IntN(4)])<<(8*k2))
			}
		}
	}
	check(0x6162636465666768) // "abcdefgh" has no stop
}
