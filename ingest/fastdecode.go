package ingest

import (
	"encoding/binary"
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
func decodeFast(body []byte, received time.Time) (Readings, bool) {
	p := fastParser{b: body, received: received.UnixMicro()}
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
}

// grow gives the output columns room for n readings.
func (p *fastParser) grow(n int) {
	p.out.Metric = make([]int32, 0, n)
	p.out.TS = make([]int64, 0, n)
	p.out.Value = make([]float64, 0, n)
}

func (p *fastParser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *fastParser) ws() {
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
// Delight", section 6-1), then finds which byte it was one at a time.
func (p *fastParser) str() ([]byte, bool) {
	if p.peek() != '"' {
		return nil, false
	}
	start := p.i + 1
	j := start
	for ; j+8 <= len(p.b); j += 8 {
		w := binary.LittleEndian.Uint64(p.b[j:])
		if special(w) {
			break
		}
	}
	for ; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			p.i = j + 1
			return p.b[start:j], true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// special reports whether any byte of w is a quote, a backslash or below
// 0x20.
func special(w uint64) bool {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	hasZero := func(v uint64) uint64 { return (v - ones) &^ v & highs }
	// Bytes below 0x20: v - 0x20 borrows into the high bit; bytes with the
	// high bit set (UTF-8) are excluded by &^ w.
	below := (w - 0x20*ones) &^ w & highs
	return below|hasZero(w^('"'*ones))|hasZero(w^('\\'*ones)) != 0
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
	var mant uint64
	exact := true // mant holds every digit so far, below 2^53
	exp := 0      // decimal exponent to apply to mant
	digit := func(c byte) {
		if mant > (1<<53-9)/10 {
			exact = false
			return
		}
		mant = mant*10 + uint64(c-'0')
	}
	switch {
	case j < len(b) && b[j] == '0':
		j++
	case j < len(b) && b[j] >= '1' && b[j] <= '9':
		for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
			digit(b[j])
		}
	default:
		return 0, false
	}
	if j < len(b) && b[j] == '.' {
		j++
		k := j
		for ; j < len(b) && b[j] >= '0' && b[j] <= '9'; j++ {
			digit(b[j])
			exp--
		}
		if j == k {
			return 0, false
		}
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
	if exact && exp >= -22 && exp <= 22 {
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
	if t, ok := fastRFC3339(s); ok {
		return t, true
	}
	t, err := time.Parse(time.RFC3339Nano, string(s))
	if err != nil {
		return time.Time{}, false
	}
	return t.UTC(), true
}

// fastRFC3339 reads the common form of an RFC 3339 timestamp, or returns
// false for time.Parse to decide.
func fastRFC3339(s []byte) (time.Time, bool) {
	if len(s) < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' {
		return time.Time{}, false
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
	year, month, day := num(0, 4), num(5, 2), num(8, 2)
	hour, min, sec := num(11, 2), num(14, 2), num(17, 2)
	if year < 1 || month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour < 0 || hour > 23 || min < 0 || min > 59 || sec < 0 || sec > 59 {
		return time.Time{}, false
	}
	i, nsec := 19, 0
	if s[i] == '.' {
		i++
		k := i
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			nsec = nsec*10 + int(s[i]-'0')
		}
		n := i - k
		if n < 1 || n > 9 {
			return time.Time{}, false
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
			return time.Time{}, false
		}
		offset = (oh*60 + om) * 60
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false
	}
	secs := daysSinceEpoch(year, month, day)*86400 + int64(hour*3600+min*60+sec-offset)
	return time.Unix(secs, int64(nsec)).UTC(), true
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
	for {
		p.ws()
		key, ok := p.str()
		if !ok {
			return false
		}
		p.ws()
		if p.peek() != ':' {
			return false
		}
		p.i++
		p.ws()
		if string(key) == "ts" {
			if haveTS {
				return false
			}
			s, ok := p.str()
			if !ok {
				return false
			}
			t, ok := timestamp(s)
			if !ok {
				return false
			}
			ts, haveTS = t.UnixMicro(), true
		} else {
			k, ok := p.name(key)
			if !ok {
				return false
			}
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
