package ingest

import (
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
func decodeFast(body []byte, received time.Time) ([]Reading, bool) {
	p := fastParser{b: body}
	p.ws()
	var out []Reading
	ok := false
	switch p.peek() {
	case '{':
		out, ok = p.object(received, make([]Reading, 0, 8))
	case '[':
		p.i++
		p.ws()
		if p.peek() == ']' {
			return nil, false // empty array: the general path says so
		}
		out = make([]Reading, 0, len(body)/24)
		for {
			p.ws()
			if p.peek() != '{' {
				return nil, false
			}
			if out, ok = p.object(received, out); !ok {
				return nil, false
			}
			p.ws()
			if p.peek() == ',' {
				p.i++
				continue
			}
			if p.peek() != ']' {
				return nil, false
			}
			p.i++
			break
		}
	}
	if !ok {
		return nil, false
	}
	p.ws()
	if p.i != len(p.b) || len(out) > MaxReadingsPerMessage {
		return nil, false
	}
	return out, true
}

type fastParser struct {
	b     []byte
	i     int
	names []string // metric names seen in this body, so each is allocated once
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

// str scans a string without escapes and returns its bytes.
func (p *fastParser) str() ([]byte, bool) {
	if p.peek() != '"' {
		return nil, false
	}
	start := p.i + 1
	for j := start; j < len(p.b); j++ {
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

// number scans a JSON number and returns its value.
func (p *fastParser) number() (float64, bool) {
	start, j := p.i, p.i
	digits := func() int {
		n := 0
		for j < len(p.b) && p.b[j] >= '0' && p.b[j] <= '9' {
			j++
			n++
		}
		return n
	}
	if j < len(p.b) && p.b[j] == '-' {
		j++
	}
	switch {
	case j < len(p.b) && p.b[j] == '0':
		j++
	case digits() == 0:
		return 0, false
	}
	if j < len(p.b) && p.b[j] == '.' {
		j++
		if digits() == 0 {
			return 0, false
		}
	}
	if j < len(p.b) && (p.b[j] == 'e' || p.b[j] == 'E') {
		j++
		if j < len(p.b) && (p.b[j] == '+' || p.b[j] == '-') {
			j++
		}
		if digits() == 0 {
			return 0, false
		}
	}
	text := p.b[start:j]
	f, err := strconv.ParseFloat(unsafe.String(&text[0], len(text)), 64)
	if err != nil {
		return 0, false // out of range: the general path explains
	}
	p.i = j
	return f, true
}

// name returns the interned metric name for b, or false if b is not a
// valid metric name (store.ValidMetricName's rule).
func (p *fastParser) name(b []byte) (string, bool) {
	if len(b) == 0 || len(b) > 64 {
		return "", false
	}
	for k, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case k > 0 && (c >= '0' && c <= '9' || c == '.' || c == ':' || c == '-'):
		default:
			return "", false
		}
	}
	for _, n := range p.names {
		if n == string(b) {
			return n, true
		}
	}
	n := string(b)
	p.names = append(p.names, n)
	return n, true
}

// object parses one object and appends its readings, dated by its "ts" or
// received, sorted by metric name as the general path sorts them.
func (p *fastParser) object(received time.Time, out []Reading) ([]Reading, bool) {
	p.i++ // '{'
	first := len(out)
	ts, haveTS := received, false
	p.ws()
	if p.peek() == '}' {
		return nil, false // no readings: the general path says so
	}
	for {
		p.ws()
		key, ok := p.str()
		if !ok {
			return nil, false
		}
		p.ws()
		if p.peek() != ':' {
			return nil, false
		}
		p.i++
		p.ws()
		if string(key) == "ts" {
			if haveTS {
				return nil, false
			}
			s, ok := p.str()
			if !ok {
				return nil, false
			}
			t, err := time.Parse(time.RFC3339Nano, string(s))
			if err != nil {
				return nil, false
			}
			ts, haveTS = t.UTC(), true
		} else {
			name, ok := p.name(key)
			if !ok {
				return nil, false
			}
			for _, r := range out[first:] {
				if r.Metric == name {
					return nil, false // duplicate key
				}
			}
			v, ok := p.number()
			if !ok {
				return nil, false
			}
			out = append(out, Reading{Metric: name, Value: v})
		}
		p.ws()
		switch p.peek() {
		case ',':
			p.i++
			continue
		case '}':
			p.i++
		default:
			return nil, false
		}
		break
	}
	obj := out[first:]
	if len(obj) == 0 {
		return nil, false
	}
	for k := range obj {
		obj[k].TS = ts
	}
	for k := 1; k < len(obj); k++ { // insertion sort: objects hold a few metrics
		for m := k; m > 0 && obj[m].Metric < obj[m-1].Metric; m-- {
			obj[m], obj[m-1] = obj[m-1], obj[m]
		}
	}
	return out, true
}
