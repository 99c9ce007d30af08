package ingest

import (
	"encoding/binary"
	"math/bits"
	"strconv"
	"time"
	"unsafe"
)

// decodeFast parses the common shape of telemetry — objects of metric names
// to plain JSON numbers with an optional "ts" string, alone or in an array —
// in one pass, without encoding/json's maps and reflection. It handles only
// inputs it can treat exactly as the general path does and returns ok=false
// for anything else (escapes in strings, duplicate keys, non-number values,
// malformed JSON, out-of-range numbers, bad names or timestamps, too many
// readings); the general path then decodes the body or explains what is
// wrong with it. FuzzDecodeFastMatchesGeneral holds the two to agreement.
// The readings go into the columns of into where they have room.
func decodeFast(body []byte, received time.Time, into Readings) (Readings, bool) {
	p := fastParser{b: body, received: received.UnixMicro(), out: into}
	p.out.Names = p.out.Names[:0]
	p.shape = p.shapeBuf[:0]
	p.ws()
	ok := false
	switch p.peek() {
	case '{':
		p.grow(8)
		ok = p.object()
	case '[':
		p.i++
		p.ws()
		if p.peek() == ']' {
			return Readings{}, false // empty array: the general path says so
		}
		p.grow(len(body) / 24)
		for {
			p.ws()
			if p.peek() != '{' {
				return Readings{}, false
			}
			if ok = p.object(); !ok {
				return Readings{}, false
			}
			p.ws()
			if p.peek() == ',' {
				p.i++
				continue
			}
			if p.peek() != ']' {
				return Readings{}, false
			}
			p.i++
			break
		}
	}
	if !ok {
		return Readings{}, false
	}
	p.ws()
	if p.i != len(p.b) || p.out.Len() > MaxReadingsPerMessage {
		return Readings{}, false
	}
	return p.out, true
}

type fastParser struct {
	b        []byte
	i        int
	received int64            // µs since the epoch: the time of readings without "ts"
	out      Readings         // what the body decodes to so far
	index    map[string]int32 // out.Names by name, once there are many
	shape    []int32          // the keys of the last object, in order: tsKey or a metric
	shapeBuf [8]int32         // shape's first home
	minute   minuteCache
}

// tsKey stands for the "ts" key in fastParser.shape.
const tsKey = -1

// grow gives the output columns room for n readings, in the columns the
// parser was given if they have it.
func (p *fastParser) grow(n int) {
	o := &p.out
	if cap(o.Metric) < n || cap(o.TS) < n || cap(o.Value) < n {
		o.Metric, o.TS, o.Value = make([]int32, 0, n), make([]int64, 0, n), make([]float64, 0, n)
		return
	}
	o.Metric, o.TS, o.Value = o.Metric[:0], o.TS[:0], o.Value[:0]
}

func (p *fastParser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *fastParser) ws() {
	if p.i < len(p.b) && p.b[p.i] > ' ' { // nearly always: no space
		return
	}
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// str scans a string without escapes and returns its bytes. It looks at
// eight bytes at a time for a quote, a backslash or a control character
// (the zero-byte test of Mycroft's "haszero", as in Warren's "Hacker's
// Delight", section 6-1); the lowest byte the test flags is the first such
// byte, so the scan stops right on it.
func (p *fastParser) str() ([]byte, bool) {
	b := p.b
	if p.i >= len(b) || b[p.i] != '"' {
		return nil, false
	}
	start := p.i + 1
	j := start
	for ; j+8 <= len(b); j += 8 {
		if m := specialMask(binary.LittleEndian.Uint64(b[j:])); m != 0 {
			j += bits.TrailingZeros64(m) >> 3
			return p.strEnd(start, j)
		}
	}
	for ; j < len(b); j++ {
		if c := b[j]; c == '"' || c == '\\' || c < 0x20 {
			return p.strEnd(start, j)
		}
	}
	return nil, false
}

// strEnd ends the string that began at start on the special byte at j:
// a quote ends it, an escape or a control character declines it.
func (p *fastParser) strEnd(start, j int) ([]byte, bool) {
	if p.b[j] != '"' {
		return nil, false
	}
	p.i = j + 1
	return p.b[start:j], true
}

// specialMask returns a word with the high bit set in the bytes of w that
// are a quote, a backslash or below 0x20. Bytes above the first such byte
// may be flagged wrongly (a borrow runs into them), the first never is, so
// the lowest set bit is exact.
func specialMask(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) uint64 { return (v - ones) &^ v & highs }
	// Bytes below 0x20: v - 0x20 borrows into the high bit; bytes with the
	// high bit set (UTF-8) are excluded by &^ w.
	below := (w - 0x20*ones) &^ w & highs
	return below | hasZero(w^('"'*ones)) | hasZero(w^('\\'*ones))
}

// number scans a JSON number and returns its value. Numbers whose digits
// fit in 2⁵³ and whose decimal exponent is within ±22 — nearly every
// sensor reading — are converted exactly with one multiplication or
// division by an exact power of ten (W. D. Clinger, "How to read floating
// point numbers accurately", PLDI 1990: both operands are exact doubles, so
// IEEE 754's correctly rounded operation gives the correctly rounded
// result); the rest go through strconv.ParseFloat.
func (p *fastParser) number() (float64, bool) {
	b := p.b
	start, j := p.i, p.i
	neg := j < len(b) && b[j] == '-'
	if neg {
		j++
	}
	var mant uint64 // the digits, exact while nd ≤ 19
	nd := 0         // digits in mant
	exp := 0        // decimal exponent to apply to mant
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && b[j] >= '1' && b[j] <= '9':
		for ; j < len(b) && b[j]-'0' < 10; j++ {
			mant = mant*10 + uint64(b[j]-'0')
			nd++
		}
	default:
		return 0, false
	}
	if j < len(b) && b[j] == '.' {
		j++
		k := j
		for ; j < len(b) && b[j]-'0' < 10; j++ {
			mant = mant*10 + uint64(b[j]-'0')
		}
		if j == k {
			return 0, false
		}
		nd += j - k
		exp = k - j
	}
	if j < len(b) && (b[j] == 'e' || b[j] == 'E') {
		j++
		eneg := false
		if j < len(b) && (b[j] == '+' || b[j] == '-') {
			eneg = b[j] == '-'
			j++
		}
		k, e := j, 0
		for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
			if e < 10000 {
				e = e*10 + int(b[j]-'0')
			}
		}
		if j == k {
			return 0, false
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	p.i = j
	if nd <= 19 && mant < 1<<53 && exp >= -22 && exp <= 22 {
		f := float64(mant)
		if exp < 0 {
			f /= pow10[-exp]
		} else {
			f *= pow10[exp]
		}
		if neg {
			f = -f
		}
		return f, true
	}
	text := b[start:j]
	f, err := strconv.ParseFloat(unsafe.String(&text[0], len(text)), 64)
	if err != nil {
		p.i = start
		return 0, false // out of range: the general path explains
	}
	return f, true
}

// pow10 holds the powers of ten that are exact doubles.
var pow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10,
	1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// timestamp parses an RFC 3339 timestamp as time.Parse(time.RFC3339Nano)
// does, in UTC. The common form — YYYY-MM-DDTHH:MM:SS, an optional
// fraction of 1 to 9 digits, then Z or ±HH:MM — is read directly; anything
// else, including every out-of-range field, is left to time.Parse, which
// accepts or refuses it.
func timestamp(s []byte) (time.Time, bool) {
	var m minuteCache
	if secs, nsec, ok := m.fastRFC3339(s); ok {
		return time.Unix(secs, int64(nsec)).UTC(), true
	}
	t, err := time.Parse(time.RFC3339Nano, string(s))
	if err != nil {
		return time.Time{}, false
	}
	return t.UTC(), true
}

// minuteCache remembers the minute of the last timestamp read in the
// common form: the timestamps of one message mostly share it, and their
// date and time up to the minute are then neither parsed nor checked
// again.
type minuteCache struct {
	prefix [16]byte // "YYYY-MM-DDTHH:MM", already checked
	secs   int64    // its seconds since the epoch, before the zone offset
	ok     bool
}

// micros parses an RFC 3339 timestamp as timestamp does and returns it in
// microseconds since the epoch (the store's resolution), as
// time.Time.UnixMicro would.
func (m *minuteCache) micros(s []byte) (int64, bool) {
	if secs, nsec, ok := m.fastRFC3339(s); ok {
		return secs*1e6 + int64(nsec/1e3), true
	}
	t, ok := timestamp(s)
	return t.UnixMicro(), ok
}

// fastRFC3339 reads the common form of an RFC 3339 timestamp into seconds
// since the epoch and nanoseconds, or returns false for time.Parse to
// decide.
func (m *minuteCache) fastRFC3339(s []byte) (secs int64, nsec int, ok bool) {
	if len(s) < 20 || s[16] != ':' {
		return 0, 0, false
	}
	num := func(i, n int) int {
		v := 0
		for _, c := range s[i : i+n] {
			if c < '0' || c > '9' {
				return -1
			}
			v = v*10 + int(c-'0')
		}
		return v
	}
	if !m.ok || string(s[:16]) != string(m.prefix[:]) {
		if s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' {
			return 0, 0, false
		}
		year, month, day := num(0, 4), num(5, 2), num(8, 2)
		hour, min := num(11, 2), num(14, 2)
		if year < 1 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
			hour < 0 || hour > 23 || min < 0 || min > 59 {
			return 0, 0, false
		}
		copy(m.prefix[:], s)
		m.secs, m.ok = daysSinceEpoch(year, month, day)*86400+int64(hour*3600+min*60), true
	}
	sec := num(17, 2)
	if sec < 0 || sec > 59 {
		return 0, 0, false
	}
	i := 19
	if s[i] == '.' {
		i++
		k := i
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			nsec = nsec*10 + int(s[i]-'0')
		}
		n := i - k
		if n < 1 || n > 9 {
			return 0, 0, false
		}
		for ; n < 9; n++ {
			nsec *= 10
		}
	}
	offset := 0
	switch rest := s[i:]; {
	case len(rest) == 1 && rest[0] == 'Z':
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, om := num(i+1, 2), num(i+4, 2)
		if oh < 0 || oh > 23 || om < 0 || om > 59 {
			return 0, 0, false
		}
		offset = (oh*60 + om) * 60
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return 0, 0, false
	}
	return m.secs + int64(sec-offset), nsec, true
}

// daysIn returns the number of days in month of year (proleptic
// Gregorian).
func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysSinceEpoch returns the days from 1970-01-01 to the given date
// (proleptic Gregorian), counting years from March so that the leap day
// falls at the end of each year's count.
func daysSinceEpoch(year, month, day int) int64 {
	y := int64(year)
	if month <= 2 {
		y--
	}
	era := y / 400 // y ≥ 0 (year ≥ 1), so truncation is the floor
	yoe := y - era*400
	m := int64(month)
	if m > 2 {
		m -= 3
	} else {
		m += 9
	}
	doy := (153*m+2)/5 + int64(day) - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// name returns the interned metric name for b, or false if b is not a
// valid metric name (store.ValidMetricName's rule).
func (p *fastParser) name(b []byte) (int32, bool) {
	if p.index != nil {
		if k, ok := p.index[string(b)]; ok {
			return k, true
		}
	} else {
		for k, n := range p.out.Names { // a name seen in this body is valid
			if n == string(b) {
				return int32(k), true
			}
		}
	}
	if len(b) == 0 || len(b) > 64 {
		return 0, false
	}
	for k, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case k > 0 && (c >= '0' && c <= '9' || c == '.' || c == ':' || c == '-'):
		default:
			return 0, false
		}
	}
	k := int32(len(p.out.Names))
	p.out.Names = append(p.out.Names, string(b))
	if p.index != nil {
		p.index[p.out.Names[k]] = k
	} else if len(p.out.Names) > 16 { // past a few names, a map finds them faster
		p.index = make(map[string]int32, 2*len(p.out.Names))
		for j, n := range p.out.Names {
			p.index[n] = int32(j)
		}
	}
	return k, true
}

// key reads the n-th key of an object: tsKey for "ts", else the metric it
// names. Objects in an array mostly repeat the keys of the one before in
// the same order, so the key that object had in place n is tried first by
// comparing bytes; a metric name holds no quote or escape, so a match is
// what str and name would have found.
func (p *fastParser) key(n int) (int32, bool) {
	if n < len(p.shape) {
		k := p.shape[n]
		name := "ts"
		if k != tsKey {
			name = p.out.Names[k]
		}
		if e := p.i + 1 + len(name); e < len(p.b) && p.b[p.i] == '"' && p.b[e] == '"' && string(p.b[p.i+1:e]) == name {
			p.i = e + 1
			return k, true
		}
	}
	raw, ok := p.str()
	if !ok {
		return 0, false
	}
	k := int32(tsKey)
	if string(raw) != "ts" {
		if k, ok = p.name(raw); !ok {
			return 0, false
		}
	}
	if n < len(p.shape) {
		p.shape[n] = k
	} else {
		p.shape = append(p.shape, k)
	}
	return k, true
}

// object parses one object and appends its readings, dated by its "ts" or
// the time received, sorted by metric name as the general path sorts them.
func (p *fastParser) object() bool {
	p.i++ // '{'
	first := len(p.out.Value)
	ts, haveTS := p.received, false
	p.ws()
	if p.peek() == '}' {
		return false // no readings: the general path says so
	}
	for n := 0; ; n++ {
		p.ws()
		k, ok := p.key(n)
		if !ok {
			return false
		}
		p.ws()
		if p.peek() != ':' {
			return false
		}
		p.i++
		p.ws()
		if k == tsKey {
			if haveTS {
				return false
			}
			s, ok := p.str()
			if !ok {
				return false
			}
			if ts, ok = p.minute.micros(s); !ok {
				return false
			}
			haveTS = true
		} else {
			for _, m := range p.out.Metric[first:] {
				if m == k {
					return false // duplicate key
				}
			}
			v, ok := p.number()
			if !ok {
				return false
			}
			p.out.Metric = append(p.out.Metric, k)
			p.out.Value = append(p.out.Value, v)
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
			continue
		case '}':
			p.i++
			p.shape = p.shape[:n+1]
		default:
			return false
		}
		break
	}
	metric, value := p.out.Metric[first:], p.out.Value[first:]
	if len(metric) == 0 {
		return false
	}
	for range metric {
		p.out.TS = append(p.out.TS, ts)
	}
	names := p.out.Names
	for k := 1; k < len(metric); k++ { // insertion sort: objects hold a few metrics
		for m := k; m > 0 && names[metric[m]] < names[metric[m-1]]; m-- {
			metric[m], metric[m-1] = metric[m-1], metric[m]
			value[m], value[m-1] = value[m-1], value[m]
		}
	}
	return true
}
